//! `perf` captures as users run them: the compiled `alertprof serve`, a config with the
//! keys perf brings (a target with no `pprof_url`, only its process; `capture.perf_frequency`;
//! `recorder.perf` and `recorder.perf_frequency`), the Go demo target as a service that
//! serves no pprof, and an alert sent to the webhook. Each capture must be a profile
//! `go tool pprof` opens, with the burning function by name; each way a perf capture can
//! fail must say what to do.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Demo, Serve, client, eventually, payload, pprof_top};

/// Posts one firing `HighCPU` alert, its labels `extra` besides the alertname.
async fn alert(serve: &Serve, fingerprint: &str, extra: Value) {
    let mut labels = json!({"alertname": "HighCPU"});
    labels.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let body = payload(&[(labels, fingerprint)]);
    let answer = client().post(format!("{}/api/v1/alerts", serve.base)).json(&body).send().await.unwrap();
    assert_eq!(answer.status(), 200);
}

/// The decision on the `nth` alert (1 the first), once there is one.
async fn decision(serve: &Serve, nth: usize) -> Value {
    let decision = serve.wait_decision(nth).await;
    eventually("the decision on the alert", Duration::from_secs(60), async || {
        let decisions = serve.get("/api/v1/decisions").await;
        let decisions = decisions.as_array().unwrap();
        let found = decisions.get(decisions.len() - nth).filter(|d| d["outcome"] != "queued").cloned();
        found.ok_or_else(|| decision.to_string())
    })
    .await
}

/// /metrics of `serve`, as Prometheus scrapes it.
async fn metrics(serve: &Serve) -> String {
    client().get(format!("{}/metrics", serve.base)).send().await.unwrap().text().await.unwrap()
}

/// The one capture of `decision`, which must be kept: its metadata, and the rows of
/// `go tool pprof -top` of its profile, downloaded through the API. A capture sampled for
/// the alert says on its page how its samples came out.
async fn kept_capture(serve: &Serve, decision: &Value, dir: &Path) -> (Value, Vec<String>) {
    assert_eq!(decision["outcome"], "captured", "{decision}");
    let id = decision["captures"][0].as_str().unwrap();
    let meta = serve.get(&format!("/api/v1/captures/{id}")).await;
    assert_eq!((&meta["status"], &meta["kind"]), (&json!("ok"), &json!("perf")), "{meta}");
    let file = dir.join(meta["file"].as_str().unwrap());
    let profile = serve.get_raw(&format!("/api/v1/captures/{id}/profile")).await;
    std::fs::write(&file, profile.bytes().await.unwrap()).unwrap();
    let page = serve.get_raw(&format!("/captures/{id}")).await.text().await.unwrap();
    assert_eq!(
        page.contains("id=\"capture-perf\""),
        meta["perf"].is_object(),
        "the page says how the samples came out"
    );
    (meta, pprof_top(&file))
}

fn burning(rows: &[String]) -> bool {
    rows.iter().any(|row| row.contains("main.spin") || row.contains("main.burnCPU"))
}

/// A service that serves no pprof, known by its port only: the alert is verified on its
/// process's CPU, and a perf capture at `capture.perf_frequency` names its functions from
/// its binary. A target with no pprof_url whose rule asks for a pprof kind is refused by
/// check-config, which names the kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_pprof_by_its_port() {
    let demo = Demo::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "storage: {{dir: data}}\nsample_interval: 1s\ncapture: {{perf_frequency: 49}}\n\
         targets:\n  - name: shop\n    process: {{listen_port: {port}}}\n    alert_labels: {{job: shop}}\n\
         rules:\n  - name: cpu\n    alert_labels: {{alertname: HighCPU}}\n    verify: {{cpu_percent: {{abs: 1}}}}\n    \
         capture: [perf]\n    seconds: 2\n",
        port = demo.addr.port()
    );
    let refused = config.replace("capture: [perf]", "capture: [perf, heap]");
    std::fs::write(dir.path().join("refused.yaml"), &refused).unwrap();
    let checked = Command::new(Serve::binary())
        .args(["check-config", "refused.yaml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("heap") && stderr.contains("pprof_url"),
        "names the kind that needs a pprof_url: {stderr}"
    );

    let serve = Serve::start(dir.path(), &config, None).await;
    demo.get("/burn?seconds=120&workers=1").await;
    eventually("the process's CPU read over 1%", Duration::from_secs(30), async || {
        let metrics = metrics(&serve).await;
        let cpu = support::metric(&metrics, "alertprof_signal{target=\"shop\",signal=\"cpu_percent\"}");
        (cpu > 1.0).then_some(()).ok_or(metrics)
    })
    .await;
    alert(&serve, "shop-1", json!({"job": "shop"})).await;
    let decision = decision(&serve, 1).await;
    assert!(
        decision["reason"].as_str().unwrap().contains("cpu_percent"),
        "verified on the process: {decision}"
    );
    let (meta, rows) = kept_capture(&serve, &decision, dir.path()).await;
    assert_eq!(meta["perf"]["frequency_hz"], 49, "{meta}");
    assert!(meta["perf"]["samples"].as_u64().unwrap() > 0, "{meta}");
    assert_eq!(meta["url"], format!("perf:pid/{}", demo.child.0.id()), "{meta}");
    assert!(burning(&rows), "the burning function by name: {rows:?}");
}

