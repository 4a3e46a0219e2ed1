//! Restarts, shutdown and storage faults with the real binary: SIGTERM during a long CPU
//! capture, `kill -9` in the middle of a download, a full disk, a storage path in the way.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use alertprof::profile::proto::{Profile, ValueType};
use axum::response::IntoResponse;
use prost::Message;
use serde_json::{Value, json};
use support::{Running, Serve, client, fake_target, files_in, payload};

fn config(target: &str, extra: &str) -> String {
    format!(
        "storage: {{dir: data}}\n{extra}targets: [{{name: t, pprof_url: \"{target}\"}}]\n\
         rules: [{{name: r, alert_labels: {{alertname: Spike}}, capture: [cpu], seconds: 10, cooldown: 0s}}]\n"
    )
}

/// Waits until a download has written its first bytes into the staging directory.
async fn wait_until_downloading(staged: &Path) {
    let started = || {
        files_in(staged)
            .first()
            .is_some_and(|part| std::fs::metadata(staged.join(part)).is_ok_and(|m| m.len() >= 8))
    };
    support::eventually("the download to start", Duration::from_secs(10), async || started().then_some(()))
        .await;
}

/// A CPU profile of 10 s that the target answers only at the end (as Go does), behind a
/// slow body: alertprof must be stopped in the middle of it.
async fn slow_target() -> String {
    let addr = fake_target(|| async {
        let drip = futures_util::stream::unfold(0u32, |n| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            (n < 200).then(|| (Ok::<_, std::io::Error>(vec![0x1f_u8, 0x8b]), n + 1))
        });
        axum::body::Body::from_stream(drip).into_response()
    })
    .await;
    format!("http://{addr}")
}

/// SIGTERM while a 10 s CPU capture runs: after `shutdown_grace` the capture is cancelled,
/// nothing partial is left, and the process exits 0 well before the capture would end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_discards_a_long_capture_after_the_grace() {
    let target = slow_target().await;
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &config(&target, "capture: {shutdown_grace: 1s}\n"), None).await;
    assert_eq!(serve.post("f1").await, 200);
    let staged = dir.path().join("data/.tmp");
    wait_until_downloading(&staged).await;
    let stopping = Instant::now();
    serve.signal("-TERM");
    let status = tokio::task::spawn_blocking(move || serve.wait()).await.unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(dir.path().join("alertprof.log")).unwrap()
    );
    assert!(stopping.elapsed() < Duration::from_secs(8), "took {:?}", stopping.elapsed());
    assert_eq!(files_in(&staged), Vec::<String>::new());
    let kept = files_in(&dir.path().join("data/t"));
    assert_eq!(kept.len(), 1, "only the failed capture's metadata: {kept:?}");
    let meta: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("data/t").join(&kept[0])).unwrap()).unwrap();
    assert_eq!(meta["status"], "failed");
    assert_eq!(meta["error"], "stopped: alertprof is shutting down");
    assert!(std::fs::read_to_string(dir.path().join("alertprof.log")).unwrap().contains("cancelling them"));
}

/// `kill -9` in the middle of a download leaves a staged part only; the restarted service
/// clears it, lists no capture for it, and still knows the alert (its admission was
/// recorded before the request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_download_recovers() {
    let target = slow_target().await;
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &config(&target, ""), None).await;
    assert_eq!(serve.post("f1").await, 200);
    let staged = dir.path().join("data/.tmp");
    wait_until_downloading(&staged).await;
    serve.signal("-KILL");
    let status = tokio::task::spawn_blocking(move || serve.wait()).await.unwrap();
    assert_eq!(status.code(), None, "killed by a signal");
    assert_eq!(files_in(&staged).len(), 1, "a partial download is left staged");
    assert_eq!(files_in(&dir.path().join("data/t")), Vec::<String>::new(), "no partial profile");

    let serve = Serve::start(dir.path(), &config(&target, ""), None).await;
    assert_eq!(files_in(&staged), Vec::<String>::new(), "the part is cleared at start");
    assert_eq!(serve.get("/api/v1/captures").await, json!([]));
    assert_eq!(serve.post("f1").await, 200);
    assert_eq!(serve.wait_decision(1).await["outcome"], "duplicate");
}

/// A profile of `size` bytes that does not compress, valid for validation.
fn big_profile(size: usize) -> Vec<u8> {
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    let mut strings = vec![String::new(), "samples".into(), "count".into()];
    let mut total = 0;
    while total < size {
        let word: String = (0..64)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[(seed >> 33) as usize % 36])
            })
            .collect();
        total += word.len();
        strings.push(word);
    }
    let profile = Profile {
        string_table: strings,
        sample_type: vec![ValueType { r#type: 1, unit: 2 }],
        ..Default::default()
    };
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, &profile.encode_to_vec()).unwrap();
    encoder.finish().unwrap()
}

