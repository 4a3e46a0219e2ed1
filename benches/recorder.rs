//! What the recorder costs and how fast it answers, against the release binary:
//! - `overhead`: a Go service's throughput with and without a recorder on it;
//! - `merge`: merging two minutes of a busy service's CPU segments into one profile;
//! - `scale`: alertprof's CPU and memory while it records 50 targets;
//! - `late`: a late alert's webhook to its stored lookback captures.
//!
//! Run `benches/run.sh` (all) or `benches/run.sh overhead merge scale late`; it needs Go
//! (the demo service) and wrk, and prints a Markdown table that BENCHMARKS.md records.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alertprof::model::{ProfileKind, Window};
use alertprof::recorder::{Tape, merge_segments};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

#[path = "common/mod.rs"]
mod common;
use common::*;

fn demo_target(demo: &Proc, recorder: &str) -> String {
    let port = demo.base.rsplit(':').next().unwrap();
    format!(
        "targets: [{{name: demo, pprof_url: \"{base}\", metrics_url: \"{base}/metrics\", \
         process: {{listen_port: {port}}}, alert_labels: {{job: demo}}, recorder: {recorder}}}]\n",
        base = demo.base
    )
}

/// The demo service under `wrk` (CPU-bound requests of about 1 ms), in rounds of 20 s
/// without and 20 s with a recorder of the defaults on it (the CPU profiler held all the
/// time, heap and goroutine snapshots every 15 s).
async fn overhead(demo_binary: &Path) {
    let demo = start_demo(demo_binary);
    let url = format!("{}/work?n=10", demo.base);
    wrk_rps(&url, 3); // warm up
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        without.push(wrk_rps(&url, 20));
        let data = tempfile::tempdir().unwrap();
        let alertprof = start_pinned(&demo_target(&demo, "{}"), data.path());
        // The first CPU segment is running and the first snapshots are taken.
        wait_metric(&alertprof.base, "alertprof_recorder_fetches_total", 2.0).await;
        with.push(wrk_rps(&url, 20));
        drop(alertprof);
    }
    let (off, on) = (median(without), median(with));
    row(
        "recorder overhead: Go service throughput (1 ms CPU requests, 1 P) without / with a recorder of the defaults, median of 3 × 20 s",
        format!("{off:.0} / {on:.0} requests/s: {:+.1}%", (on - off) / off * 100.0),
        "≥ −2%",
    );
}

/// Two minutes of a busy demo service recorded in 10 s CPU segments; then the time to
/// merge them into one stored profile (gunzip, decode, merge, encode, gzip), as a
/// lookback capture does. Returns the recorder's directory of the target, for `scale`.
async fn merge(demo_binary: &Path, data: &Path) -> PathBuf {
    let demo = start_demo(demo_binary);
    let alertprof = start_pinned(&demo_target(&demo, "{cpu: 10s, heap: 15s, goroutine: 15s}"), data);
    let load = {
        let urls = [format!("{}/work?n=10", demo.base), format!("{}/metrics", demo.base)];
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(125);
            while Instant::now() < deadline {
                for url in &urls {
                    wrk_rps(url, 5);
                }
            }
        })
    };
    wait_metric(&alertprof.base, "alertprof_recorder_segments{target=\"demo\",kind=\"cpu\"}", 12.0).await;
    load.join().unwrap();
    drop(alertprof);
    let tape_dir = data.join(".recorder/demo");
    let tape = Tape::open(&tape_dir).unwrap();
    let all = Window { from: DateTime::<Utc>::MIN_UTC, to: DateTime::<Utc>::MAX_UTC };
    let count = tape.overlapping(ProfileKind::Cpu, all).len();
    let bytes: u64 = tape.overlapping(ProfileKind::Cpu, all).iter().map(|s| s.bytes).sum();
    let out = tempfile::tempdir().unwrap();
    let mut times = Vec::new();
    let mut merged_bytes = 0;
    for n in 0..20 {
        let segments = tape.overlapping(ProfileKind::Cpu, all);
        let started = Instant::now();
        let merged = merge_segments(segments, 1 << 30, &out.path().join(format!("{n}.pb.gz"))).unwrap();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        merged_bytes = std::fs::metadata(out.path().join(format!("{n}.pb.gz"))).unwrap().len();
        assert_eq!(merged.used.len(), count, "every segment merged");
    }
    row(
        &format!(
            "merge: {count} CPU segments of 10 s from a busy Go service ({} KiB) into one profile, median of 20",
            bytes / 1024
        ),
        format!(
            "{:.1} ms (max {:.1} ms); {} KiB out",
            median(times.clone()),
            times.iter().copied().fold(0.0, f64::max),
            merged_bytes / 1024
        ),
        "< 50 ms",
    );
    tape_dir
}

