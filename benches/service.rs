//! Whole-service benchmarks on loopback, against the release binary: webhook intake beside
//! a minimal receiver (the machine's ceiling), reaction latency on the webhook and watch
//! paths, memory while storing large profiles, the watch loop with 500 targets, and the
//! idle footprint. Run `benches/run.sh`; it builds the binaries and prints a Markdown table
//! that BENCHMARKS.md records.

use std::io::Write;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alertprof::profile::proto::{Profile, ValueType};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use prost::Message;
use serde_json::{Value, json};

#[path = "common/mod.rs"]
mod common;
use common::*;
#[path = "../tests/support/profiles.rs"]
mod profiles;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

// ---- the fake target: pprof endpoints and /metrics, recording when requests arrive ----

struct Fake {
    arrivals: Mutex<Vec<Instant>>,
    arrived: tokio::sync::Notify,
    goroutines: AtomicU64,
    small: Bytes,
    heap20: Bytes,
    /// Bodies a scenario serves by path prefix (`/bomb`, `/deep`).
    extra: Mutex<Vec<(String, Bytes)>>,
}

fn profile_bytes(strings: usize) -> Bytes {
    let mut seed: u64 = 0x2545f4914f6cdd1d;
    let mut table = vec![String::new(), "inuse_space".into(), "bytes".into()];
    for _ in 0..strings {
        table.push(
            (0..64)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    char::from(
                        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                            [(seed % 62) as usize],
                    )
                })
                .collect(),
        );
    }
    let profile = Profile {
        string_table: table,
        sample_type: vec![ValueType { r#type: 1, unit: 2 }],
        ..Default::default()
    };
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&profile.encode_to_vec()).unwrap();
    Bytes::from(encoder.finish().unwrap())
}

