//! Local re-verification and watch mode against the real Go demo target: readings from
//! its process and /metrics, watch rules that capture with no Alertmanager, and alerts
//! that no longer hold.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Demo, Running, payload};

fn config(demo: &Demo, rules: &str) -> String {
    format!(
        r#"
storage: {{dir: "{{data}}"}}
sample_interval: 200ms
history: 5
targets:
{target}rules:
{rules}
"#,
        target = demo.target()
    )
}

/// A watch rule on goroutines captures a goroutine profile within a few intervals of the
/// demo starting 1000 goroutines, with no Alertmanager involved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_rule_captures_goroutine_spike() {
    let demo = Demo::start();
    let data = tempfile::tempdir().unwrap();
    let rules = r#"
  - name: goroutine-watch
    watch: {interval: 200ms}
    verify:
      goroutines: {min: 50, abs: 1000, max: 1000000}
    capture: [goroutine]
    cooldown: 1h
"#;
    let running = Running::start(&config(&demo, rules), data.path()).await;
    let before = running.wait_signal("demo", "goroutines", Duration::from_secs(10), |v| v > 0.0).await;
    assert!(before < 50.0, "the idle demo has few goroutines: {before}");
    let not_verified = "alertprof_decisions_total{outcome=\"not_verified\"}";
    running.wait_metric(not_verified, Duration::from_secs(10), |n| n >= 3.0).await;
    // Every tick decides; while idle the same outcome repeats and is listed once.
    let idle = running.get_json("/api/v1/decisions").await;
    assert_eq!(idle.as_array().unwrap().len(), 1, "{idle}");
    assert_eq!(idle[0]["outcome"], "not_verified");
    assert!(idle[0]["reason"].as_str().unwrap().ends_with("< min 50"), "{idle}");

    demo.get("/goroutines?n=1000").await;
    let decision = &running.wait_outcome("captured", Duration::from_secs(5)).await;
    assert_eq!(decision["source"], "watch");
    let reason = decision["reason"].as_str().unwrap();
    assert!(reason.contains("verified: goroutines") && reason.contains(">= abs 1000"), "{reason}");
    assert!(decision["readings"]["goroutines"].as_f64().unwrap() >= 1000.0);

    let capture = &running.get_json("/api/v1/captures").await[0];
    assert_eq!(capture["trigger"]["source"], "watch");
    assert!(capture["readings"]["goroutines"].as_f64().unwrap() >= 1000.0);
    assert!(capture["readings"].get("memory_percent").is_some());
    // In cooldown: every tick is counted, and listed once.
    let cooldowns = "alertprof_decisions_total{outcome=\"cooldown\"}";
    running.wait_metric(cooldowns, Duration::from_secs(10), |n| n >= 3.0).await;
    let decisions = running.get_json("/api/v1/decisions").await;
    let outcomes: Vec<&str> =
        decisions.as_array().unwrap().iter().map(|d| d["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["cooldown", "captured", "not_verified"]);
    assert_eq!(running.get_json("/api/v1/captures").await.as_array().unwrap().len(), 1);
    running.stop().await;
}

/// An alert that arrives when local readings are below `min` captures nothing and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_below_min_is_not_verified() {
    let demo = Demo::start();
    let data = tempfile::tempdir().unwrap();
    let rules = r#"
  - name: goroutine-alert
    alert_labels: {alertname: GoroutineSpike}
    verify:
      goroutines: {min: 5000}
    capture: [goroutine]
"#;
    let running = Running::start(&config(&demo, rules), data.path()).await;
    running.wait_signal("demo", "goroutines", Duration::from_secs(10), |v| v > 0.0).await;
    let (status, _) =
        running.post_alerts(&payload(&[(json!({"alertname": "GoroutineSpike", "job": "demo"}), "g1")])).await;
    assert_eq!(status, 200);
    let decision = &running.wait_decisions(1, Duration::from_secs(5)).await[0];
    assert_eq!(decision["outcome"], "not_verified", "{decision}");
    let reason = decision["reason"].as_str().unwrap();
    assert!(reason.starts_with("goroutines ") && reason.ends_with(" < min 5000"), "{reason}");
    assert!(decision["readings"]["goroutines"].as_f64().unwrap() < 5000.0);
    assert_eq!(running.get_json("/api/v1/captures").await, json!([]));
    assert!(support::files_in(&data.path().join("demo")).is_empty());

    // Once the condition holds, the same alert (not yet captured) is verified and captured.
    demo.get("/goroutines?n=6000").await;
    running.wait_signal("demo", "goroutines", Duration::from_secs(5), |v| v >= 5000.0).await;
    running.post_alerts(&payload(&[(json!({"alertname": "GoroutineSpike", "job": "demo"}), "g1")])).await;
    let decision = &running.wait_decisions(2, Duration::from_secs(10)).await[0];
    assert_eq!(decision["outcome"], "captured", "{decision}");
    running.stop().await;
}

/// The demo burning a core shows as cpu_percent rising, read from its own process found
/// by its listening port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_percent_rises_when_the_target_burns() {
    let demo = Demo::start();
    let data = tempfile::tempdir().unwrap();
    let rules = "  - {name: none, alert_labels: {alertname: Never}, capture: [heap]}\n";
    let running = Running::start(&config(&demo, rules), data.path()).await;
    let idle = running.wait_signal("demo", "cpu_percent", Duration::from_secs(10), |v| v >= 0.0).await;
    assert!(idle < 20.0, "idle demo at {idle}%");
    demo.get("/burn?seconds=10&workers=1").await;
    // One busy core of the CPUs the demo may use (2 here): about 50%, less on a machine
    // busy with other work, but well above idle.
    let busy = running.wait_signal("demo", "cpu_percent", Duration::from_secs(10), |v| v > idle + 10.0).await;
    assert!(busy <= 110.0, "{busy}");
    let threads = running.signal("demo", "threads").await.unwrap();
    assert!(threads >= 2.0);
    running.stop().await;
}
