//! Intake from Alertmanager's API, as a per-node agent has it: real Alertmanager 0.25
//! holds the alerts (posted to its `POST /api/v2/alerts`), alertprof polls
//! `GET /api/v2/alerts` with its matchers, failing over from an Alertmanager that is down,
//! takes each firing alert once, verifies it on the alert's cgroup (cAdvisor's `id` label)
//! under a fixture `cgroup_root`, captures from the real Go demo target, and answers
//! `elsewhere`, counted and not listed, for an alert whose cgroup is not on this node, even
//! while the rule is in cooldown on the instance it names.

mod support;

use std::path::Path;
use std::time::Duration;

use axum::response::IntoResponse;
use serde_json::{Value, json};
use support::servers::{Server, alertmanager, wait_ready};
use support::{Demo, Running, closed_port};

const MIB: u64 = 1 << 20;

/// A cgroup v2 host with one container, `/kubepods/pod1/ctr`, using 600 of its 1000 MiB.
fn node(root: &Path) {
    let write = |path: &str, text: &str| {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("proc/self/mountinfo", "30 25 0:26 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n");
    write("proc/meminfo", "MemTotal: 16777216 kB\n");
    let ctr = "cgroup/kubepods/pod1/ctr";
    write(&format!("{ctr}/cpu.stat"), "usage_usec 1000\n");
    write(&format!("{ctr}/memory.current"), &format!("{}\n", 700 * MIB));
    write(&format!("{ctr}/memory.max"), &format!("{}\n", 1000 * MIB));
    write(&format!("{ctr}/memory.stat"), &format!("inactive_file {}\n", 100 * MIB));
}

async fn post_to_alertmanager(am: &Server, alerts: Value) {
    let answer = support::client().post(am.url("/api/v2/alerts")).json(&alerts).send().await.unwrap();
    assert!(answer.status().is_success(), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_agent_takes_its_alerts_from_alertmanagers_api() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("alertmanager.yml"), "route: {receiver: none}\nreceivers: [{name: none}]\n").unwrap();
    let am = alertmanager(dir.path()).await;
    wait_ready(&am.url("/-/ready"), &am).await;
    node(dir.path());
    let demo = Demo::start();
    let down = closed_port();
    let yaml = format!(
        r#"
storage: {{dir: "{{data}}/data"}}
cgroup_root: "{{data}}/cgroup"
proc_root: "{{data}}/proc"
alertmanager_api:
  urls: ["{down}", "http://{am}"]
  interval: 1s
  matchers: ['alertprof="true"', 'alertname=~"Container.*"']
targets:
  - name: pods
    pprof_url: "http://{{{{ labels.instance }}}}"
    allowed_targets: ["127.0.0.1:*"]
    process: {{cgroup: "{{{{ labels.id }}}}"}}
rules:
  - {{name: memory, alert_labels: {{alertname: ContainerMemoryHigh}}, capture: [heap],
     verify: {{memory_percent: {{abs: 50}}}}}}
"#,
        down = down.url(),
        am = am.address,
    );
    let running = Running::start(&yaml, dir.path()).await;
    let alert = |id: &str, alertprof: &str| {
        json!({"labels": {"alertname": "ContainerMemoryHigh", "alertprof": alertprof, "id": id,
                          "instance": demo.addr.to_string(), "pod": id}})
    };
    post_to_alertmanager(
        &am,
        json!([alert("/kubepods/pod1/ctr", "true"), alert("/kubepods/pod1/ctr2", "false")]),
    )
    .await;

    let decision = running.wait_decisions(1, Duration::from_secs(30)).await.remove(0);
    assert_eq!(decision["outcome"], "captured", "{decision}");
    let reason = decision["reason"].as_str().unwrap();
    assert!(reason.contains("memory_percent 60.0 >= abs 50"), "verified on the alert's cgroup: {reason}");
    // Another node's alert on the same instance, while the rule is in cooldown there: not
    // this instance's to refuse.
    post_to_alertmanager(&am, json!([alert("/kubepods/pod9/ctr", "true")])).await;
    running
        .wait_metric("alertprof_decisions_total{outcome=\"elsewhere\"}", Duration::from_secs(10), |n| {
            n == 1.0
        })
        .await;

    // Polled again and again, the same firing alerts are not taken again.
    let polls = "alertprof_alertmanager_polls_total{result=\"ok\"}";
    let polled = running.metric(polls).await;
    running.wait_metric(polls, Duration::from_secs(15), |n| n >= polled + 3.0).await;
    let decisions = running.get_json("/api/v1/decisions").await;
    assert_eq!(decisions.as_array().unwrap().len(), 1, "the elsewhere decision is not listed: {decisions}");
    assert_eq!(running.metric("alertprof_decisions_total{outcome=\"elsewhere\"}").await, 1.0);
    assert_eq!(running.metric("alertprof_alertmanager_alerts").await, 2.0, "the matchers leave one out");
    let captures = running.get_json("/api/v1/captures").await;
    let captures = captures.as_array().unwrap();
    assert_eq!(captures.len(), 1);
    assert_eq!(captures[0]["trigger"]["labels"]["id"], "/kubepods/pod1/ctr");
    assert_eq!(captures[0]["target"], "pods");
    running.stop().await;
}

/// One malformed alert in Alertmanager's answer (a label value that is a number, a
/// `startsAt` that is not a time) does not hold back the others: the good one is captured
/// on the first polls, the bad ones are skipped and counted once each, however often they
/// are listed. The answer comes from a stand-in, since Alertmanager itself refuses such
/// alerts; a proxy or another implementation of its API may not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_alert_does_not_hold_back_the_others() {
    support::logs();
    let demo = Demo::start();
    let answer = json!([
        {"labels": {"alertname": "Spike", "job": "demo", "replicas": 3}, "fingerprint": "bad-label",
         "startsAt": "2026-11-21T10:00:00Z", "status": {"state": "active"}},
        {"labels": {"alertname": "Spike", "job": "demo"}, "fingerprint": "good",
         "startsAt": chrono::Utc::now().to_rfc3339(), "status": {"state": "active"}},
        {"labels": {"alertname": "Spike", "job": "demo", "x": "y"}, "fingerprint": "bad-time",
         "startsAt": "yesterday", "status": {"state": "active"}},
    ]);
    let polled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = polled.clone();
    let api = support::fake_target(move || {
        let answer = answer.clone();
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move { axum::Json(answer).into_response() }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "storage: {{dir: \"{{data}}\"}}\n\
         alertmanager_api: {{urls: [\"http://{api}\"], interval: 1s}}\n\
         targets:\n{}\
         rules: [{{name: r, alert_labels: {{alertname: Spike}}, capture: [goroutine]}}]\n",
        demo.target()
    );
    let running = Running::start(&yaml, dir.path()).await;
    let decision = running.wait_outcome("captured", Duration::from_secs(20)).await;
    assert_eq!(decision["fingerprint"], "good", "{decision}");
    let polls = polled.load(std::sync::atomic::Ordering::SeqCst);
    support::eventually("three more polls", Duration::from_secs(15), async || {
        (polled.load(std::sync::atomic::Ordering::SeqCst) >= polls + 3).then_some(())
    })
    .await;
    assert_eq!(running.metric("alertprof_alertmanager_alerts_malformed_total").await, 2.0);
    let decisions = running.get_json("/api/v1/decisions").await;
    assert_eq!(decisions.as_array().unwrap().len(), 1, "{decisions}");
    let logged = support::logs().matches("An alert of Alertmanager's API cannot be read").count();
    assert_eq!(logged, 2, "{}", support::logs());
    running.stop().await;
}
