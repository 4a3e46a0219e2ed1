//! The configs we ship, run as users run them: the compiled `alertprof serve` with each
//! shipped file (the example, the demo's, the one in each ConfigMap of deploy/), next to the
//! real parts the file names (the Go demo target, moto's S3 server for `object_store`, a
//! real Alertmanager for `alertmanager_api`, a Grafana stand-in). Each must start, answer
//! `/-/ready` and turn one alert into a capture that `go tool pprof` opens; a fleet config's
//! profiles must be in the bucket.
//!
//! Only what must differ on this machine is rewritten (addresses, ports, paths, secrets'
//! files), each edit asserted to match, so a change to a shipped file fails here rather
//! than testing something else; every other key runs as shipped. A new config key in a
//! shipped file gets its case here.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::cgroup::LiveCgroup;
use support::grafana::Grafana;
use support::moto::Moto;
use support::servers::{Server, alertmanager, wait_ready};
use support::shipped::{
    KEY_ID, SECRET_KEY, Shipped, Workload, reloads, serve_file, stops, systemd_stop_timeout,
};
use support::{Demo, Serve, client, eventually, payload, pprof_top};

/// A webhook payload of firing alerts, starting now, each its alertname as fingerprint.
fn firing(alerts: &[&serde_json::Map<String, Value>]) -> Value {
    let alerts: Vec<(Value, &str)> = alerts
        .iter()
        .map(|labels| (Value::Object((*labels).clone()), labels["alertname"].as_str().unwrap()))
        .collect();
    let mut body = payload(&alerts);
    for alert in body["alerts"].as_array_mut().unwrap() {
        alert["startsAt"] = json!(chrono::Utc::now().to_rfc3339());
    }
    body
}

/// The payload of `firing`, now resolved, as Alertmanager sends it with `send_resolved`.
fn resolved(mut body: Value) -> Value {
    body["status"] = json!("resolved");
    for alert in body["alerts"].as_array_mut().unwrap() {
        alert["status"] = json!("resolved");
        alert["endsAt"] = json!(chrono::Utc::now().to_rfc3339());
    }
    body
}

async fn post_webhook(serve: &Serve, token: Option<&str>, body: &Value) {
    let mut request = client().post(format!("{}/api/v1/alerts", serve.base)).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let answer = request.send().await.unwrap();
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
}

/// Waits for the decision on the firing alert `alertname` and checks it captured.
async fn captured(serve: &Serve, alertname: &str, within: Duration) -> Value {
    captured_by(serve, alertname, within, |d| d["alertname"] == alertname && d["source"] == "alertmanager")
        .await
}

/// Waits for the oldest decision `which` picks (`what`, for the failure) and checks it
/// captured.
async fn captured_by(serve: &Serve, what: &str, within: Duration, which: impl Fn(&Value) -> bool) -> Value {
    let decision = eventually(&format!("a decision on {what}"), within, async || {
        let decisions = serve.get("/api/v1/decisions?limit=1000").await;
        let found = decisions.as_array().unwrap().iter().rev().find(|d| which(d)).cloned();
        found.ok_or_else(|| decisions.to_string())
    })
    .await;
    assert_eq!(decision["outcome"], "captured", "{what}: {decision}");
    decision
}

/// Downloads each profile.proto capture of `decision` through the API and opens it with
/// `go tool pprof -top`, which must list rows; returns the metadata of each.
async fn open_captures(serve: &Serve, decision: &Value, dir: &Path) -> Vec<Value> {
    let downloads = dir.join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let mut opened = Vec::new();
    for id in decision["captures"].as_array().unwrap().iter().map(|id| id.as_str().unwrap()) {
        let meta = serve.get(&format!("/api/v1/captures/{id}")).await;
        assert_eq!(meta["status"], "ok", "{meta}");
        let file = meta["file"].as_str().unwrap().to_string();
        if !file.ends_with(".pb.gz") {
            continue;
        }
        let answer = serve.get_raw(&format!("/api/v1/captures/{id}/profile")).await;
        assert_eq!(answer.status(), 200, "{id}");
        std::fs::write(downloads.join(&file), answer.bytes().await.unwrap()).unwrap();
        let rows = pprof_top(&downloads.join(&file));
        assert!(!rows.is_empty(), "go tool pprof -top shows nothing of {id}: {meta}");
        // Its flame graph, rendered and kept where the config keeps profiles.
        let flame = serve.get_raw(&format!("/api/v1/captures/{id}/flamegraph.svg")).await;
        assert_eq!(flame.status(), 200, "{id}: {:?}", flame.text().await);
        assert!(flame.text().await.unwrap().starts_with("<?xml"), "{id}");
        opened.push(meta);
    }
    assert!(!opened.is_empty(), "no profile.proto capture: {decision}");
    // The capture's page, for someone who follows the annotation's link.
    let page = serve.get_raw(&format!("/captures/{}", opened[0]["id"].as_str().unwrap())).await;
    assert_eq!(page.status(), 200, "{:?}", page.text().await);
    opened
}