/// The storage directory on a full disk (a 256 KiB tmpfs in the service's own mount
/// namespace): a 600 KB profile fails with a clear reason, the service keeps answering,
/// and a small profile afterwards is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_is_a_failed_decision_and_service_goes_on() {
    let big = big_profile(600_000);
    let small = big_profile(1000);
    let serve_big = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let addr = {
        let serve_big = serve_big.clone();
        fake_target(move || {
            let body =
                if serve_big.load(std::sync::atomic::Ordering::SeqCst) { big.clone() } else { small.clone() };
            async move { body.into_response() }
        })
        .await
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let config = format!(
        "storage: {{dir: data}}\ntargets: [{{name: t, pprof_url: \"http://{addr}\"}}]\n\
         rules: [{{name: r, alert_labels: {{alertname: Spike}}, capture: [heap], cooldown: 0s}}]\n"
    );
    let mount = "mount -t tmpfs -o size=256k tmpfs data".to_string();
    let serve = Serve::start(dir.path(), &config, Some(mount)).await;
    assert_eq!(serve.post("f1").await, 200);
    let decision = serve.wait_decision(1).await;
    assert_eq!(decision["outcome"], "capture_failed", "{decision}");
    let reason = decision["reason"].as_str().unwrap();
    assert!(reason.contains("No space left on device"), "{reason}");
    assert_eq!(client().get(format!("{}/-/healthy", serve.base)).send().await.unwrap().status(), 200);

    serve_big.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(serve.post("f2").await, 200);
    let decision = serve.wait_decision(2).await;
    assert_eq!(decision["outcome"], "captured", "{decision}");
    let captures = serve.get("/api/v1/captures").await;
    assert_eq!(captures.as_array().unwrap().iter().filter(|c| c["status"] == "ok").count(), 1);
}

/// Something in the way of the target's directory: the capture fails with the path in the
/// reason, the gate state is untouched by it, and other targets are still captured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_path_in_the_way() {
    let demo = support::Demo::start();
    let data = tempfile::tempdir().unwrap();
    let config = format!(
        "storage: {{dir: \"{{data}}\"}}\ntargets:\n  - {{name: blocked, pprof_url: \"{0}\", alert_labels: {{job: a}}}}\n  \
         - {{name: fine, pprof_url: \"{0}\", alert_labels: {{job: b}}}}\n\
         rules: [{{name: r, alert_labels: {{alertname: Spike}}, capture: [goroutine]}}]\n",
        demo.url()
    );
    std::fs::write(data.path().join("blocked"), "a file where the directory should be").unwrap();
    let running = Running::start(&config, data.path()).await;
    running.post_alerts(&payload(&[(json!({"alertname": "Spike", "job": "a"}), "a")])).await;
    let decision = running.wait_decisions(1, Duration::from_secs(10)).await[0].clone();
    assert_eq!(decision["outcome"], "capture_failed");
    let reason = decision["reason"].as_str().unwrap();
    assert!(reason.contains("cannot store the profile") && reason.contains("blocked"), "{reason}");
    assert_eq!(files_in(&data.path().join(".tmp")), Vec::<String>::new());
    running.post_alerts(&payload(&[(json!({"alertname": "Spike", "job": "b"}), "b")])).await;
    let decision = running.wait_decisions(2, Duration::from_secs(10)).await[0].clone();
    assert_eq!(decision["outcome"], "captured", "{decision}");
    running.stop().await;
}

/// The `address=` of a running service, for raw connections.
fn address(serve: &Serve) -> std::net::SocketAddr {
    serve.base.trim_start_matches("http://").parse().unwrap()
}

/// Clients that never finish their requests (headers half sent, a body cut short) cannot
/// keep a stopping service alive: after SIGTERM it exits within `shutdown_grace` and a
/// little, closing them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_half_sent_requests() {
    let dir = tempfile::tempdir().unwrap();
    let config = "storage: {dir: data}\ncapture: {shutdown_grace: 1s}\nhttp: {header_timeout: 60s, body_timeout: 60s}\n";
    let serve = Serve::start(dir.path(), config, None).await;
    let mut open = Vec::new();
    for start in [
        &b"GET /-/ready HTTP/1.1\r\nHost: alertprof\r\n"[..],
        b"POST /api/v1/alerts HTTP/1.1\r\nHost: alertprof\r\nContent-Length: 100\r\n\r\n{\"alerts\"",
    ] {
        let mut stream = tokio::net::TcpStream::connect(address(&serve)).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, start).await.unwrap();
        open.push(stream);
    }
    support::eventually("the connections taken", Duration::from_secs(10), async || {
        let metrics =
            client().get(format!("{}/metrics", serve.base)).send().await.unwrap().text().await.unwrap();
        (support::metric(&metrics, "alertprof_http_connections") >= 2.0).then_some(())
    })
    .await;
    let stopping = Instant::now();
    serve.signal("-TERM");
    let log = dir.path().join("alertprof.log");
    let status = tokio::task::spawn_blocking(move || serve.wait()).await.unwrap();
    let log = std::fs::read_to_string(log).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(stopping.elapsed() < Duration::from_secs(6), "took {:?}:\n{log}", stopping.elapsed());
    assert!(log.contains("Connections still open after the grace period; closing them."), "{log}");
    drop(open);
}

