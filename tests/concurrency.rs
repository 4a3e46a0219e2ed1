//! The gate's concurrency limits seen from the target's side: never two CPU profiles on
//! one target at once, and no more captures in flight than `gate.max_in_flight`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::Request;
use axum::response::IntoResponse;
use serde_json::json;
use support::{Running, payload};

/// A target proxying to the Go demo that records the most requests it ever had at once,
/// over all paths and for CPU profiles alone.
struct Counting {
    url: String,
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    cpu_now: Arc<AtomicUsize>,
    cpu_most: Arc<AtomicUsize>,
}

async fn counting_proxy(upstream: String) -> Counting {
    let counters: [Arc<AtomicUsize>; 4] = Default::default();
    let [now, most, cpu_now, cpu_most] = counters.clone();
    let addr = support::fake_target_with_request(move |request: Request| {
        let [now, most, cpu_now, cpu_most] = counters.clone();
        let upstream = upstream.clone();
        async move {
            let path = request.uri().path_and_query().unwrap().to_string();
            let cpu = path.starts_with("/debug/pprof/profile");
            most.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            if cpu {
                cpu_most.fetch_max(cpu_now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            }
            let body = support::client().get(format!("{upstream}{path}")).send().await.unwrap();
            let status = body.status();
            let bytes = body.bytes().await.unwrap();
            now.fetch_sub(1, Ordering::SeqCst);
            if cpu {
                cpu_now.fetch_sub(1, Ordering::SeqCst);
            }
            (axum::http::StatusCode::from_u16(status.as_u16()).unwrap(), bytes).into_response()
        }
    })
    .await;
    Counting { url: format!("http://{addr}"), now, most, cpu_now, cpu_most }
}

/// Three rules capture CPU profiles of one target for the same alert: all succeed, one
/// after the other, never two at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cpu_profile_per_target() {
    let demo = support::Demo::start();
    let proxy = counting_proxy(demo.url()).await;
    let data = tempfile::tempdir().unwrap();
    let rule = |name: &str| {
        format!(
            "  - {{name: {name}, alert_labels: {{alertname: HighCPU}}, capture: [cpu, heap], seconds: 1}}\n"
        )
    };
    let config = format!(
        "storage: {{dir: \"{{data}}\"}}\ntargets: [{{name: t, pprof_url: \"{}\"}}]\nrules:\n{}{}{}",
        proxy.url,
        rule("a"),
        rule("b"),
        rule("c")
    );
    let running = Running::start(&config, data.path()).await;
    running.post_alerts(&payload(&[(json!({"alertname": "HighCPU"}), "f")])).await;
    let decisions = running.wait_decisions(3, Duration::from_secs(30)).await;
    for decision in &decisions {
        assert_eq!(decision["outcome"], "captured", "{decision}");
    }
    assert_eq!(proxy.cpu_most.load(Ordering::SeqCst), 1, "two CPU profiles ran at once");
    assert!(proxy.most.load(Ordering::SeqCst) >= 2, "heap profiles ran beside the CPU profile");
    assert_eq!(proxy.now.load(Ordering::SeqCst) + proxy.cpu_now.load(Ordering::SeqCst), 0);
    running.stop().await;
}

/// With `max_in_flight: 2`, six kinds at once never make more than two requests at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_in_flight_are_capped() {
    let demo = support::Demo::start();
    let proxy = counting_proxy(demo.url()).await;
    let data = tempfile::tempdir().unwrap();
    let config = format!(
        "storage: {{dir: \"{{data}}\"}}\ngate: {{max_in_flight: 2}}\ntargets: [{{name: t, pprof_url: \"{}\"}}]\n\
         rules: [{{name: r, alert_labels: {{a: b}}, capture: [cpu, trace, heap, allocs, goroutine, threadcreate], seconds: 1}}]\n",
        proxy.url
    );
    let running = Running::start(&config, data.path()).await;
    running.post_alerts(&payload(&[(json!({"a": "b"}), "f")])).await;
    let decision = &running.wait_decisions(1, Duration::from_secs(30)).await[0];
    assert_eq!(decision["outcome"], "captured", "{decision}");
    assert_eq!(proxy.most.load(Ordering::SeqCst), 2);
    running.stop().await;
}