/// The kinds of captures, sorted, each once (a recorded target's heap or goroutine comes
/// with the recorder's snapshot from before the window, when it has one).
fn kinds(opened: &[Value]) -> Vec<&str> {
    let mut kinds: Vec<&str> = opened.iter().map(|meta| meta["kind"].as_str().unwrap()).collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

/// The profiles are in `storage.dir`, relative to the config file (`dir`), whatever the
/// working directory.
fn kept_beside(dir: &Path, shipped: &Shipped, opened: &[Value]) {
    let storage = dir.join(shipped.tree()["storage"]["dir"].as_str().unwrap());
    for meta in opened {
        let file = storage.join(meta["target"].as_str().unwrap()).join(meta["file"].as_str().unwrap());
        assert!(file.is_file(), "{} not kept", file.display());
    }
}

/// The profiles are in the bucket, where every instance of the fleet finds them.
async fn in_bucket(moto: &Moto, shipped: &Shipped, opened: &[Value]) {
    let (bucket, prefix) = shipped.bucket();
    let keys = moto.keys(&bucket, &format!("{prefix}/")).await;
    for meta in opened {
        let key = format!("{prefix}/{}/{}", meta["target"].as_str().unwrap(), meta["file"].as_str().unwrap());
        assert!(keys.contains(&key), "{key} not in the bucket: {keys:?}");
    }
}

/// `examples/alertprof.yaml`, the annotated example, run as systemd runs it: the demo
/// target recorded all the time; a `ProcessCPUHigh` alert on a burning target becomes a CPU
/// profile merged from the recorder over the rule's lookback, with the goroutine profile
/// beside it, and the README's test alert (`examples/test-alert.json`, a `GoroutineSpike`)
/// its goroutine and heap profiles, all kept beside the config file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_config() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start();
    let port = demo.addr.port();
    let mut shipped = Shipped::file("examples/alertprof.yaml");
    shipped.edit("listen_address: 127.0.0.1:9731", "listen_address: 127.0.0.1:0", 1);
    shipped.edit("pprof_url: http://127.0.0.1:6060", &format!("pprof_url: {}", demo.url()), 1);
    shipped.edit(
        "metrics_url: http://127.0.0.1:6060/metrics",
        &format!("metrics_url: {}/metrics", demo.url()),
        1,
    );
    shipped.edit("process: {listen_port: 6060}", &format!("process: {{listen_port: {port}}}"), 1);
    let serve = serve_file(dir.path(), &shipped).await;

    demo.get("/burn?seconds=30&workers=1").await;
    let mut cpu = shipped.alert_labels("cpu-spike");
    cpu.insert("job".into(), json!("demo"));
    post_webhook(&serve, None, &firing(&[&cpu])).await;
    // The README's test alert, as its one line sends it: startsAt filled in with now.
    let test_alert =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/test-alert.json"))
            .unwrap()
            .replace("@NOW@", &chrono::Utc::now().to_rfc3339());
    let test_alert: Value = serde_json::from_str(&test_alert).unwrap();
    let leak = test_alert["alerts"][0]["labels"].as_object().unwrap().clone();
    assert_eq!(
        json!(shipped.alert_labels("goroutine-leak")["alertname"]),
        leak["alertname"],
        "for the example's rule"
    );
    post_webhook(&serve, None, &test_alert).await;
    let by_rule = |rule: &'static str| move |d: &Value| d["rule"] == rule && d["source"] == "alertmanager";
    let decision = captured_by(&serve, "the CPU alert", Duration::from_secs(90), by_rule("cpu-spike")).await;
    let opened = open_captures(&serve, &decision, dir.path()).await;
    assert_eq!(kinds(&opened), ["cpu", "goroutine"], "{opened:?}");
    kept_beside(dir.path(), &shipped, &opened);
    let decision = captured(&serve, leak["alertname"].as_str().unwrap(), Duration::from_secs(30)).await;
    let opened = open_captures(&serve, &decision, dir.path()).await;
    assert_eq!(kinds(&opened), ["goroutine", "heap"], "{opened:?}");
    reloads(&serve, true).await;
    stops(serve, systemd_stop_timeout(), &[]).await;
}

