//! Targets templated from alert labels: only what `allowed_targets` allows is requested;
//! link-local, metadata and malformed values are refused before any request, with a
//! decision that says why; redirects to another host are not followed.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use support::{Demo, Running, fake_target, payload};

fn alert(instance: &str, fingerprint: &str) -> Value {
    payload(&[(json!({"alertname": "GoroutineSpike", "job": "pods", "instance": instance}), fingerprint)])
}

/// The demo reached through a template: captured when allowed and verified on the
/// instance's own /metrics; refused with the reason otherwise, before any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templated_target_is_checked_before_any_request() {
    let demo = Demo::start();
    let port = demo.addr.port();
    let data = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
storage: {{dir: "{{data}}"}}
targets:
  - name: pods
    pprof_url: "http://{{{{ labels.instance }}}}"
    metrics_url: "http://{{{{ labels.instance }}}}/metrics"
    allowed_targets: ["127.0.0.1:{port}", "localhost:{port}", "0.0.0.0/0:1-1000"]
    alert_labels: {{job: pods}}
rules:
  - name: leak
    alert_labels: {{alertname: GoroutineSpike}}
    verify:
      goroutines: {{min: 100}}
    capture: [goroutine]
    cooldown: 0s
"#
    );
    let running = Running::start(&config, data.path()).await;

    // Allowed, but the instance has few goroutines: not verified, on its own reading.
    running.post_alerts(&alert(&format!("127.0.0.1:{port}"), "a")).await;
    let decision = running.wait_decisions(1, Duration::from_secs(10)).await[0].clone();
    assert_eq!(decision["outcome"], "not_verified", "{decision}");
    assert!(decision["reason"].as_str().unwrap().ends_with("< min 100"), "{decision}");
    assert!(decision["readings"]["goroutines"].as_f64().unwrap() < 100.0);

    demo.get("/goroutines?n=300").await;
    running.post_alerts(&alert(&format!("127.0.0.1:{port}"), "b")).await;
    let decision = running.wait_decisions(2, Duration::from_secs(10)).await[0].clone();
    assert_eq!(decision["outcome"], "captured", "{decision}");
    let capture = &running.get_json("/api/v1/captures").await[0];
    assert_eq!(capture["target"], "pods");
    assert_eq!(capture["url"], format!("http://127.0.0.1:{port}/debug/pprof/goroutine"));
    assert_eq!(support::files_in(&data.path().join("pods")).len(), 2);

    // A host name, resolved and checked, then pinned.
    running.post_alerts(&alert(&format!("localhost:{port}"), "c")).await;
    let decision = running.wait_decisions(3, Duration::from_secs(10)).await[0].clone();
    assert_eq!(decision["outcome"], "captured", "{decision}");

    // Refused before any request, each with its reason.
    let refused = [
        (format!("127.0.0.1:{}", port.wrapping_add(1).max(1001)), "is not in allowed_targets"),
        ("169.254.169.254:80".to_string(), "link-local or metadata address"),
        ("metadata.google.internal:80".to_string(), "metadata service name"),
        ("evil.example/x?".to_string(), "is not a host[:port]"),
        ("user@127.0.0.1".to_string(), "is not a host[:port]"),
    ];
    for (n, (instance, why)) in refused.iter().enumerate() {
        let (status, answer) = running.post_alerts(&alert(instance, &format!("r{n}"))).await;
        assert_eq!((status, answer), (200, json!({"accepted": 0, "ignored": 1})));
        let decision = running.wait_decisions(4 + n, Duration::from_secs(5)).await[0].clone();
        assert_eq!(decision["outcome"], "refused", "{instance}: {decision}");
        assert_eq!(decision["target"], "pods");
        let reason = decision["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("refused before any request") && reason.contains(why),
            "{instance}: {reason}"
        );
    }
    assert_eq!(running.get_json("/api/v1/captures").await.as_array().unwrap().len(), 2);
    // No directory or file ever named after a label value.
    let mut dirs = support::files_in(data.path());
    dirs.retain(|d| !d.starts_with('.'));
    assert_eq!(dirs, ["pods"]);
    running.stop().await;
}

/// A target that redirects to another host is not followed there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_to_another_host_is_not_followed() {
    let elsewhere_hits = Arc::new(AtomicUsize::new(0));
    let elsewhere = {
        let hits = elsewhere_hits.clone();
        fake_target(move || {
            hits.fetch_add(1, Ordering::SeqCst);
            async { StatusCode::OK.into_response() }
        })
        .await
    };
    // 127.0.0.2 is another host as far as URLs go, and still loopback.
    let location = format!("http://127.0.0.2:{}/debug/pprof/heap", elsewhere.port());
    let redirecting = fake_target(move || {
        let location = location.clone();
        async move { (StatusCode::FOUND, [("location", location)], "").into_response() }
    })
    .await;
    let data = tempfile::tempdir().unwrap();
    let config = format!(
        "storage: {{dir: \"{{data}}\"}}\ntargets: [{{name: t, pprof_url: \"http://{redirecting}\"}}]\n\
         rules: [{{name: r, alert_labels: {{alertname: X}}, capture: [heap]}}]\n"
    );
    let running = Running::start(&config, data.path()).await;
    running.post_alerts(&payload(&[(json!({"alertname": "X"}), "f")])).await;
    let decision = running.wait_decisions(1, Duration::from_secs(10)).await[0].clone();
    assert_eq!(decision["outcome"], "capture_failed", "{decision}");
    assert!(decision["reason"].as_str().unwrap().contains("answered 302"), "{decision}");
    assert_eq!(elsewhere_hits.load(Ordering::SeqCst), 0);
    running.stop().await;
}

/// One templated entry stands for many instances: a capture of one puts that instance in
/// the rule's cooldown, not the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_templated_targets_cooldown_is_per_instance() {
    let demo = Demo::start();
    let port = demo.addr.port();
    let data = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
storage: {{dir: "{{data}}"}}
targets:
  - name: pods
    pprof_url: "http://{{{{ labels.instance }}}}"
    allowed_targets: ["127.0.0.1:{port}", "localhost:{port}"]
    alert_labels: {{job: pods}}
rules:
  - {{name: leak, alert_labels: {{alertname: GoroutineSpike}}, capture: [goroutine], cooldown: 1h}}
"#
    );
    let running = Running::start(&config, data.path()).await;
    // Two instances (two names of the demo), then the first again with another alert.
    let sent =
        [("127.0.0.1", "a", "captured"), ("localhost", "b", "captured"), ("127.0.0.1", "c", "cooldown")];
    for (n, (host, fingerprint, outcome)) in sent.into_iter().enumerate() {
        running.post_alerts(&alert(&format!("{host}:{port}"), fingerprint)).await;
        let decision = running.wait_decisions(n + 1, Duration::from_secs(10)).await[0].clone();
        assert_eq!(decision["outcome"], outcome, "{host}: {decision}");
        assert_eq!(decision["target"], "pods", "{decision}");
    }
    assert_eq!(running.get_json("/api/v1/captures").await.as_array().unwrap().len(), 2);
    running.stop().await;
}
