//! Targets that fail: each capture ends failed with its reason and leaves no profile file.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;
use support::{Running, closed_port, fake_target, files_in, payload};

const CONFIG: &str = r#"
storage: {dir: "{data}"}
capture: {timeout_margin: 1s, max_profile_size: 64KiB}
targets:
  - {name: t, pprof_url: "TARGET_URL"}
rules:
  - name: r
    alert_labels: {alertname: Spike}
    capture: [heap]
    cooldown: 0s
"#;

/// Runs one alert against a target at `url`; returns the decision and the target's files.
async fn capture_from(url: &str) -> (serde_json::Value, Vec<String>, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let running = Running::start(&CONFIG.replace("TARGET_URL", url), data.path()).await;
    let (status, _) = running.post_alerts(&payload(&[(json!({"alertname": "Spike"}), "f")])).await;
    assert_eq!(status, 200);
    let decision = running.wait_decisions(1, Duration::from_secs(20)).await[0].clone();
    let captures = running.get_json("/api/v1/captures").await;
    running.stop().await;
    let capture = &captures[0];
    assert_eq!(capture["status"], "failed");
    assert!(capture.get("file").is_none());
    assert_eq!(decision["captures"][0], capture["id"]);
    assert_eq!(files_in(&data.path().join(".tmp")), Vec::<String>::new(), "nothing left staged");
    (decision, files_in(&data.path().join("t")), data)
}

fn assert_failed(decision: &serde_json::Value, files: &[String], reason: &str) {
    assert_eq!(decision["outcome"], "capture_failed", "{decision}");
    let text = decision["reason"].as_str().unwrap();
    assert!(text.contains(reason), "{text:?} does not say {reason:?}");
    assert_eq!(files.len(), 1, "only the metadata: {files:?}");
    assert!(files[0].ends_with(".json"));
}

/// Connection refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_down() {
    let closed = closed_port();
    let (decision, files, _data) = capture_from(&closed.url()).await;
    assert_failed(&decision, &files, "cannot reach");
}

/// A target that accepts and never answers is cut off at the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_hangs() {
    let addr = fake_target(|| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        StatusCode::OK.into_response()
    })
    .await;
    let (decision, files, _data) = capture_from(&format!("http://{addr}")).await;
    assert_failed(&decision, &files, "no complete answer");
}

/// A 500 that is not "in use" fails at once with the body in the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_answers_500() {
    let addr = fake_target(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response() }).await;
    let (decision, files, _data) = capture_from(&format!("http://{addr}")).await;
    assert_failed(&decision, &files, "answered 500: boom");
}

/// A 200 with garbage is refused by validation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_answers_garbage() {
    let addr = fake_target(|| async { "<html>not a profile</html>".into_response() }).await;
    let (decision, files, _data) = capture_from(&format!("http://{addr}")).await;
    assert_failed(&decision, &files, "invalid heap body");
}

/// A body over `max_profile_size` is cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_answers_too_much() {
    let addr = fake_target(|| async { vec![0u8; 1 << 20].into_response() }).await;
    let (decision, files, _data) = capture_from(&format!("http://{addr}")).await;
    assert_failed(&decision, &files, "sent more than 65536 bytes");
}

/// Go's 500 "cpu profiling already in use" is retried; when the profiler frees up the
/// capture succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiler_in_use_is_retried() {
    let demo = support::Demo::start();
    let tries = Arc::new(AtomicUsize::new(0));
    let upstream = demo.url();
    let addr = {
        let tries = tries.clone();
        fake_target(move || {
            let tries = tries.clone();
            let upstream = upstream.clone();
            async move {
                if tries.fetch_add(1, Ordering::SeqCst) < 2 {
                    return (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Could not enable CPU profiling: cpu profiling already in use\n",
                    )
                        .into_response();
                }
                let url = format!("{upstream}/debug/pprof/profile?seconds=1");
                let body = support::client().get(url).send().await.unwrap();
                body.bytes().await.unwrap().into_response()
            }
        })
        .await
    };
    let data = tempfile::tempdir().unwrap();
    let config = CONFIG
        .replace("TARGET_URL", &format!("http://{addr}"))
        .replace("timeout_margin: 1s", "timeout_margin: 5s")
        .replace("capture: [heap]", "capture: [cpu]\n    seconds: 1");
    let running = Running::start(&config, data.path()).await;
    running.post_alerts(&payload(&[(json!({"alertname": "Spike"}), "f")])).await;
    let decision = running.wait_decisions(1, Duration::from_secs(20)).await[0].clone();
    assert_eq!(decision["outcome"], "captured", "{decision}");
    assert_eq!(tries.load(Ordering::SeqCst), 3);
    running.stop().await;
}

