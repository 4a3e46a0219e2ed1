//! The recorder against the real Go demo target: a late alert reaches back to a burst that
//! was over before it arrived; a process killed while holding memory leaves its last heap;
//! the merge agrees with `go tool pprof -proto`; someone else holding the CPU profiler makes
//! the recorder back off and come back.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use alertprof::profile::{Merger, decode_profile, write_gzipped};
use axum::response::IntoResponse;
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use support::profiles::profile;
use support::{Demo, Running, client, fake_target_with_request, payload};

fn config(demo: &Demo, recorder: &str, rule: &str) -> String {
    format!(
        r#"
storage: {{dir: "{{data}}"}}
sample_interval: 1s
capture: {{timeout_margin: 5s}}
targets:
{target}    recorder: {recorder}
rules:
{rule}
"#,
        target = demo.target()
    )
}

/// `go tool pprof ARGS`, its output.
fn pprof(args: &[&str]) -> String {
    let out = Command::new("go").args(["tool", "pprof"]).args(args).output().expect("go tool pprof runs");
    assert!(out.status.success(), "go tool pprof {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The rows of `go tool pprof -top` output: (function, flat, cum%), runtime frames too.
fn top_rows(text: &str) -> Vec<(String, String, f64)> {
    text.lines()
        .skip_while(|line| !line.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            let cum: f64 = columns.get(4)?.trim_end_matches('%').parse().ok()?;
            Some((columns.get(5..)?.join(" "), columns[0].to_string(), cum))
        })
        .collect()
}

/// The stored file of a capture.
fn stored(data: &Path, capture: &Value) -> PathBuf {
    data.join(capture["target"].as_str().unwrap()).join(capture["file"].as_str().unwrap())
}

/// A 2-second burst, then its alert with `startsAt` at the burst, late: once the recorder
/// has kept four more CPU segments (8 s) since. The CPU
/// capture is merged from the recorder's segments over the window, and its top function
/// by cum (the runtime's frames aside, as `go tool pprof -top -cum` ranks them on the
/// stored file) is the burst's. The heap is taken fresh and compared with the recorder's
/// snapshot from before the window, which is kept too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_alert_reaches_back_to_the_burst() {
    let demo = Demo::start();
    let data = tempfile::tempdir().unwrap();
    // Verified on local readings too: the burst is over when the alert comes, but it is
    // in the readings since the window's start.
    let rule = "  - {name: cpu-spike, alert_labels: {alertname: HighCPU}, capture: [cpu, heap], seconds: 1, \
                lookback: 5s, verify: {cpu_percent: {abs: 30}}}";
    let yaml = config(&demo, "{cpu: 2s, heap: 1s, goroutine: 2s, keep: 2m}", rule);
    let running = Running::start(&yaml, data.path()).await;
    running
        .wait_metric(
            "alertprof_recorder_segments{target=\"demo\",kind=\"cpu\"}",
            Duration::from_secs(20),
            // The recorder reaches back further than the lookback before the burst.
            |n| n >= 4.0,
        )
        .await;
    let segments = "alertprof_recorder_segments{target=\"demo\",kind=\"cpu\"}";
    let kept = running.metric(segments).await;
    let burst_at = Utc::now();
    // Four workers on this machine's two cores: the burst stands out in the readings
    // (abs 30) even while other work holds half of it.
    demo.get("/burn?seconds=2&workers=4").await;
    // The burst is over and behind the recorder before the alert comes.
    running.wait_metric(segments, Duration::from_secs(30), |n| n >= kept + 4.0).await;
    let mut alert = payload(&[(json!({"alertname": "HighCPU", "job": "demo"}), "f1")]);
    alert["alerts"][0]["startsAt"] = json!(burst_at.to_rfc3339_opts(SecondsFormat::Millis, true));
    assert_eq!(running.post_alerts(&alert).await.0, 200);
    let decision = running.wait_outcome("captured", Duration::from_secs(30)).await;
    let reason = decision["reason"].as_str().unwrap();
    assert!(reason.contains("cpu (merged from"), "{reason}");
    assert!(reason.contains("(verified: cpu_percent") && reason.contains(" >= abs 30 (of "), "{reason}");

    let captures = running.get_json("/api/v1/captures").await;
    let list = captures.as_array().unwrap();
    let cpu = list.iter().find(|c| c["kind"] == "cpu").expect("a cpu capture");
    let at = |value: &Value| chrono::DateTime::parse_from_rfc3339(value.as_str().unwrap()).unwrap();
    let lookback = (burst_at - at(&cpu["window"]["from"]).with_timezone(&Utc)).num_milliseconds();
    assert!((4_900..=5_100).contains(&lookback), "the window starts 5 s before the burst: {cpu}");
    assert!(cpu["segments"].as_array().unwrap().len() >= 5, "segments over the window, some 13 s: {cpu}");
    let top = pprof(&["-top", "-cum", stored(data.path(), cpu).to_str().unwrap()]);
    let first_own = top_rows(&top).into_iter().find(|(name, ..)| !name.starts_with("runtime."));
    let (name, _, cum) = first_own.unwrap_or_else(|| panic!("no function of the demo's own:\n{top}"));
    assert_eq!(name, "main.burnCPU", "{top}");
    assert!(cum > 50.0, "the burst is most of the window's CPU: {top}");

    let before = list.iter().find(|c| c["kind"] == "heap" && c["before_window"] == true).expect("before");
    let newest = list.iter().find(|c| c["kind"] == "heap" && c["before_window"].is_null()).expect("newest");
    assert_eq!(newest["diff"]["base"], before["id"], "{newest}");
    assert_eq!(newest["diff"]["before_window"], true);
    assert!(at(&before["finished_at"]) <= at(&cpu["window"]["from"]), "{before}");
    let page = running.get_text(&format!("/captures/{}", cpu["id"].as_str().unwrap())).await;
    assert!(page.contains("Merged from"), "{page}");
    running.stop().await;
}

