//! An alert storm: a thousand alerts for 25 targets, each payload delivered twice (as an
//! Alertmanager HA pair does) and retried on 503 like Alertmanager, against a small queue.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alertprof::profile::proto::{Profile, ValueType};
use axum::extract::Request;
use axum::response::IntoResponse;
use prost::Message;
use serde_json::json;
use support::{Running, client, fake_target_with_request, metric, payload};

const TARGETS: usize = 25;
const ALERTS: usize = 1000;
const PER_PAYLOAD: usize = 20;

fn tiny_profile() -> Vec<u8> {
    let profile = Profile {
        string_table: vec!["".into(), "samples".into(), "count".into()],
        sample_type: vec![ValueType { r#type: 1, unit: 2 }],
        ..Default::default()
    };
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, &profile.encode_to_vec()).unwrap();
    encoder.finish().unwrap()
}

/// Every delivered alert × rule ends in exactly one decision; each alert is captured once
/// per rule and the rest are duplicates; no target ever has two CPU profiles at once; the
/// queue stays within its size and answers 503 when full; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_of_duplicated_alerts() {
    // One server stands for every target (/tN/debug/pprof/...); it counts CPU profiles in
    // flight per target.
    let body = tiny_profile();
    let cpu_now: Arc<Mutex<HashMap<String, usize>>> = Default::default();
    let cpu_most = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let addr = {
        let (cpu_now, cpu_most, requests) = (cpu_now.clone(), cpu_most.clone(), requests.clone());
        fake_target_with_request(move |request: Request| {
            let (cpu_now, cpu_most, requests, body) =
                (cpu_now.clone(), cpu_most.clone(), requests.clone(), body.clone());
            async move {
                requests.fetch_add(1, Ordering::SeqCst);
                let path = request.uri().path().to_string();
                let target = path.split('/').nth(1).unwrap_or_default().to_string();
                if path.ends_with("/profile") {
                    let now = {
                        let mut counts = cpu_now.lock().unwrap();
                        let count = counts.entry(target.clone()).or_default();
                        *count += 1;
                        *count
                    };
                    cpu_most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    *cpu_now.lock().unwrap().get_mut(&target).unwrap() -= 1;
                }
                body.into_response()
            }
        })
        .await
    };
    let targets: String = (0..TARGETS)
        .map(|t| {
            format!(
                "  - {{name: t{t}, pprof_url: \"http://{addr}/t{t}\", alert_labels: {{instance: t{t}}}}}\n"
            )
        })
        .collect();
    let config = format!(
        "storage: {{dir: \"{{data}}\", retention: {{max_bytes: 1GiB}}}}\ngate: {{queue_size: 64, max_in_flight: 4}}\n\
         targets:\n{targets}rules:\n  \
         - {{name: cpu, alert_labels: {{alertname: Storm}}, capture: [cpu], seconds: 1, cooldown: 0s}}\n  \
         - {{name: stacks, alert_labels: {{alertname: Storm}}, capture: [goroutine], cooldown: 0s}}\n"
    );
    let data = tempfile::tempdir().unwrap();
    let running = Arc::new(Running::start(&config, data.path()).await);

    // Payloads of 20 alerts; each sent twice, by 8 senders at once, retried on 503.
    let payloads: Vec<serde_json::Value> = (0..ALERTS / PER_PAYLOAD)
        .map(|p| {
            let alerts: Vec<(serde_json::Value, String)> = (0..PER_PAYLOAD)
                .map(|i| {
                    let n = p * PER_PAYLOAD + i;
                    (json!({"alertname": "Storm", "instance": format!("t{}", n % TARGETS)}), format!("fp{n}"))
                })
                .collect();
            let borrowed: Vec<(serde_json::Value, &str)> =
                alerts.iter().map(|(l, f)| (l.clone(), f.as_str())).collect();
            payload(&borrowed)
        })
        .collect();
    let deliveries: Vec<serde_json::Value> = payloads.iter().chain(payloads.iter()).cloned().collect();
    let deliveries = Arc::new(Mutex::new(deliveries));
    let refused = Arc::new(AtomicUsize::new(0));
    // The queue's depth right after each 503, and the reason given.
    let most_queued = Arc::new(AtomicUsize::new(0));
    let reasons: Arc<Mutex<Vec<String>>> = Default::default();
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let (running, deliveries, refused, most_queued, reasons) =
                (running.clone(), deliveries.clone(), refused.clone(), most_queued.clone(), reasons.clone());
            tokio::spawn(async move {
                loop {
                    let Some(delivery) = deliveries.lock().unwrap().pop() else { break };
                    loop {
                        let answer = client()
                            .post(running.url("/api/v1/alerts"))
                            .json(&delivery)
                            .send()
                            .await
                            .unwrap();
                        match answer.status().as_u16() {
                            200 => break,
                            503 => {
                                refused.fetch_add(1, Ordering::SeqCst);
                                let body: serde_json::Value = answer.json().await.unwrap();
                                reasons.lock().unwrap().push(body["error"].as_str().unwrap().to_string());
                                let text = running.get_text("/metrics").await;
                                most_queued.fetch_max(
                                    metric(&text, "alertprof_queue_depth") as usize,
                                    Ordering::SeqCst,
                                );
                                // Sent again a moment later, as Alertmanager retries a 503.
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            other => panic!("unexpected {other}"),
                        }
                    }
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }

    // Every alert × rule of every accepted delivery ends in one decision.
    let expected = 2 * ALERTS * 2;
    let decided = |text: &str| -> usize {
        ["captured", "duplicate", "cooldown", "capture_failed", "dropped", "refused", "not_verified"]
            .iter()
            .map(|o| metric(text, &format!("alertprof_decisions_total{{outcome=\"{o}\"}}")))
            .sum::<f64>() as usize
    };
    support::eventually("every alert decided", Duration::from_secs(120), async || {
        let decided = decided(&running.get_text("/metrics").await);
        if decided >= expected { Ok(()) } else { Err(format!("{decided} of {expected}")) }
    })
    .await;
    // Stopped, every job has ended: no decision can come late.
    let app = running.app.clone();
    Arc::into_inner(running).unwrap().stop().await;
    let text_after = app.metrics.render();
    assert_eq!(decided(&text_after), expected, "exactly one decision each");
    assert_eq!(metric(&text_after, "alertprof_decisions_total{outcome=\"captured\"}") as usize, 2 * ALERTS);
    assert_eq!(metric(&text_after, "alertprof_decisions_total{outcome=\"duplicate\"}") as usize, 2 * ALERTS);
    assert_eq!(metric(&text_after, "alertprof_captures_total{kind=\"cpu\",result=\"ok\"}") as usize, ALERTS);
    assert_eq!(
        metric(&text_after, "alertprof_captures_total{kind=\"goroutine\",result=\"ok\"}") as usize,
        ALERTS
    );
    assert_eq!(metric(&text_after, "alertprof_queue_depth"), 0.0);
    assert!(refused.load(Ordering::SeqCst) > 0, "the small queue was never full");
    assert!(metric(&text_after, "alertprof_webhook_requests_total{code=\"503\"}") > 0.0);
    // A payload's 40 jobs are refused only when fewer places are free: the queue was
    // well filled (some may have drained before the depth was read), and it said so.
    assert!(most_queued.load(Ordering::SeqCst) >= 64 - 2 * PER_PAYLOAD, "{most_queued:?}");
    assert!(reasons.lock().unwrap().iter().all(|r| r == "queue full (64 jobs); retry later"), "{reasons:?}");
    assert_eq!(cpu_most.load(Ordering::SeqCst), 1, "two CPU profiles on one target at once");
    assert_eq!(requests.load(Ordering::SeqCst), 2 * ALERTS, "one request per capture, no more");

    let stored: usize = (0..TARGETS)
        .map(|t| {
            support::files_in(&data.path().join(format!("t{t}")))
                .iter()
                .filter(|f| f.ends_with(".pb.gz"))
                .count()
        })
        .sum();
    assert_eq!(stored, 2 * ALERTS);
}