/// `recorder: {perf: 2s}` at `recorder.perf_frequency` records a service without pprof all
/// the time; an alert's `lookback` then reaches before the alert, from the recorder's
/// segments merged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorder_records_perf_and_lookback_reaches_before_the_alert() {
    let demo = Demo::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "storage: {{dir: data}}\n\
         targets:\n  - name: shop\n    process: {{pid: {pid}}}\n    \
         recorder: {{perf: 2s, perf_frequency: 19, keep: 1m}}\n    alert_labels: {{job: shop}}\n\
         rules:\n  - name: cpu\n    alert_labels: {{alertname: HighCPU}}\n    capture: [perf]\n    \
         seconds: 2\n    lookback: 6s\n",
        pid = demo.child.0.id()
    );
    let serve = Serve::start(dir.path(), &config, None).await;
    demo.get("/burn?seconds=120&workers=1").await;
    eventually("three perf segments recorded", Duration::from_secs(30), async || {
        let metrics = metrics(&serve).await;
        let line = metrics
            .lines()
            .find(|line| line.starts_with("alertprof_recorder_segments{") && line.contains("kind=\"perf\""));
        let segments: f64 = line.and_then(|line| line.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0);
        (segments >= 3.0).then_some(()).ok_or(metrics)
    })
    .await;
    let alerted = chrono::Utc::now();
    alert(&serve, "shop-1", json!({"job": "shop"})).await;
    let decision = decision(&serve, 1).await;
    let (meta, rows) = kept_capture(&serve, &decision, dir.path()).await;
    assert_eq!(meta["url"], "perf:recorder", "{meta}");
    let from: chrono::DateTime<chrono::Utc> = meta["window"]["from"].as_str().unwrap().parse().unwrap();
    assert!(from < alerted - chrono::Duration::seconds(3), "reaches before the alert: {meta}");
    assert!(meta["segments"].as_array().is_some_and(|segments| segments.len() >= 2), "merged: {meta}");
    assert!(burning(&rows), "the burning function by name: {rows:?}");
}

/// Each way a perf capture fails ends the capture as failed, with a reason saying what
/// to do, and the service goes on: a pid that is gone, a cgroup that does not exist, a port
/// nothing listens on, and no permission (alertprof as another user, with no capability).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perf_failures_say_what_to_do() {
    let demo = Demo::start();
    let dir = tempfile::tempdir().unwrap();
    let closed = support::closed_port();
    let targets = [
        ("gone", "{pid: 4000000}", "process 4000000 does not exist"),
        ("nogroup", "{cgroup: /alertprof-test-no-such-group}", "alertprof-test-no-such-group"),
        ("noport", &format!("{{listen_port: {}}}", closed.port()), "no process listens on port"),
    ];
    let mut config = "storage: {dir: data}\ntargets:\n".to_string();
    for (name, process, _) in &targets {
        config
            .push_str(&format!("  - {{name: {name}, process: {process}, alert_labels: {{job: {name}}}}}\n"));
    }
    config.push_str(
        "rules:\n  - {name: cpu, alert_labels: {alertname: HighCPU}, capture: [perf], seconds: 1}\n",
    );
    let serve = Serve::start(dir.path(), &config, None).await;
    for (nth, (name, _, says)) in targets.iter().enumerate() {
        alert(&serve, name, json!({"job": name})).await;
        let decision = decision(&serve, nth + 1).await;
        assert_eq!(decision["outcome"], "capture_failed", "{decision}");
        let id = decision["captures"][0].as_str().unwrap();
        let meta = serve.get(&format!("/api/v1/captures/{id}")).await;
        assert!(meta["error"].as_str().unwrap().contains(says), "{name} should say {says:?}: {meta}");
    }
    assert_eq!(serve.get_raw("/-/ready").await.status(), 200);
    drop(serve);

    // Without the capability: another user, every capability out of its bounding set.
    let unprivileged = tempfile::tempdir().unwrap();
    let d = unprivileged.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = format!(
        "listen_address: 127.0.0.1:0\nstorage: {{dir: data}}\ntargets:\n  - {{name: shop, process: {{pid: {}}}, alert_labels: {{job: shop}}}}\n\
         rules:\n  - {{name: cpu, alert_labels: {{alertname: HighCPU}}, capture: [perf], seconds: 1}}\n",
        demo.child.0.id()
    );
    std::fs::write(d.join("alertprof.yaml"), config).unwrap();
    std::fs::set_permissions(d.join("alertprof.yaml"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut command = Command::new("setpriv");
    command.args([
        "--reuid=65532",
        "--regid=65532",
        "--clear-groups",
        "--no-new-privs",
        "--bounding-set=-all",
    ]);
    command.args([Serve::binary(), "serve", "--config", "alertprof.yaml"]);
    let serve = Serve::run(d, command).await;
    alert(&serve, "shop-1", json!({"job": "shop"})).await;
    let decision = decision(&serve, 1).await;
    assert_eq!(decision["outcome"], "capture_failed", "{decision}");
    let meta = serve.get(&format!("/api/v1/captures/{}", decision["captures"][0].as_str().unwrap())).await;
    let error = meta["error"].as_str().unwrap();
    assert!(error.contains("CAP_PERFMON") && error.contains("perf_event_paranoid"), "{meta}");
}