/// `VmRSS` of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// A hundred clients each sending a body of almost 2 MiB and holding take a bounded share
/// of memory: bodies are read a few at a time (32 MiB in all), the rest wait their turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_are_read_a_few_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = "storage: {dir: data}\nwebhook: {max_body_size: 2MiB}\nhttp: {body_timeout: 60s}\n";
    let serve = Serve::start(dir.path(), config, None).await;
    let pid = serve.child.0.id();
    let before = rss(pid);
    let size = 2 << 20;
    let senders: Vec<_> = (0..100)
        .map(|_| {
            let addr = address(&serve);
            tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                let head = format!(
                    "POST /api/v1/alerts HTTP/1.1\r\nHost: alertprof\r\nContent-Length: {size}\r\n\r\n"
                );
                tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes()).await.unwrap();
                tokio::io::AsyncWriteExt::write_all(&mut stream, &vec![b' '; size - 1]).await.ok();
                tokio::time::sleep(Duration::from_secs(60)).await;
            })
        })
        .collect();
    // Watch the memory while the bodies come in.
    let mut most = 0;
    for _ in 0..50 {
        most = most.max(rss(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let grew = most.saturating_sub(before);
    assert!(grew < 80 << 20, "RSS grew by {} MiB", grew >> 20);
    assert_eq!(client().get(format!("{}/-/ready", serve.base)).send().await.unwrap().status(), 200);
    senders.iter().for_each(|sender| sender.abort());
}

/// On a disk already full at start (a 256 KiB tmpfs filled up), alertprof starts, says so,
/// and serves the captures it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_on_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    // A capture kept before the disk filled up, copied in once the tmpfs is mounted.
    let seed = dir.path().join("seed/t");
    std::fs::create_dir_all(&seed).unwrap();
    let id = "20261121T100000.000Z-r-heap";
    let meta = json!({"id": id, "target": "t", "rule": "r", "kind": "heap", "status": "failed", "error": "x",
        "trigger": {"source": "manual"}, "url": "http://t", "started_at": "2026-11-21T10:00:00Z",
        "finished_at": "2026-11-21T10:00:00Z", "bytes": 0});
    std::fs::write(seed.join(format!("{id}.json")), meta.to_string()).unwrap();
    std::fs::create_dir_all(dir.path().join("seed/.state")).unwrap();
    // Dated now: an entry older than the gate's dedupe_ttl would be dropped at load, and
    // then there would be nothing to rewrite.
    let entry = json!({"dedupe": "k", "at": chrono::Utc::now().to_rfc3339()});
    std::fs::write(dir.path().join("seed/.state/gate.jsonl"), format!("{entry}\n")).unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let fill = "mount -t tmpfs -o size=256k tmpfs data && cp -r seed/. data/ \
                && (dd if=/dev/zero of=data/filler bs=4k 2>/dev/null || true)";
    let serve = Serve::start(dir.path(), "storage: {dir: data}\n", Some(fill.to_string())).await;
    let captures = serve.get("/api/v1/captures").await;
    assert_eq!(captures[0]["id"], id, "{captures}");
    let log = serve.log();
    assert!(log.contains("Cannot rewrite the gate state; it stays as it was."), "{log}");
}

/// The storage directory deleted while alertprof runs is made again: the next capture is
/// kept, its dedupe key is written to a new state file, and after a restart the same alert
/// is still known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_deleted_while_running() {
    let demo = support::Demo::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "storage: {{dir: data}}\ntargets: [{{name: t, pprof_url: \"{}\"}}]\n\
         rules: [{{name: r, alert_labels: {{alertname: Spike}}, capture: [goroutine], cooldown: 0s}}]\n",
        demo.url()
    );
    let serve = Serve::start(dir.path(), &config, None).await;
    assert_eq!(serve.post("first").await, 200);
    assert_eq!(serve.wait_decision(1).await["outcome"], "captured");
    std::fs::remove_dir_all(dir.path().join("data")).unwrap();
    assert_eq!(serve.post("second").await, 200);
    let decision = serve.wait_decision(2).await;
    assert_eq!(decision["outcome"], "captured", "{decision}");
    assert_eq!(files_in(&dir.path().join("data/t")).len(), 2, "the second capture and its metadata");
    let state = std::fs::read_to_string(dir.path().join("data/.state/gate.jsonl")).unwrap();
    assert!(state.contains("second@"), "{state}");
    serve.signal("-TERM");
    tokio::task::spawn_blocking(move || serve.wait()).await.unwrap();

    let serve = Serve::start(dir.path(), &config, None).await;
    assert_eq!(serve.post("second").await, 200);
    assert_eq!(serve.wait_decision(1).await["outcome"], "duplicate");
}