/// A stand-in for 50 Go services: each CPU profile takes its `seconds`, as Go's does, and
/// every body is one the real demo service gave the recorder.
#[derive(Clone)]
struct Bodies {
    cpu: Bytes,
    heap: Bytes,
    goroutine: Bytes,
}

async fn recorded_handler(State(bodies): State<Arc<Bodies>>, request: Request) -> Response {
    let path = request.uri().path();
    let query = request.uri().query().unwrap_or("");
    if path.ends_with("/debug/pprof/profile") {
        let seconds: u64 = query.strip_prefix("seconds=").and_then(|s| s.parse().ok()).unwrap_or(30);
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        return bodies.cpu.clone().into_response();
    }
    if path.ends_with("/debug/pprof/heap") {
        return bodies.heap.clone().into_response();
    }
    if path.ends_with("/debug/pprof/goroutine") {
        return bodies.goroutine.clone().into_response();
    }
    "# TYPE go_goroutines gauge\ngo_goroutines 12\n".into_response()
}

/// alertprof recording 50 targets with the defaults for 90 s: its CPU over the last
/// 60 s, and its RSS at 30 s and at 90 s while what it keeps grows.
async fn scale(tape_dir: &Path) {
    let tape = Tape::open(tape_dir).unwrap();
    let last = |kind| {
        let opened = tape.at_or_before(kind, Utc::now()).expect("a recorded profile");
        Bytes::from(std::fs::read(&opened.segment.path).unwrap())
    };
    let bodies = Arc::new(Bodies {
        cpu: last(ProfileKind::Cpu),
        heap: last(ProfileKind::Heap),
        goroutine: last(ProfileKind::Goroutine),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(recorded_handler).with_state(bodies.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    let targets: String = (0..50)
        .map(|n| format!("  - {{name: t{n}, pprof_url: \"{base}/t{n}\", recorder: {{}}}}\n"))
        .collect();
    let data = tempfile::tempdir().unwrap();
    let alertprof = start_pinned(&format!("targets:\n{targets}"), data.path());
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (rss_30, _) = memory_kib(alertprof.pid());
    let start = cpu_seconds(alertprof.pid());
    tokio::time::sleep(Duration::from_secs(60)).await;
    let used = cpu_seconds(alertprof.pid()) - start;
    let (rss_90, peak) = memory_kib(alertprof.pid());
    let text = metrics_text(&alertprof.base).await;
    let kept = metric_sum(&text, "alertprof_recorder_bytes");
    let segments = metric_sum(&text, "alertprof_recorder_segments");
    row(
        &format!(
            "recorder scale: 50 targets, defaults (cpu 10s, heap and goroutine 15s; bodies of {}, {} and {} KiB)",
            bodies.cpu.len() / 1024,
            bodies.heap.len() / 1024,
            bodies.goroutine.len() / 1024
        ),
        format!(
            "{:.1}% of one core; RSS {:.1} MiB at 30 s, {:.1} MiB at 90 s (peak {:.1}) while it kept {segments:.0} profiles, {:.1} MiB",
            used / 60.0 * 100.0,
            rss_30 as f64 / 1024.0,
            rss_90 as f64 / 1024.0,
            peak as f64 / 1024.0,
            kept / 1048576.0
        ),
        "< 5% of one core, < 64 MiB, flat",
    );
}

/// A late alert (startsAt 5 s ago) on a recorded demo service: webhook to decision, for a
/// rule that reaches back for heap (the snapshot before the window, a fresh one, a diff)
/// and one that does for CPU (waits for the segment that covers `seconds: 1` after the
/// alert: 2 s segments here).
async fn late(demo_binary: &Path) {
    let demo = start_demo(demo_binary);
    let data = tempfile::tempdir().unwrap();
    let config = format!(
        "{}rules:\n\
         - {{name: heap, alert_labels: {{alertname: LateHeap}}, capture: [heap], lookback: 10s, cooldown: 0s}}\n\
         - {{name: cpu, alert_labels: {{alertname: LateCPU}}, capture: [cpu], seconds: 1, lookback: 10s, cooldown: 0s}}\n",
        demo_target(&demo, "{cpu: 2s, heap: 5s, goroutine: off, keep: 1m}")
    );
    let alertprof = start_pinned(&config, data.path());
    wait_metric(&alertprof.base, "alertprof_recorder_segments{target=\"demo\",kind=\"cpu\"}", 8.0).await;
    let client = alertprof::http::client();
    for alertname in ["LateHeap", "LateCPU"] {
        let mut times = Vec::new();
        for n in 0..10 {
            let starts_at = Utc::now() - chrono::Duration::seconds(5);
            let body = json!({
                "version": "4", "status": "firing", "receiver": "alertprof", "groupKey": "{}:{}",
                "alerts": [{"status": "firing", "labels": {"alertname": alertname, "job": "demo"},
                            "startsAt": starts_at.to_rfc3339(), "fingerprint": format!("{alertname}{n}")}],
            });
            let sent = Instant::now();
            let answer =
                client.post(format!("{}/api/v1/alerts", alertprof.base)).json(&body).send().await.unwrap();
            assert!(answer.status().is_success());
            loop {
                let decisions: Value = client
                    .get(format!("{}/api/v1/decisions?limit=5", alertprof.base))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let done =
                    decisions.as_array().unwrap().iter().find(|d| {
                        d["alertname"] == alertname && d["fingerprint"] == format!("{alertname}{n}")
                    });
                if let Some(decision) = done {
                    assert_eq!(decision["outcome"], "captured", "{decision}");
                    break;
                }
                assert!(sent.elapsed() < Duration::from_secs(30), "no decision for {alertname}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            times.push(sent.elapsed().as_secs_f64() * 1000.0);
        }
        let what = match alertname {
            "LateHeap" => "late alert, heap with lookback: webhook → decision (snapshot before, fresh, diff)",
            _ => "late alert, cpu with lookback, seconds: 1, 2 s segments: webhook → decision (merged)",
        };
        let goal = if alertname == "LateHeap" { "< 100 ms" } else { "≤ seconds + one segment + 100 ms" };
        row(
            what,
            format!(
                "median {:.0} ms, max {:.0} ms (10 alerts)",
                median(times.clone()),
                times.iter().copied().fold(0.0, f64::max)
            ),
            goal,
        );
    }
}

/// Waits until the metrics whose lines start with `prefix` add up to `at_least`.
async fn wait_metric(base: &str, prefix: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while metric_sum(&metrics_text(base).await, prefix) < at_least {
        assert!(Instant::now() < deadline, "{prefix} did not reach {at_least}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn main() {
    alertprof::init();
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let known = ["overhead", "merge", "scale", "late"];
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    if !known.iter().any(|name| wanted(name)) {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let build = tempfile::tempdir().unwrap();
        let demo = build_demo(build.path(), &[]);
        println!("| what | figure | goal |\n|---|---|---|");
        if wanted("overhead") {
            overhead(&demo).await;
        }
        let recorded = tempfile::tempdir().unwrap();
        if wanted("merge") || wanted("scale") {
            let tape_dir = merge(&demo, recorded.path()).await;
            if wanted("scale") {
                scale(&tape_dir).await;
            }
        }
        if wanted("late") {
            late(&demo).await;
        }
    });
}