/// A process holding memory, killed with `kill -9`: its last heap snapshot is kept as a
/// capture with `trigger.source: exit` that names the allocating function, with one
/// decision, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_leaves_its_last_heap() {
    let mut demo = Demo::start();
    let data = tempfile::tempdir().unwrap();
    let rule = "  - {name: heap-spike, alert_labels: {alertname: HighHeap}, capture: [heap]}";
    let yaml = config(&demo, "{cpu: 1s, heap: 1s, goroutine: 1s, keep: 1m}", rule);
    let running = Running::start(&yaml, data.path()).await;
    demo.get("/hold?mb=48").await;
    let series = "alertprof_recorder_segments{target=\"demo\",kind=\"heap\"}";
    let held = running.wait_metric(series, Duration::from_secs(20), |n| n >= 1.0).await;
    running.wait_metric(series, Duration::from_secs(20), |n| n >= held + 2.0).await;
    demo.child.0.kill().unwrap();
    demo.child.0.wait().unwrap();
    let decision = running.wait_outcome("captured", Duration::from_secs(20)).await;
    assert_eq!(decision["source"], "exit", "{decision}");
    let reason = decision["reason"].as_str().unwrap();
    assert!(reason.contains("is gone") || reason.contains("refused"), "{reason}");
    assert!(decision["top"]["heap"].as_str().unwrap().starts_with("main.holdMemory"), "{decision}");

    let captures = running.get_json("/api/v1/captures?kind=heap").await;
    let heap = &captures[0];
    assert_eq!(heap["trigger"]["source"], "exit");
    assert_eq!(heap["rule"], "exit");
    assert_eq!(heap["summary"]["top"][0]["function"], "main.holdMemory", "{heap}");
    assert!(heap["summary"]["top"][0]["flat"].as_i64().unwrap() >= 48 << 20, "{heap}");
    let top = pprof(&["-top", "-sample_index=inuse_space", stored(data.path(), heap).to_str().unwrap()]);
    assert!(top.contains("main.holdMemory"), "{top}");
    let kinds: Vec<&str> = decision["captures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().rsplit('-').next().unwrap())
        .collect();
    assert!(kinds.contains(&"goroutine") && kinds.contains(&"cpu"), "{decision}");

    // Once per process: more samples and refusals tell nothing new. Three more refused
    // heap snapshots, a second apart as the samples are, show that they came.
    let refused = "alertprof_recorder_fetches_total{target=\"demo\",kind=\"heap\",result=\"failed\"}";
    let before = running.metric(refused).await;
    running.wait_metric(refused, Duration::from_secs(20), |n| n >= before + 3.0).await;
    let decisions = running.get_json("/api/v1/decisions?limit=100").await;
    let exits = decisions.as_array().unwrap().iter().filter(|d| d["source"] == "exit").count();
    assert_eq!(exits, 1, "{decisions}");
    assert_eq!(running.metric("alertprof_process_exits_total{target=\"demo\"}").await, 1.0);
    running.stop().await;
}