async fn fake_handler(State(fake): State<Arc<Fake>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    if path.ends_with("/metrics") {
        let text = format!(
            "# TYPE go_goroutines gauge\ngo_goroutines {}\n# TYPE go_threads gauge\ngo_threads 12\n\
             # TYPE go_memstats_heap_inuse_bytes gauge\ngo_memstats_heap_inuse_bytes 4.2e+06\n",
            fake.goroutines.load(Ordering::SeqCst)
        );
        return text.into_response();
    }
    fake.arrivals.lock().unwrap().push(Instant::now());
    fake.arrived.notify_waiters();
    if query.contains("debug=2") {
        // 200 MB of goroutine dump, streamed.
        let chunk =
            Bytes::from("goroutine 1 [running]:\nmain.main()\n\t/src/main.go:10 +0x1d\n\n".repeat(1024));
        let chunks = (200 << 20) / chunk.len();
        let stream =
            futures_util::stream::iter((0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
        return Body::from_stream(stream).into_response();
    }
    if path.starts_with("/big") {
        return fake.heap20.clone().into_response();
    }
    let extra = fake
        .extra
        .lock()
        .unwrap()
        .iter()
        .find(|(prefix, _)| path.starts_with(prefix.as_str()))
        .map(|(_, body)| body.clone());
    if let Some(body) = extra {
        return body.into_response();
    }
    fake.small.clone().into_response()
}

async fn start_fake() -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake {
        arrivals: Mutex::new(Vec::new()),
        arrived: tokio::sync::Notify::new(),
        goroutines: AtomicU64::new(10),
        small: profile_bytes(8),
        heap20: profile_bytes(20 * 1024 * 1024 / 64),
        extra: Mutex::new(Vec::new()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(fake_handler).with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (fake, format!("http://{addr}"))
}

// ---- load ----

fn payload(alerts: usize, fingerprint_base: u64) -> Value {
    let alerts: Vec<Value> = (0..alerts)
        .map(|i| {
            json!({
                "status": "firing",
                "labels": {"alertname": "HighCPU", "job": "svc", "instance": format!("10.0.0.{}:6060", i % 250), "severity": "warning"},
                "annotations": {"summary": "CPU of svc is over 80% of its quota"},
                "startsAt": "2026-11-21T10:00:00.000Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph?g0.expr=rate%28process_cpu_seconds_total%5B1m%5D%29",
                "fingerprint": format!("{:016x}", fingerprint_base + i as u64),
            })
        })
        .collect();
    json!({
        "version": "4", "groupKey": "{}/{alertprof=\"true\"}:{alertname=\"HighCPU\"}", "truncatedAlerts": 0,
        "status": "firing", "receiver": "alertprof", "groupLabels": {"alertname": "HighCPU"},
        "commonLabels": {"alertname": "HighCPU", "job": "svc"}, "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093", "alerts": alerts,
    })
}

struct Load {
    requests: u64,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
}

/// wrk: 2 threads, 32 connections, closed loop, for `seconds`.
fn wrk(url: &str, body: &Value, seconds: u32) -> Load {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("post.lua");
    let escaped = body.to_string().replace('\\', "\\\\").replace('"', "\\\"");
    std::fs::write(
        &script,
        format!("wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = \"{escaped}\"\n"),
    )
    .unwrap();
    let output = Command::new("wrk")
        .args(["-t2", "-c32", &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(&script)
        .arg(url)
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let latency = |label: &str| {
        let value = text.lines().find_map(|l| l.trim().strip_prefix(label)).unwrap().trim().to_string();
        parse_wrk_duration(&value)
    };
    let number = |label: &str| -> f64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .map_or(0.0, |v| v.trim().parse().unwrap_or(0.0))
    };
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").map(|(n, _)| n.trim().parse::<u64>().unwrap()))
        .unwrap();
    let errors = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    Load { requests, per_second: number("Requests/sec:"), p50: latency("50%"), p99: latency("99%"), errors }
}

fn parse_wrk_duration(text: &str) -> Duration {
    let (number, unit) = text.split_at(text.find(|c: char| c.is_alphabetic()).unwrap());
    let number: f64 = number.parse().unwrap();
    Duration::from_secs_f64(match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        other => panic!("unit {other}"),
    })
}

/// Open loop: a request every 1/rate s for `seconds`, latency from its scheduled start
/// (no coordinated omission).
async fn open_loop(url: &str, body: &Value, rate: u32, seconds: u32) -> Load {
    let client = alertprof::http::builder().pool_max_idle_per_host(256).build().unwrap();
    let body = Bytes::from(body.to_string());
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let start = tokio::time::Instant::now();
    let total = u64::from(rate) * u64::from(seconds);
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        let scheduled = start + interval * n as u32;
        tokio::time::sleep_until(scheduled).await;
        let (client, body, url, latencies, errors) =
            (client.clone(), body.clone(), url.to_string(), latencies.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let answer = client.post(url).header("content-type", "application/json").body(body).send().await;
            match answer {
                Ok(answer) if answer.status().is_success() => {
                    let _ = answer.bytes().await;
                }
                _ => {
                    errors.fetch_add(1, Ordering::SeqCst);
                }
            }
            latencies.lock().unwrap().push(scheduled.elapsed());
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort();
    Load {
        requests: total,
        per_second: total as f64 / elapsed,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        errors: errors.load(Ordering::SeqCst),
    }
}

/// Waits until every received alert has its decision; returns (decided, received).
async fn drained(base: &str) -> (f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = metrics_text(base).await;
        let received = metric_sum(&text, "alertprof_alerts_received_total");
        let decided = metric_sum(&text, "alertprof_decisions_total");
        if decided >= received || Instant::now() > deadline {
            return (decided, received);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---- scenarios ----

async fn intake(target: &str) {
    let config = format!(
        "storage: {{dir: data}}\ngate: {{queue_size: 10000}}\n\
         targets: [{{name: svc, pprof_url: \"{target}\", alert_labels: {{job: svc}}}}]\n\
         rules: [{{name: cpu, alert_labels: {{alertname: HighCPU}}, capture: [goroutine], cooldown: 1h}}]\n"
    );
    for alerts in [1, 100] {
        let body = payload(alerts, 0);
        let minimal = start_minimal_receiver();
        let ceiling = wrk(&format!("{}/api/v1/alerts", minimal.base), &body, 10);
        drop(minimal);
        let alertprof = start_alertprof(&config);
        let load = wrk(&format!("{}/api/v1/alerts", alertprof.base), &body, 10);
        let (decided, received) = drained(&alertprof.base).await;
        row(
            &format!("webhook, {alerts} alert(s)/request, 32 connections: minimal receiver"),
            format!("{:.0} req/s, p50 {}, p99 {}", ceiling.per_second, ms(ceiling.p50), ms(ceiling.p99)),
            "the ceiling",
        );
        row(
            &format!("webhook, {alerts} alert(s)/request, 32 connections: alertprof"),
            format!(
                "{:.0} req/s ({:.0}% of ceiling), p50 {}, p99 {}; {} non-2xx of {}; {decided:.0} of {received:.0} alerts decided",
                load.per_second,
                load.per_second / ceiling.per_second * 100.0,
                ms(load.p50),
                ms(load.p99),
                load.errors,
                load.requests
            ),
            ">= ceiling; every alert decided",
        );
    }
    let alertprof = start_alertprof(&config);
    let load = open_loop(&format!("{}/api/v1/alerts", alertprof.base), &payload(1, 0), 2000, 10).await;
    let (decided, received) = drained(&alertprof.base).await;
    row(
        "webhook, 1 alert/request, open loop at 2,000 req/s for 10 s",
        format!(
            "{:.0} req/s, p50 {}, p99 {}, {} errors; {decided:.0} of {received:.0} decided",
            load.per_second,
            ms(load.p50),
            ms(load.p99),
            load.errors
        ),
        "p99 < 5 ms",
    );
}

async fn reaction(fake: &Arc<Fake>, target: &str) {
    let config = format!(
        "storage: {{dir: data}}\ntargets: [{{name: svc, pprof_url: \"{target}\", alert_labels: {{job: svc}}}}]\n\
         rules: [{{name: cpu, alert_labels: {{alertname: HighCPU}}, capture: [goroutine], cooldown: 0s}}]\n"
    );
    let alertprof = start_alertprof(&config);
    let client = alertprof::http::client();
    let url = format!("{}/api/v1/alerts", alertprof.base);
    let mut latencies = Vec::new();
    for n in 0..300u64 {
        let body = payload(1, 1_000_000 + n).to_string();
        let before = fake.arrivals.lock().unwrap().len();
        let arrived = fake.arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        let sent = Instant::now();
        let answer =
            client.post(&url).header("content-type", "application/json").body(body).send().await.unwrap();
        assert!(answer.status().is_success());
        while fake.arrivals.lock().unwrap().len() <= before {
            tokio::time::timeout(Duration::from_secs(5), arrived.as_mut())
                .await
                .expect("the capture arrives");
            arrived.set(fake.arrived.notified());
            arrived.as_mut().enable();
        }
        let at = fake.arrivals.lock().unwrap()[before];
        latencies.push(at - sent);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    latencies.sort();
    row(
        "reaction: webhook received → first pprof request at the target (300 alerts)",
        format!(
            "p50 {}, p99 {}, max {}",
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99)),
            ms(*latencies.last().unwrap())
        ),
        "p99 < 5 ms",
    );
}

async fn watch_reaction(fake: &Arc<Fake>, target: &str) {
    let config = format!(
        "storage: {{dir: data}}\nsample_interval: 5s\ntargets: [{{name: svc, pprof_url: \"{target}\", metrics_url: \"{target}/metrics\"}}]\n\
         rules: [{{name: leak, watch: {{interval: 1s}}, verify: {{goroutines: {{abs: 1000}}}}, capture: [goroutine], cooldown: 0s}}]\n"
    );
    let alertprof = start_alertprof(&config);
    let mut latencies = Vec::new();
    for n in 0..10u32 {
        fake.goroutines.store(10, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2500 + u64::from(n) * 97 % 1000)).await;
        let before = fake.arrivals.lock().unwrap().len();
        let onset = Instant::now();
        fake.goroutines.store(5000, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while fake.arrivals.lock().unwrap().len() <= before {
            assert!(Instant::now() < deadline, "the watch rule never captured");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies.push(fake.arrivals.lock().unwrap()[before] - onset);
    }
    fake.goroutines.store(10, Ordering::SeqCst);
    drop(alertprof);
    latencies.sort();
    row(
        "reaction: watch, goroutines cross `abs` → capture starts (interval 1 s, 10 onsets)",
        format!("median {}, max {}", ms(percentile(&latencies, 0.5)), ms(*latencies.last().unwrap())),
        "≤ 1.5 × interval (1,500 ms)",
    );
}

async fn capture_memory(target: &str) {
    let heap_targets: String = (0..20)
        .map(|n| {
            format!("  - {{name: heap{n}, pprof_url: \"{target}/big{n}\", alert_labels: {{job: heap}}}}\n")
        })
        .collect();
    let config = format!(
        "storage: {{dir: data, retention: {{max_bytes: 10GiB}}}}\ngate: {{max_in_flight: 20}}\n\
         targets:\n  - {{name: text, pprof_url: \"{target}\", alert_labels: {{job: text}}}}\n{heap_targets}\
         rules:\n  - {{name: dump, alert_labels: {{alertname: Dump}}, capture: [goroutine_text]}}\n  \
         - {{name: heap, alert_labels: {{alertname: Heap}}, capture: [heap]}}\n"
    );
    let alertprof = start_alertprof(&config);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, before) = memory_kib(alertprof.pid());
    let client = alertprof::http::client();
    let post = |alertname: &str, job: &str| {
        let alert = json!({"version": "4", "status": "firing", "alerts": [{"status": "firing",
            "labels": {"alertname": alertname, "job": job}, "startsAt": "2026-11-21T10:00:00Z", "fingerprint": alertname}]});
        client.post(format!("{}/api/v1/alerts", alertprof.base)).json(&alert).send()
    };
    let wait_captures = |count: f64| {
        let base = alertprof.base.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            while metric_sum(&metrics_text(&base).await, "alertprof_captures_total") < count {
                assert!(Instant::now() < deadline, "captures did not finish");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    post("Dump", "text").await.unwrap();
    wait_captures(1.0).await;
    let (_, after_text) = memory_kib(alertprof.pid());
    post("Heap", "heap").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = metrics_text(&alertprof.base).await;
        if metric_sum(&text, "alertprof_captures_total") >= 21.0 {
            let ok = metric_sum(&text, "alertprof_captures_total{kind=\"heap\",result=\"ok\"}")
                + metric_sum(&text, "alertprof_captures_total{kind=\"goroutine_text\",result=\"ok\"}");
            assert_eq!(ok, 21.0, "every capture kept");
            break;
        }
        assert!(Instant::now() < deadline, "captures did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, after) = memory_kib(alertprof.pid());
    row(
        "capture memory: a 200 MB goroutine_text, then 20 concurrent 20 MB heap profiles",
        format!(
            "peak RSS {:.1} MiB at start; +{:.1} MiB after the dump; +{:.1} MiB after the heaps",
            before as f64 / 1024.0,
            (after_text - before) as f64 / 1024.0,
            (after - before) as f64 / 1024.0
        ),
        "< 32 MB growth",
    );
}

/// `count` targets on the fake server, each with this process as its local process.
fn local_targets(target: &str, count: usize) -> String {
    let me = std::process::id();
    (0..count)
        .map(|n| {
            format!(
                "  - {{name: t{n}, pprof_url: \"{target}/t{n}\", metrics_url: \"{target}/t{n}/metrics\", process: {{pid: {me}}}}}\n"
            )
        })
        .collect()
}

async fn watch_scale(target: &str) {
    let targets = local_targets(target, 500);
    let config = format!(
        "storage: {{dir: data}}\nsample_interval: 1s\ntargets:\n{targets}\
         rules: [{{name: leak, watch: {{interval: 1s}}, verify: {{goroutines: {{abs: 1000000000}}}}, capture: [goroutine]}}]\n"
    );
    let alertprof = start_alertprof(&config);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let start = cpu_seconds(alertprof.pid());
    tokio::time::sleep(Duration::from_secs(30)).await;
    let used = cpu_seconds(alertprof.pid()) - start;
    let text = metrics_text(&alertprof.base).await;
    let signals = text.lines().filter(|l| l.starts_with("alertprof_signal{")).count();
    let (rss, _) = memory_kib(alertprof.pid());
    row(
        "watch loop: 500 targets (process + /metrics) sampled every second, 30 s",
        format!("{:.1}% of one core; RSS {} MiB; {signals} signals live", used / 30.0 * 100.0, rss / 1024),
        "< 20% of one core",
    );
}

async fn idle(target: &str) {
    let targets = local_targets(target, 50);
    let config = format!(
        "storage: {{dir: data}}\ntargets:\n{targets}rules: [{{name: cpu, alert_labels: {{alertname: HighCPU}}, capture: [cpu]}}]\n"
    );
    let alertprof = start_alertprof(&config);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let start = cpu_seconds(alertprof.pid());
    tokio::time::sleep(Duration::from_secs(60)).await;
    let used = cpu_seconds(alertprof.pid()) - start;
    let (rss, _) = memory_kib(alertprof.pid());
    row(
        "idle: 50 targets, default 5 s sampling, 60 s",
        format!("RSS {:.1} MiB, {:.2}% CPU", rss as f64 / 1024.0, used / 60.0 * 100.0),
        "< 20 MB, < 0.5% CPU",
    );
}

/// Profiles that say too much, clients that never finish and bodies that hold: what each
/// costs alertprof, with a 1,024-descriptor limit as systemd gives by default.
async fn hostile(fake: &Arc<Fake>, target: &str) {
    use profiles::{deep_stacks, inlined_bomb};
    fake.extra.lock().unwrap().extend([
        ("/bomb".to_string(), Bytes::from(inlined_bomb(1000, 250_000))),
        ("/deep".to_string(), Bytes::from(deep_stacks(10_000, 6_000))),
    ]);
    let config = format!(
        "storage: {{dir: data}}\ntargets:\n  - {{name: bomb, pprof_url: \"{target}/bomb\", alert_labels: {{job: bomb}}}}\n  \
         - {{name: deep, pprof_url: \"{target}/deep\", alert_labels: {{job: deep}}}}\n\
         rules: [{{name: heap, alert_labels: {{alertname: Heap}}, capture: [heap], cooldown: 0s}}]\n"
    );
    let mut command = Command::new("prlimit");
    command.arg("--nofile=1024:1024").arg("--").arg(alertprof_binary());
    let alertprof = start_alertprof_with(&config, command);
    let client = alertprof::http::client();
    for (n, (job, what)) in [
        ("bomb", "a 1 KB profile of 250 million frames"),
        ("deep", "6,000 samples of 10,000-frame stacks (0.9 MB)"),
    ]
    .into_iter()
    .enumerate()
    {
        let alert = json!({"version": "4", "status": "firing", "alerts": [{"status": "firing",
            "labels": {"alertname": "Heap", "job": job}, "startsAt": "2026-11-21T10:00:00Z", "fingerprint": job}]});
        let started = Instant::now();
        client.post(format!("{}/api/v1/alerts", alertprof.base)).json(&alert).send().await.unwrap();
        while metric_sum(&metrics_text(&alertprof.base).await, "alertprof_captures_total") < (n + 1) as f64 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let captured = started.elapsed();
        let list: Value = client
            .get(format!("{}/api/v1/captures?target={job}", alertprof.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = list[0]["id"].as_str().unwrap().to_string();
        let started = Instant::now();
        let graph = client
            .get(format!("{}/api/v1/captures/{id}/flamegraph.svg", alertprof.base))
            .send()
            .await
            .unwrap();
        let bytes = graph.bytes().await.unwrap().len();
        let drawn = started.elapsed();
        let (_, peak) = memory_kib(alertprof.pid());
        row(
            &format!("hostile profile: {what}"),
            format!(
                "captured and summarized in {:.2} s; flame graph ({} KB) in {:.2} s; peak RSS so far {:.1} MiB; {}",
                captured.as_secs_f64(),
                bytes / 1000,
                drawn.as_secs_f64(),
                peak as f64 / 1024.0,
                list[0]["summary"]["cut_short"].as_str().unwrap_or("not cut short")
            ),
            "bounded; cut short, and says so",
        );
    }

    // 2,000 clients that never finish their headers.
    let addr: std::net::SocketAddr = alertprof.base.trim_start_matches("http://").parse().unwrap();
    let mut slow = Vec::new();
    let opening = Instant::now();
    for _ in 0..2000 {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
            tokio::io::AsyncWriteExt::write_all(&mut stream, b"POST /api/v1/alerts HTTP/1.1\r\nHost: x\r\n")
                .await
                .ok();
            slow.push(stream);
        }
    }
    let opened = opening.elapsed();
    let fds = std::fs::read_dir(format!("/proc/{}/fd", alertprof.pid())).unwrap().count();
    let started = Instant::now();
    let ready =
        client.get(format!("{}/-/ready", alertprof.base)).timeout(Duration::from_secs(60)).send().await;
    let answered = started.elapsed();
    row(
        "slowloris: 2,000 connections holding half-sent headers, 1,024-fd limit",
        format!(
            "{} of them open after {:.1} s (the backlog full, connects wait); alertprof then held {fds} fds; /-/ready answered {} after {:.2} s",
            slow.len(),
            opened.as_secs_f64(),
            ready.map(|r| r.status().to_string()).unwrap_or_else(|e| e.to_string()),
            answered.as_secs_f64()
        ),
        "answers within the header timeout (10 s); fds within the limit",
    );
    drop(slow);

    // 400 clients each sending a body just under max_body_size (4 MiB) and holding.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (before, _) = memory_kib(alertprof.pid());
    let size = 4 << 20;
    let holders: Vec<_> = (0..400)
        .map(|_| {
            tokio::spawn(async move {
                let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else { return };
                let head =
                    format!("POST /api/v1/alerts HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n");
                tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes()).await.ok();
                tokio::io::AsyncWriteExt::write_all(&mut stream, &vec![b' '; size - 1]).await.ok();
                tokio::time::sleep(Duration::from_secs(60)).await;
            })
        })
        .collect();
    let mut most = before;
    for _ in 0..100 {
        most = most.max(memory_kib(alertprof.pid()).0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    holders.iter().for_each(|holder| holder.abort());
    row(
        "400 connections each holding a body just under 4 MiB, 10 s",
        format!(
            "RSS {:.1} MiB before, at most {:.1} MiB while held",
            before as f64 / 1024.0,
            most as f64 / 1024.0
        ),
        "bounded (32 MiB of bodies read at once)",
    );
}

fn main() {
    alertprof::init();
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let known = ["intake", "reaction", "watch_reaction", "memory", "watch_scale", "idle", "hostile"];
    if !only.is_empty() && !known.iter().any(|name| only.iter().any(|o| o == name)) {
        return; // scenarios of another bench
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let (fake, target) = start_fake().await;
        println!("| what | figure | goal |\n|---|---|---|");
        if wanted("intake") {
            intake(&target).await;
        }
        if wanted("reaction") {
            reaction(&fake, &target).await;
        }
        if wanted("watch_reaction") {
            watch_reaction(&fake, &target).await;
        }
        if wanted("memory") {
            capture_memory(&target).await;
        }
        if wanted("watch_scale") {
            watch_scale(&target).await;
        }
        if wanted("idle") {
            idle(&target).await;
        }
        if only.iter().any(|o| o == "hostile") {
            hostile(&fake, &target).await;
        }
        std::io::stdout().flush().unwrap();
    });
}