/// `examples/demo/alertprof.yaml`, the config `examples/demo.sh` runs: with its bearer
/// token and Grafana, once the quiet service's baseline is taken, a `GoroutineSpike` alert
/// on 2000 parked goroutines is verified, captured and annotated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_config() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start();
    let (grafana, grafana_addr) = Grafana::start("glsa_demo", 0, false).await;
    let token = "am-demo-token";
    std::fs::write(dir.path().join("alertprof-token"), format!("{token}\n")).unwrap();
    std::fs::write(dir.path().join("grafana-token"), "glsa_demo\n").unwrap();
    let mut shipped = Shipped::file("examples/demo/alertprof.yaml");
    shipped.edit("listen_address: 127.0.0.1:@ALERTPROF_PORT@", "listen_address: 127.0.0.1:0", 1);
    // Links go to the port alertprof is told to listen on, which it picks itself here.
    shipped.edit("external_url: http://127.0.0.1:@ALERTPROF_PORT@", "external_url: http://127.0.0.1:0", 1);
    shipped.edit("@DEMO_PORT@", &demo.addr.port().to_string(), 3);
    shipped.edit("@GRAFANA_PORT@", &grafana_addr.port().to_string(), 1);
    let serve = serve_file(dir.path(), &shipped).await.with_bearer(token);

    // As the demo does: the baseline of the quiet service first, then the spike.
    eventually("a baseline", Duration::from_secs(60), async || {
        let decisions = serve.get("/api/v1/decisions").await;
        let mut baselines = decisions.as_array().unwrap().iter().filter(|d| d["source"] == "baseline");
        if baselines.any(|d| d["outcome"] == "captured") { Ok(()) } else { Err(decisions.to_string()) }
    })
    .await;
    demo.get("/goroutines?n=2000").await;
    demo.get("/burn?seconds=10&workers=1").await;
    // Prometheus alerts on what it scraped; alertprof verifies on what it sampled since.
    eventually("alertprof to see the goroutines", Duration::from_secs(30), async || {
        let metrics = serve.get_raw("/metrics").await.text().await.unwrap();
        let goroutines = support::metric(&metrics, "alertprof_signal{target=\"demo\",signal=\"goroutines\"}");
        (goroutines >= 2000.0).then_some(())
    })
    .await;
    let mut labels = shipped.alert_labels("goroutine-spike");
    labels.insert("job".into(), json!("demo"));
    let alertname = labels["alertname"].as_str().unwrap().to_string();
    post_webhook(&serve, Some(token), &firing(&[&labels])).await;
    let decision = captured(&serve, &alertname, Duration::from_secs(60)).await;
    let opened = open_captures(&serve, &decision, dir.path()).await;
    assert_eq!(kinds(&opened), ["cpu", "goroutine"], "{opened:?}");
    kept_beside(dir.path(), &shipped, &opened);

    let annotation = eventually("an annotation in Grafana", Duration::from_secs(30), async || {
        let annotations = grafana.annotations.lock().unwrap().clone();
        let ours = annotations.iter().find(|a| a["tags"].as_array().unwrap().contains(&json!(alertname)));
        ours.cloned().ok_or_else(|| format!("{annotations:?}"))
    })
    .await;
    let text = annotation["text"].as_str().unwrap();
    let linked = decision["captures"]
        .as_array()
        .unwrap()
        .iter()
        .any(|id| text.contains(&format!("/api/v1/captures/{}/profile", id.as_str().unwrap())));
    assert!(linked, "{annotation}");
    reloads(&serve, true).await;
    stops(serve, systemd_stop_timeout(), &[token, "glsa_demo"]).await;
}