/// Three real CPU profiles merged here and by `go tool pprof -proto`: the same totals of
/// each sample type, and the same top functions with the same flat values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_merge_agrees_with_go_tool_pprof() {
    let demo = Demo::start();
    let dir = tempfile::tempdir().unwrap();
    demo.get("/burn?seconds=5&workers=2").await;
    let mut paths = Vec::new();
    for i in 0..3 {
        let body = client()
            .get(format!("{}/debug/pprof/profile?seconds=1", demo.url()))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let path = dir.path().join(format!("segment-{i}.pb.gz"));
        std::fs::write(&path, &body).unwrap();
        paths.push(path);
    }
    let mut merger = Merger::new();
    for path in &paths {
        merger.add(&decode_profile(std::fs::File::open(path).unwrap(), 1 << 30).unwrap()).unwrap();
    }
    let ours = dir.path().join("ours.pb.gz");
    write_gzipped(&merger.finish().unwrap(), std::fs::File::create(&ours).unwrap()).unwrap();
    let theirs = dir.path().join("theirs.pb.gz");
    let mut args: Vec<&str> = vec!["-proto"];
    args.extend(paths.iter().map(|p| p.to_str().unwrap()));
    std::fs::write(&theirs, Command::new("go").args(["tool", "pprof"]).args(&args).output().unwrap().stdout)
        .unwrap();

    let totals = |path: &Path| {
        let profile = decode_profile(std::fs::File::open(path).unwrap(), 1 << 30).unwrap();
        let mut sums = vec![0i64; profile.sample_type.len()];
        for sample in &profile.sample {
            for (sum, value) in sums.iter_mut().zip(&sample.value) {
                *sum += value;
            }
        }
        (sums, profile.duration_nanos)
    };
    assert_eq!(totals(&ours), totals(&theirs));
    assert!(totals(&ours).0[0] > 0, "the burn was sampled");
    let top = |path: &Path| {
        let text = pprof(&["-top", "-nodecount=10", path.to_str().unwrap()]);
        top_rows(&text).into_iter().map(|(name, flat, _)| (name, flat)).collect::<Vec<_>>()
    };
    let (mine, go) = (top(&ours), top(&theirs));
    assert!(!mine.is_empty());
    assert_eq!(mine, go);
}

/// Someone else holds the target's CPU profiler (Go answers 500 `cpu profiling already in
/// use`): the recorder backs off, says so in /metrics, the log and the page, and records
/// the other kinds meanwhile; a CPU capture says why it has nothing; once the profiler is
/// free, the recorder records CPU again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backs_off_while_someone_else_profiles() {
    let logs = support::logs();
    drop(logs);
    let busy = Arc::new(AtomicBool::new(true));
    let busy_in_target = busy.clone();
    let addr = fake_target_with_request(move |request| {
        let busy = busy_in_target.load(Ordering::SeqCst);
        async move {
            let body = profile(&["main.work"], &[(&[1], [1, 10_000_000])]);
            match request.uri().path() {
                "/debug/pprof/profile" if busy => (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "Could not enable CPU profiling: cpu profiling already in use\n",
                )
                    .into_response(),
                "/debug/pprof/profile" => {
                    // As Go's does: a CPU profile of `?seconds=1` takes that second.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    body.into_response()
                }
                _ => body.into_response(),
            }
        }
    })
    .await;
    let data = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