/// How the switchable target below misbehaves.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Hang,
    Trickle,
    InUse,
    NotFound,
    Garbage,
    TooLarge,
    Fine,
}

/// One target, one fault after another, each followed by a good capture: every fault is
/// a failed decision with its reason and no file, and the next capture works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_then_a_good_capture() {
    let demo = support::Demo::start();
    let mode = Arc::new(std::sync::Mutex::new(Mode::Fine));
    let upstream = demo.url();
    let addr = {
        let mode = mode.clone();
        fake_target(move || {
            let current = *mode.lock().unwrap();
            let upstream = upstream.clone();
            async move {
                match current {
                    Mode::Hang => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        StatusCode::OK.into_response()
                    }
                    Mode::Trickle => {
                        let drip = futures_util::stream::unfold(0u32, |n| async move {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            (n < 100).then(|| (Ok::<_, std::io::Error>(vec![0x1f_u8]), n + 1))
                        });
                        axum::body::Body::from_stream(drip).into_response()
                    }
                    Mode::InUse => {
                        (StatusCode::INTERNAL_SERVER_ERROR, "cpu profiling already in use").into_response()
                    }
                    Mode::NotFound => (StatusCode::NOT_FOUND, "404 page not found\n").into_response(),
                    Mode::Garbage => "goroutine 1 [running]:\nnot a heap profile".into_response(),
                    Mode::TooLarge => vec![7u8; 1 << 20].into_response(),
                    Mode::Fine => {
                        let heap = support::client()
                            .get(format!("{upstream}/debug/pprof/heap"))
                            .send()
                            .await
                            .unwrap();
                        heap.bytes().await.unwrap().into_response()
                    }
                }
            }
        })
        .await
    };
    let data = tempfile::tempdir().unwrap();
    let running = Running::start(&CONFIG.replace("TARGET_URL", &format!("http://{addr}")), data.path()).await;
    let faults = [
        (Mode::Hang, "no complete answer from"),
        (Mode::Trickle, "no complete answer from"),
        (Mode::InUse, "answered 500: cpu profiling already in use"),
        (Mode::NotFound, "answered 404: 404 page not found"),
        (Mode::Garbage, "invalid heap body"),
        (Mode::TooLarge, "sent more than 65536 bytes"),
    ];
    let mut decided = 0;
    for (n, (fault, reason)) in faults.into_iter().enumerate() {
        for (current, expected) in [(fault, Some(reason)), (Mode::Fine, None)] {
            *mode.lock().unwrap() = current;
            decided += 1;
            let fingerprint = format!("{n}-{current:?}");
            running.post_alerts(&payload(&[(json!({"alertname": "Spike"}), fingerprint.as_str())])).await;
            let decision = running.wait_decisions(decided, Duration::from_secs(20)).await[0].clone();
            match expected {
                Some(reason) => {
                    assert_eq!(decision["outcome"], "capture_failed", "{fault:?}: {decision}");
                    let text = decision["reason"].as_str().unwrap();
                    assert!(text.contains(reason), "{fault:?}: {text:?} does not say {reason:?}");
                }
                None => assert_eq!(decision["outcome"], "captured", "after {fault:?}: {decision}"),
            }
        }
    }
    let files = files_in(&data.path().join("t"));
    let profiles: Vec<&String> = files.iter().filter(|f| !f.ends_with(".json")).collect();
    assert_eq!(profiles.len(), 6, "only the good captures left a profile: {files:?}");
    assert_eq!(files.len(), 18, "and metadata of all twelve");
    assert_eq!(files_in(&data.path().join(".tmp")), Vec::<String>::new());
    running.stop().await;
}