/// The per-node agent (`deploy/kubernetes/agent-configmap.yaml`): it polls a real
/// Alertmanager for `ContainerCPUHigh` and `ContainerMemoryHigh` alerts whose `id` is a
/// cgroup of this host's live tree, verifies the container's CPU and memory on that cgroup
/// (a Go target burning its quota, holding most of its limit), captures it through the pod
/// address the alerts name, keeps the profiles in the S3 bucket, and records and watches a
/// node daemon beside it, whose goroutine leak it captures with no alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_configmap() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("alertmanager.yml"), "route: {receiver: none}\nreceivers: [{name: none}]\n")
        .unwrap();
    let (moto, am) = tokio::join!(Moto::start(), alertmanager(d));
    wait_ready(&am.url("/-/ready"), &am).await;
    // The container: the Go demo target in a cgroup made in the host's live tree, as a
    // container runtime makes one, with a CPU quota and a memory limit. The agent reads it
    // as shipped (the host's tree under cgroup_root, the alert's `id` relative to it), on
    // real readings of a real process, which a fixture tree could only imitate. 0.2 cores:
    // a burning worker uses its whole quota however loaded this machine is.
    let pod = Demo::start();
    let limit_mib = 128;
    let cgroup = LiveCgroup::create("pod", 0.2, limit_mib << 20);
    cgroup.add(pod.child.0.id());
    // The node's daemon is another process: the agent records its CPU all the time, and
    // Go's CPU profiler serves one client at a time.
    let daemon = Demo::start();
    // A container that serves no pprof (the same Go program, its pprof not named): the
    // agent samples its cgroup with perf events, which the DaemonSet must grant.
    let nopprof = Demo::start();
    let nopprof_cgroup = LiveCgroup::create("nopprof", 0.2, 256 << 20);
    nopprof_cgroup.add(nopprof.child.0.id());
    let token = "agent-token";
    let workload = Workload::read("deploy/kubernetes/agent-daemonset.yaml");
    assert!(workload.host_pid, "perf samples carry the host's pids only with hostPID");
    for needed in ["perfmon", "sys_ptrace"] {
        assert!(workload.capabilities.iter().any(|cap| cap == needed), "perf captures need {needed}");
    }

    let shipped = agent_config(d, &moto, &am, &pod, &daemon);
    let (bucket, _) = shipped.bucket();
    moto.create_bucket(&bucket).await;
    let config = workload.volumes(d, &shipped, token);
    let serve = workload.serve(d, &config).await.with_bearer(token);

    // The container spikes in both: its CPU quota used up, 7/8 of its memory limit held.
    pod.get("/burn?seconds=300&workers=1").await;
    pod.get(&format!("/hold?mb={}", limit_mib * 7 / 8)).await;
    nopprof.get("/burn?seconds=300&workers=1").await;
    // As cAdvisor's metrics give them, with the labels deploy/README.md's rule keeps.
    let (mut cpu, mut memory) = (shipped.alert_labels("cpu-spike"), shipped.alert_labels("memory-spike"));
    for labels in [&mut cpu, &mut memory] {
        for (name, value) in [
            ("alertprof", "true"),
            ("id", cgroup.id.as_str()),
            ("pod_ip", "127.0.0.1"),
            ("namespace", "shop"),
            ("pod", "checkout-0"),
        ] {
            labels.insert(name.into(), json!(value));
        }
    }
    let mut perf = shipped.alert_labels("cpu-spike-perf");
    for (name, value) in [("id", nopprof_cgroup.id.as_str()), ("namespace", "shop"), ("pod", "legacy-0")] {
        perf.insert(name.into(), json!(value));
    }
    let alerts = json!([{"labels": cpu}, {"labels": memory}, {"labels": perf}]);
    let answer = client().post(am.url("/api/v2/alerts")).json(&alerts).send().await.unwrap();
    assert!(answer.status().is_success(), "{answer:?}");

    // Meanwhile the node daemon leaks: the agent's watch rule sees it with no alert.
    let leak =
        shipped.tree()["rules"].as_array().unwrap().iter().find(|r| r["name"] == "node-daemon-leak").cloned();
    let abs = leak.expect("the watch rule")["verify"]["goroutines"]["abs"].as_u64().unwrap();
    daemon.get(&format!("/goroutines?n={}", abs + 1000)).await;

    let by_rule = |rule: &'static str| move |d: &Value| d["rule"] == rule && d["source"] == "alertmanager";
    let decision = captured_by(&serve, "the CPU alert", Duration::from_secs(90), by_rule("cpu-spike")).await;
    let reason = decision["reason"].as_str().unwrap();
    assert!(reason.contains("cpu_percent"), "verified on the cgroup's CPU: {decision}");
    assert!(reason.contains("(of the cgroup's quota of 0.2 CPU)"), "says what 100% is: {decision}");
    let opened = open_captures(&serve, &decision, d).await;
    assert_eq!(kinds(&opened), ["cpu", "goroutine"], "{opened:?}");
    in_bucket(&moto, &shipped, &opened).await;
    let decision = captured(&serve, memory["alertname"].as_str().unwrap(), Duration::from_secs(60)).await;
    let reason = decision["reason"].as_str().unwrap();
    assert!(reason.contains("memory_percent"), "verified on the cgroup's memory: {decision}");
    assert!(reason.contains("(of the memory limit of 128.00MiB)"), "says what 100% is: {decision}");
    let opened = open_captures(&serve, &decision, d).await;
    assert_eq!(kinds(&opened), ["goroutine", "heap"], "{opened:?}");
    in_bucket(&moto, &shipped, &opened).await;
    let decision = captured_by(
        &serve,
        "the CPU alert of a pod without pprof",
        Duration::from_secs(60),
        by_rule("cpu-spike-perf"),
    )
    .await;
    let reason = decision["reason"].as_str().unwrap();
    assert!(reason.contains("cpu_percent"), "verified on the cgroup's CPU: {decision}");
    let opened = open_captures(&serve, &decision, d).await;
    assert_eq!(kinds(&opened), ["perf"], "{opened:?}");
    let top: Vec<&str> = opened[0]["summary"]["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["function"].as_str().unwrap())
        .collect();
    assert!(top.contains(&"main.spin"), "the container's burning function, named from its binary: {top:?}");
    assert_eq!(opened[0]["perf"]["processes"], 1, "{:?}", opened[0]);
    in_bucket(&moto, &shipped, &opened).await;
    let watched = captured_by(&serve, "the node daemon's leak", Duration::from_secs(60), |d| {
        d["rule"] == "node-daemon-leak" && d["source"] == "watch" && d["outcome"] != "not_verified"
    })
    .await;
    let opened = open_captures(&serve, &watched, d).await;
    assert_eq!(kinds(&opened), ["goroutine", "heap"], "{opened:?}");
    in_bucket(&moto, &shipped, &opened).await;
    reloads(&serve, false).await;
    workload.stops(serve, &[token, KEY_ID, SECRET_KEY]).await;
}