storage: {{dir: "{{data}}"}}
capture: {{timeout_margin: 2s}}
targets:
  - name: busy
    pprof_url: http://{addr}
    alert_labels: {{job: busy}}
    recorder: {{cpu: 1s, heap: 1s, goroutine: off, keep: 1m}}
rules:
  - {{name: cpu-spike, alert_labels: {{alertname: HighCPU}}, capture: [cpu], seconds: 1}}
"#
    );
    let running = Running::start(&yaml, data.path()).await;
    running
        .wait_metric("alertprof_recorder_backing_off{target=\"busy\"}", Duration::from_secs(10), |v| v == 1.0)
        .await;
    let in_use = "alertprof_recorder_fetches_total{target=\"busy\",kind=\"cpu\",result=\"in_use\"}";
    assert!(running.metric(in_use).await >= 1.0);
    running
        .wait_metric(
            "alertprof_recorder_segments{target=\"busy\",kind=\"heap\"}",
            Duration::from_secs(10),
            |n| n >= 2.0,
        )
        .await;
    assert!(support::logs().contains("Someone else holds the target's CPU profiler"));
    let page = running.get_text("/").await;
    assert!(page.contains("someone else holds the CPU profiler"), "{page}");

    let alert = payload(&[(json!({"alertname": "HighCPU", "job": "busy"}), "f1")]);
    assert_eq!(running.post_alerts(&alert).await.0, 200);
    let failed = running.wait_outcome("capture_failed", Duration::from_secs(20)).await;
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("the recorder has no CPU segment") && reason.contains("someone else holds"),
        "{reason}"
    );

    busy.store(false, Ordering::SeqCst);
    running
        .wait_metric(
            "alertprof_recorder_segments{target=\"busy\",kind=\"cpu\"}",
            Duration::from_secs(20),
            |n| n >= 1.0,
        )
        .await;
    assert_eq!(running.metric("alertprof_recorder_backing_off{target=\"busy\"}").await, 0.0);
    running.stop().await;
}

/// A kind whose requests failed and whose later answers differ (the target answers again,
/// but someone else holds its CPU profiler) shows no stale error: the status says it backs
/// off, not why it failed before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_answer_clears_an_earlier_error() {
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = asked.clone();
    let addr = fake_target_with_request(move |request| {
        let cpu = request.uri().path() == "/debug/pprof/profile";
        let n = if cpu { count.fetch_add(1, Ordering::SeqCst) } else { 0 };
        async move {
            let error = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
            match (cpu, n) {
                (true, 0) => (error, "boom\n").into_response(),
                (true, _) => {
                    (error, "Could not enable CPU profiling: cpu profiling already in use\n").into_response()
                }
                (false, _) => profile(&["main.work"], &[(&[1], [1, 10])]).into_response(),
            }
        }
    })
    .await;
    let data = tempfile::tempdir().unwrap();
    let yaml = format!(
        "storage: {{dir: \"{{data}}\"}}\ncapture: {{timeout_margin: 2s}}\ntargets:\n\
         - {{name: t, pprof_url: \"http://{addr}\", recorder: {{cpu: 1s, heap: off, goroutine: off, keep: 1m}}}}\n"
    );
    let running = Running::start(&yaml, data.path()).await;
    let cpu = support::eventually("the CPU recorder backing off", Duration::from_secs(20), async || {
        let status = running.get_json("/api/v1/recorder").await;
        let cpu = status[0]["kinds"].as_array()?.iter().find(|k| k["kind"] == "cpu")?.clone();
        cpu.get("backing_off_until").is_some().then_some(cpu)
    })
    .await;
    assert!(asked.load(Ordering::SeqCst) >= 2);
    assert_eq!(cpu.get("error"), None, "{cpu}");
    assert_eq!(cpu.get("failing_since"), None, "{cpu}");
    running.stop().await;
}

/// Reloads that change a target's recorder start its loops again, but on the schedule they
/// had: 30 reloads in about 6 s make the target answer a heap snapshot every 2 s as the
/// config says, not once per reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_keep_the_recorders_schedule() {
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = asked.clone();
    let addr = fake_target_with_request(move |request| {
        if request.uri().path() == "/debug/pprof/heap" {
            count.fetch_add(1, Ordering::SeqCst);
        }
        async move { profile(&["main.work"], &[(&[1], [1, 10])]).into_response() }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = |keep: &str| {
        format!(
            "storage: {{dir: data}}\ntargets:\n- {{name: t, pprof_url: \"http://{addr}\", \
             recorder: {{cpu: off, heap: 2s, goroutine: off, keep: {keep}}}}}\n"
        )
    };
    let serve = support::Serve::start(dir.path(), &config("1m"), None).await;
    let started = std::time::Instant::now();
    for n in 0..30 {
        let text = format!("listen_address: 127.0.0.1:0\n{}", config(if n % 2 == 0 { "2m" } else { "1m" }));
        std::fs::write(dir.path().join("alertprof.yaml"), text).unwrap();
        serve.signal("-HUP");
        support::eventually("the reload", Duration::from_secs(10), async || {
            (serve.log().matches("Config reloaded.").count() > n).then_some(())
        })
        .await;
        // Paces the reloads (an action, not a wait): 30 over some 6 s, three heap periods.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let asked = asked.load(Ordering::SeqCst);
    let allowed = (seconds / 2.0).ceil() as usize + 1;
    assert!(asked <= allowed, "{asked} heap snapshots in {seconds:.1} s of reloads; at most {allowed}");
    assert!(asked >= 2, "the recorder kept recording: {asked}");
}

/// A process alive the whole time whose pprof listener refuses connections for a while (its
/// HTTP server restarting), again and again, run by the binary: no exit is told and no
/// exit capture kept, since the same PID lives on with the same start time. Killed, it
/// ends once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_refuses_for_a_while_is_no_exit() {
    let mut demo = Demo::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "storage: {{dir: data}}\nsample_interval: 1s\ntargets:\n{}    recorder: {{cpu: off, heap: 1s, goroutine: 1s, keep: 1m}}\n",
        demo.target()
    );
    let serve = support::Serve::start(dir.path(), &config, None).await;
    let exits = "alertprof_process_exits_total{target=\"demo\"}";
    // Once the sampler has found the process by its port (a PID found only while it
    // listens): from then on its PID is known.
    support::eventually("the process found", Duration::from_secs(10), async || {
        let metrics = client().get(format!("{}/metrics", serve.base)).send().await.ok()?.text().await.ok()?;
        metrics.contains("alertprof_signal{target=\"demo\",signal=\"memory_percent\"}").then_some(())
    })
    .await;
    for seconds in [3, 3, 3, 8] {
        demo.get(&format!("/pause-listener?seconds={seconds}")).await;
        // Refused while paused, then answering again.
        support::eventually("the listener closed", Duration::from_secs(5), async || {
            client().get(format!("{}/metrics", demo.url())).send().await.is_err().then_some(())
        })
        .await;
        support::eventually("the listener back", Duration::from_secs(seconds + 10), async || {
            client().get(format!("{}/metrics", demo.url())).send().await.ok().map(drop)
        })
        .await;
        let metrics = client().get(format!("{}/metrics", serve.base)).send().await.unwrap();
        let refused = support::metric(
            &metrics.text().await.unwrap(),
            "alertprof_recorder_fetches_total{target=\"demo\",kind=\"heap\",result=\"failed\"}",
        );
        assert!(refused >= 1.0, "the recorder met the closed listener");
    }
    let metrics = client().get(format!("{}/metrics", serve.base)).send().await.unwrap().text().await.unwrap();
    assert_eq!(support::metric(&metrics, exits), 0.0, "{}", serve.log());
    assert_eq!(serve.get("/api/v1/captures").await, json!([]), "no exit captures");
    assert!(!serve.log().contains("The recorded process ended"), "{}", serve.log());

    demo.child.0.kill().unwrap();
    demo.child.0.wait().unwrap();
    let decision = serve.wait_decision(1).await;
    assert_eq!(decision["source"], "exit", "{decision}");
    assert!(decision["reason"].as_str().unwrap().contains("is gone"), "{decision}");
}