/// The agent's ConfigMap, pointed at this machine: its files under `d`, moto, the one
/// Alertmanager, the pod and the node daemon, the host's cgroup tree and /proc.
fn agent_config(d: &Path, moto: &Moto, am: &Server, pod: &Demo, daemon: &Demo) -> Shipped {
    let mut shipped = Shipped::configmap("deploy/kubernetes/agent-configmap.yaml");
    let pod_port = pod.addr.port();
    shipped.edit("listen_address: 0.0.0.0:9731", "listen_address: 127.0.0.1:0", 1);
    shipped.edit("cgroup_root: /host/sys/fs/cgroup", "cgroup_root: /sys/fs/cgroup", 1);
    shipped.edit("proc_root: /host/proc", "proc_root: /proc", 1);
    shipped.edit("/etc/alertprof/", &format!("{}/etc/alertprof/", d.display()), 3);
    shipped.edit("dir: /var/lib/alertprof", &format!("dir: {}/var/lib/alertprof", d.display()), 1);
    shipped.edit("endpoint: http://minio.storage.svc:9000", &format!("endpoint: {}", moto.url), 1);
    // Both HA peers are this one Alertmanager: each holds every alert.
    for peer in ["alertmanager-0", "alertmanager-1"] {
        shipped.edit(&format!("http://{peer}.alertmanager.monitoring.svc:9093"), &am.url(""), 1);
    }
    shipped.edit("http://127.0.0.1:6061", &daemon.url(), 2);
    shipped.edit(
        "\"http://{{ labels.pod_ip }}:6060\"",
        &format!("\"http://{{{{ labels.pod_ip }}}}:{pod_port}\""),
        1,
    );
    shipped.edit("\"10.0.0.0/8:6060\"", &format!("\"127.0.0.0/8:{pod_port}\""), 1);
    shipped
}

/// The webhook receivers (`deploy/kubernetes/receiver-configmap.yaml`), as many replicas
/// as the Deployment has, sharing the S3 bucket: a `GoroutineSpike` webhook with the bearer
/// token, sent to each replica as HA Alertmanager peers send it, for the instance its
/// labels name (allowed by `allowed_targets`), is verified on that instance's `/metrics`
/// and captured once; every replica serves the profiles from the bucket. Resolved, it
/// brings the rule's baseline, once too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_configmap() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let moto = Moto::start().await;
    let demo = Demo::start();
    let token = "receiver-token";
    let workload = Workload::read("deploy/kubernetes/receiver-deployment.yaml");
    assert!(workload.replicas >= 2, "replicas: {}", workload.replicas);

    // Each replica is a pod of its own: its own files, under a directory of its own.
    let mut replicas = Vec::new();
    let mut shipped = None;
    for replica in 0..workload.replicas {
        let root = d.join(format!("pod-{replica}"));
        std::fs::create_dir(&root).unwrap();
        let config = receiver_config(&root, &moto, &demo);
        if replica == 0 {
            moto.create_bucket(&config.bucket().0).await;
        }
        let path = workload.volumes(&root, &config, token);
        replicas.push(workload.serve(&root, &path).await.with_bearer(token));
        shipped = Some(config);
    }
    let shipped = shipped.unwrap();

    demo.get("/goroutines?n=2000").await;
    let mut labels = shipped.alert_labels("goroutine-leak");
    let alertname = labels["alertname"].as_str().unwrap().to_string();
    for (name, value) in
        [("alertprof", "true"), ("instance", demo.addr.to_string().as_str()), ("job", "checkout")]
    {
        labels.insert(name.into(), json!(value));
    }
    let alert = firing(&[&labels]);
    let (winner, decision) = once(&replicas, token, &alert, &alertname).await;
    assert!(decision["reason"].as_str().unwrap().contains("goroutines"), "verified on /metrics: {decision}");
    let other = &replicas[(winner + 1) % replicas.len()];
    let opened = open_captures(other, &decision, d).await;
    assert_eq!(kinds(&opened), ["goroutine", "heap"], "{opened:?}");
    in_bucket(&moto, &shipped, &opened).await;

    // Resolved (Alertmanager's send_resolved): the rule's baseline of normal times.
    demo.get("/release-goroutines").await;
    let (winner, baseline) = once(&replicas, token, &resolved(alert), &alertname).await;
    let other = &replicas[(winner + 1) % replicas.len()];
    let opened = open_captures(other, &baseline, d).await;
    assert_eq!(kinds(&opened), ["goroutine", "heap"], "{opened:?}");
    assert!(opened.iter().all(|meta| meta["baseline"] == true), "{opened:?}");
    in_bucket(&moto, &shipped, &opened).await;
    for serve in replicas {
        reloads(&serve, false).await;
        workload.stops(serve, &[token, KEY_ID, SECRET_KEY]).await;
    }
}

/// The receivers' ConfigMap, pointed at this machine: a replica's files under `root`,
/// moto, and the Go demo target's port in `allowed_targets`.
fn receiver_config(root: &Path, moto: &Moto, demo: &Demo) -> Shipped {
    let mut config = Shipped::configmap("deploy/kubernetes/receiver-configmap.yaml");
    let port = demo.addr.port();
    config.edit("listen_address: 0.0.0.0:9731", "listen_address: 127.0.0.1:0", 1);
    config.edit("/etc/alertprof/", &format!("{}/etc/alertprof/", root.display()), 3);
    config.edit("dir: /var/lib/alertprof", &format!("dir: {}/var/lib/alertprof", root.display()), 1);
    config.edit("endpoint: http://minio.storage.svc:9000", &format!("endpoint: {}", moto.url), 1);
    config.edit("\"10.0.0.0/8:6060-6070\"", &format!("\"127.0.0.0/8:{port}-{port}\""), 1);
    config
}

/// Posts `body` to every replica at once; waits for each one's new decision on
/// `alertname`: one captured, the others found it a duplicate. Returns the index of the one
/// that captured, and its decision.
async fn once(replicas: &[Serve], token: &str, body: &Value, alertname: &str) -> (usize, Value) {
    let mut before = Vec::new();
    for serve in replicas {
        before.push(serve.get("/api/v1/decisions?limit=1000").await.as_array().unwrap().clone());
    }
    futures_util::future::join_all(replicas.iter().map(|serve| post_webhook(serve, Some(token), body))).await;
    let mut captured = None;
    for (index, serve) in replicas.iter().enumerate() {
        let what = format!("replica {index}'s decision on {alertname}");
        let decision = eventually(&what, Duration::from_secs(60), async || {
            let decisions = serve.get("/api/v1/decisions?limit=1000").await;
            let mut new = decisions.as_array().unwrap().iter().filter(|d| !before[index].contains(d));
            new.find(|d| d["alertname"] == alertname).cloned().ok_or_else(|| decisions.to_string())
        })
        .await;
        match decision["outcome"].as_str().unwrap() {
            "captured" if captured.is_none() => captured = Some((index, decision)),
            "duplicate" => {}
            _ => panic!("replica {index}: {decision}, captured by {captured:?}"),
        }
    }
    captured.expect("one replica captured")
}
