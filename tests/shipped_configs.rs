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

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::cgroup::LiveCgroup;
use support::grafana::Grafana;
use support::moto::Moto;
use support::servers::{alertmanager, wait_ready};
use support::{Demo, Serve, client, payload};

/// The bucket's keys in the ConfigMaps' secret files (moto takes any): never in the log.
const KEY_ID: &str = "AKIASHIPPEDCONFIGS01";
const SECRET_KEY: &str = "shipped-configs-secret-access-key";

/// A shipped config's text, as read from its file, and the edits this machine needs.
struct Shipped {
    path: &'static str,
    text: String,
}

impl Shipped {
    fn file(path: &'static str) -> Shipped {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
        Shipped { path, text }
    }

    /// The config inside a ConfigMap manifest (`data["alertprof.yaml"]`).
    fn configmap(path: &'static str) -> Shipped {
        let manifest: Value = serde_saphyr::from_str(&Shipped::file(path).text).unwrap();
        assert_eq!(manifest["kind"], "ConfigMap", "{path}");
        let text = manifest["data"]["alertprof.yaml"].as_str().unwrap_or_else(|| panic!("{path}: no config"));
        Shipped { path, text: text.to_string() }
    }

    /// Replaces `from`, which must occur exactly `times` times.
    fn edit(&mut self, from: &str, to: &str, times: usize) {
        let found = self.text.matches(from).count();
        assert_eq!(found, times, "{}: {from:?} found {found} times, not {times}:\n{}", self.path, self.text);
        self.text = self.text.replace(from, to);
    }

    /// The config, parsed: what the test reads from it (rule's alerts, the bucket).
    fn tree(&self) -> Value {
        serde_saphyr::from_str(&self.text).unwrap_or_else(|e| panic!("{}: {e}", self.path))
    }

    /// The labels an alert for the rule `name` must have, from its `alert_labels`.
    fn alert_labels(&self, rule: &str) -> serde_json::Map<String, Value> {
        let tree = self.tree();
        let found = tree["rules"].as_array().unwrap().iter().find(|r| r["name"] == rule);
        let found = found.unwrap_or_else(|| panic!("{}: no rule {rule}", self.path));
        found["alert_labels"].as_object().unwrap().clone()
    }

    /// The bucket and prefix of `storage.object_store.url` (`s3://BUCKET/PREFIX`).
    fn bucket(&self) -> (String, String) {
        let url = self.tree()["storage"]["object_store"]["url"].as_str().unwrap().to_string();
        let (bucket, prefix) = url.strip_prefix("s3://").unwrap().split_once('/').unwrap();
        (bucket.to_string(), prefix.to_string())
    }
}

/// `alertprof check-config` accepts the file `serve` is about to run (they must agree).
fn check_config(path: &Path) {
    let output = Command::new(Serve::binary()).arg("check-config").arg(path).output().unwrap();
    assert!(
        output.status.success(),
        "check-config {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs the binary on a shipped file (written to `dir/alertprof.yaml`) as a user on a host
/// does, `serve --config FILE`, and checks it is ready.
async fn serve_file(dir: &Path, shipped: &Shipped) -> Serve {
    let path = dir.join("alertprof.yaml");
    std::fs::write(&path, &shipped.text).unwrap();
    check_config(&path);
    let mut command = Command::new(Serve::binary());
    command.args(["serve", "--config", "alertprof.yaml"]);
    ready(Serve::run(dir, command).await).await
}

async fn ready(serve: Serve) -> Serve {
    let ready = serve.get_raw("/-/ready").await;
    assert_eq!(ready.status(), 200, "/-/ready");
    serve
}

/// How a Kubernetes workload of deploy/ runs alertprof: its container's args, its user
/// and groups, how long the kubelet waits after SIGTERM.
struct Workload {
    args: Vec<String>,
    user: u32,
    group: u32,
    fs_group: u32,
    /// The container's root filesystem is read-only: only the emptyDir may be written.
    read_only_root: bool,
    /// How many run (`spec.replicas` of a Deployment; one per node of a DaemonSet).
    replicas: usize,
    /// `resources.limits.memory`, in bytes.
    memory_limit: u64,
    /// Where Prometheus scrapes it (`prometheus.io/path`), with no credentials.
    metrics_path: String,
    grace: Duration,
}

impl Workload {
    fn read(path: &'static str) -> Workload {
        let manifest: Value = serde_saphyr::from_str(&Shipped::file(path).text).unwrap();
        let pod = &manifest["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let id = |value: &Value| value.as_u64().map(|id| id as u32);
        let (pod_user, container_user) = (&pod["securityContext"], &container["securityContext"]);
        Workload {
            args: container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().into()).collect(),
            user: id(&container_user["runAsUser"]).or(id(&pod_user["runAsUser"])).expect("runAsUser"),
            group: id(&container_user["runAsGroup"]).or(id(&pod_user["runAsGroup"])).expect("runAsGroup"),
            fs_group: id(&pod_user["fsGroup"]).expect("fsGroup"),
            read_only_root: container_user["readOnlyRootFilesystem"] == true,
            replicas: manifest["spec"]["replicas"].as_u64().unwrap_or(1) as usize,
            memory_limit: bytes(container["resources"]["limits"]["memory"].as_str().unwrap()),
            metrics_path: manifest["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]
                .as_str()
                .unwrap()
                .to_string(),
            grace: Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap()),
        }
    }

    /// The volumes as the pod has them, under `dir` instead of `/`: the config and the
    /// secrets' files in `etc/alertprof` (the projected volume: mode 0440, group fsGroup;
    /// alertprof's bearer token is `token`, moto takes any keys), `var/lib/alertprof` an
    /// emptyDir (0777, group fsGroup).
    fn volumes(&self, dir: &Path, shipped: &Shipped, token: &str) -> PathBuf {
        use std::os::unix::fs::{PermissionsExt, chown};
        let mode = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        mode(dir, 0o755);
        let etc = dir.join("etc/alertprof");
        let files = [
            ("alertprof.yaml", shipped.text.as_str()),
            ("auth/token", token),
            ("s3/access_key_id", KEY_ID),
            ("s3/secret_access_key", SECRET_KEY),
        ];
        for (file, text) in files {
            let path = etc.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, format!("{}\n", text.trim_end())).unwrap();
            chown(&path, Some(0), Some(self.fs_group)).unwrap();
            mode(&path, 0o440);
        }
        let data = dir.join("var/lib/alertprof");
        std::fs::create_dir_all(&data).unwrap();
        chown(&data, Some(0), Some(self.fs_group)).unwrap();
        mode(&data, 0o777);
        etc.join("alertprof.yaml")
    }

    /// Runs the binary as the pod does: its args (the config at `config`), its user and
    /// groups, no capabilities, no new privileges, and with a read-only root filesystem,
    /// in a mount namespace of its own where only the emptyDir under `dir` is writable.
    async fn serve(&self, dir: &Path, config: &Path) -> Serve {
        check_config(config);
        let mut command = Command::new("setpriv");
        if self.read_only_root {
            let script = "set -e; mount --make-rprivate /; mount --bind \"$1\" \"$1\"; \
                          mount -o remount,bind,ro /; shift; exec setpriv \"$@\"";
            let data = dir.join("var/lib/alertprof");
            command = Command::new("unshare");
            command.args(["-m", "sh", "-c", script, "sh"]).arg(data);
        }
        command.args([
            format!("--reuid={}", self.user),
            format!("--regid={}", self.group),
            format!("--groups={}", self.fs_group),
            "--no-new-privs".into(),
            "--bounding-set=-all".into(),
            Serve::binary().into(),
        ]);
        let shipped = "/etc/alertprof/alertprof.yaml";
        assert!(self.args.iter().any(|arg| arg == shipped), "{:?} names {shipped}", self.args);
        let config = config.display().to_string();
        command.args(self.args.iter().map(|arg| if arg == shipped { &config } else { arg }));
        let serve = ready(Serve::run(dir, command).await).await;
        let status = std::fs::read_to_string(format!("/proc/{}/status", serve.child.0.id())).unwrap();
        let uid = status.lines().find_map(|line| line.strip_prefix("Uid:")).unwrap();
        assert_eq!(
            uid.split_whitespace().next(),
            Some(self.user.to_string().as_str()),
            "runs as the pod's user"
        );
        let metrics = client().get(format!("{}{}", serve.base, self.metrics_path)).send().await.unwrap();
        assert_eq!(metrics.status(), 200, "scraped with no credentials");
        assert!(metrics.text().await.unwrap().contains("alertprof_"));
        if self.read_only_root {
            let mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", serve.child.0.id())).unwrap();
            let root = mounts.lines().map(|line| line.split(' ').collect::<Vec<_>>()).find(|m| m[4] == "/");
            assert!(root.unwrap()[5].split(',').any(|option| option == "ro"), "a read-only root: {mounts}");
        }
        serve
    }

    /// The pod's end: alertprof's peak memory so far within the container's limit, then
    /// SIGTERM within the pod's grace period, no secret logged.
    async fn stops(&self, serve: Serve, secrets: &[&str]) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", serve.child.0.id())).unwrap();
        let peak = status.lines().find_map(|line| line.strip_prefix("VmHWM:")).unwrap();
        let peak: u64 = peak.trim().trim_end_matches(" kB").parse::<u64>().unwrap() * 1024;
        assert!(peak < self.memory_limit, "peak memory {peak} over the limit {}", self.memory_limit);
        stops(serve, self.grace, secrets).await;
    }
}

/// A Kubernetes quantity of bytes: `256Mi`, `1Gi`, `64Ki`.
fn bytes(quantity: &str) -> u64 {
    let (number, unit) = quantity.split_at(quantity.find(|c: char| !c.is_ascii_digit()).unwrap());
    let unit = match unit {
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => panic!("unit of {quantity}"),
    };
    number.parse::<u64>().unwrap() * unit
}

/// How long systemd waits after SIGTERM (`TimeoutStopSec` of deploy/systemd's unit).
fn systemd_stop_timeout() -> Duration {
    let unit = Shipped::file("deploy/systemd/alertprof.service").text;
    let seconds = unit.lines().find_map(|line| line.strip_prefix("TimeoutStopSec=")).expect("TimeoutStopSec");
    Duration::from_secs(seconds.trim_end_matches('s').parse().expect("TimeoutStopSec=Ns"))
}

/// Re-reading the unchanged config (by SIGHUP, as systemd's `ExecReload` sends it, or by
/// `POST /-/reload`) keeps it, and finds no setting changed.
async fn reloads(serve: &Serve, by_signal: bool) {
    if by_signal {
        serve.signal("-HUP");
    } else {
        let answer = client()
            .post(format!("{}/-/reload", serve.base))
            .bearer_auth(serve.bearer().unwrap_or_default())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    }
    serve.wait_log("Config reloaded.", Duration::from_secs(10)).await;
    let log = serve.log();
    let changed: Vec<&str> = log.lines().filter(|line| line.contains("Changed setting")).collect();
    assert!(changed.is_empty(), "the file did not change: {changed:#?}");
}

/// SIGTERM ends the service with 0 within `grace`, while it records and polls; no secret
/// was ever logged.
async fn stops(serve: Serve, grace: Duration, secrets: &[&str]) {
    let log = serve.log_path().to_path_buf();
    let status = serve.terminate(grace).await;
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("alertprof stopped."), "{log}");
    for secret in secrets {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
    for line in log.lines().filter(|line| line.starts_with('{')) {
        json_keys_once(line);
    }
}

/// A JSON log line is an object whose every key is there once: no field of an event (say,
/// the `target` a profile is of) is shadowed by one of the formatter's own.
fn json_keys_once(line: &str) {
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Keys, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Keys, M::Error> {
                    let mut keys = Vec::new();
                    while let Some(key) = map.next_key::<String>()? {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        keys.push(key);
                    }
                    Ok(Keys(keys))
                }
            }
            deserializer.deserialize_map(Visitor)
        }
    }
    let Keys(mut keys) = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    keys.sort();
    let twice: Vec<&String> =
        keys.windows(2).filter(|pair| pair[0] == pair[1]).map(|pair| &pair[0]).collect();
    assert!(twice.is_empty(), "{twice:?} twice in a JSON log line: {line}");
}

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
    let deadline = Instant::now() + within;
    loop {
        let decisions = serve.get("/api/v1/decisions?limit=1000").await;
        if let Some(decision) = decisions.as_array().unwrap().iter().rev().find(|d| which(d)) {
            assert_eq!(decision["outcome"], "captured", "{what}: {decision}");
            return decision.clone();
        }
        assert!(Instant::now() < deadline, "no decision on {what} after {within:?}: {decisions}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The rows of `go tool pprof -top` for a profile; it must open it.
fn pprof_top(file: &Path) -> Vec<String> {
    let output = Command::new("go").args(["tool", "pprof", "-top"]).arg(file).output().expect("go runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "go tool pprof -top {}: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let rows = text.lines().skip_while(|line| !line.trim_start().starts_with("flat")).skip(1);
    rows.filter(|line| !line.trim().is_empty()).map(str::to_string).collect()
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
        opened.push(meta);
    }
    assert!(!opened.is_empty(), "no profile.proto capture: {decision}");
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

/// The profiles are in the bucket, where every instance of the fleet finds them.
async fn in_bucket(moto: &Moto, shipped: &Shipped, opened: &[Value]) {
    let (bucket, prefix) = shipped.bucket();
    let keys = moto.keys(&bucket, &format!("{prefix}/")).await;
    for meta in opened {
        let key = format!("{prefix}/{}/{}", meta["target"].as_str().unwrap(), meta["file"].as_str().unwrap());
        assert!(keys.contains(&key), "{key} not in the bucket: {keys:?}");
    }
}

/// `examples/alertprof.yaml`, the annotated example: the demo target recorded all the time,
/// and a `ProcessCPUHigh` alert on a burning target becomes a CPU profile merged from the
/// recorder over the rule's lookback, with the goroutine profile beside it.
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
    let (mut cpu, mut leak) = (shipped.alert_labels("cpu-spike"), shipped.alert_labels("goroutine-leak"));
    for labels in [&mut cpu, &mut leak] {
        labels.insert("job".into(), json!("demo"));
    }
    post_webhook(&serve, None, &firing(&[&cpu, &leak])).await;
    let decision = captured(&serve, cpu["alertname"].as_str().unwrap(), Duration::from_secs(90)).await;
    let opened = open_captures(&serve, &decision, dir.path()).await;
    assert_eq!(kinds(&opened), ["cpu", "goroutine"], "{opened:?}");
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
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let decisions = serve.get("/api/v1/decisions").await;
        let baselines = decisions.as_array().unwrap().iter().filter(|d| d["source"] == "baseline");
        if baselines.clone().any(|d| d["outcome"] == "captured") {
            break;
        }
        assert!(Instant::now() < deadline, "no baseline: {decisions}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    demo.get("/goroutines?n=2000").await;
    demo.get("/burn?seconds=10&workers=1").await;
    // Prometheus alerts on what it scraped; alertprof verifies on what it sampled since.
    let deadline = Instant::now() + Duration::from_secs(30);
    while support::metric(
        &serve.get_raw("/metrics").await.text().await.unwrap(),
        "alertprof_signal{target=\"demo\",signal=\"goroutines\"}",
    ) < 2000.0
    {
        assert!(Instant::now() < deadline, "alertprof does not see the goroutines");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut labels = shipped.alert_labels("goroutine-spike");
    labels.insert("job".into(), json!("demo"));
    let alertname = labels["alertname"].as_str().unwrap().to_string();
    post_webhook(&serve, Some(token), &firing(&[&labels])).await;
    let decision = captured(&serve, &alertname, Duration::from_secs(60)).await;
    let opened = open_captures(&serve, &decision, dir.path()).await;
    assert_eq!(kinds(&opened), ["cpu", "goroutine"], "{opened:?}");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let annotations = grafana.annotations.lock().unwrap().clone();
        let ours = annotations.iter().find(|a| a["tags"].as_array().unwrap().contains(&json!(alertname)));
        if let Some(annotation) = ours {
            let text = annotation["text"].as_str().unwrap();
            let linked = decision["captures"]
                .as_array()
                .unwrap()
                .iter()
                .any(|id| text.contains(&format!("/api/v1/captures/{}/profile", id.as_str().unwrap())));
            assert!(linked, "{annotation}");
            break;
        }
        assert!(Instant::now() < deadline, "no annotation in Grafana: {annotations:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    let token = "agent-token";
    let workload = Workload::read("deploy/kubernetes/agent-daemonset.yaml");

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
    let (bucket, _) = shipped.bucket();
    moto.create_bucket(&bucket).await;
    let config = workload.volumes(d, &shipped, token);
    let serve = workload.serve(d, &config).await.with_bearer(token);

    // The container spikes in both: its CPU quota used up, 7/8 of its memory limit held.
    pod.get("/burn?seconds=300&workers=1").await;
    pod.get(&format!("/hold?mb={}", limit_mib * 7 / 8)).await;
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
    let alerts = json!([{"labels": cpu}, {"labels": memory}]);
    let answer = client().post(am.url("/api/v2/alerts")).json(&alerts).send().await.unwrap();
    assert!(answer.status().is_success(), "{answer:?}");

    // Meanwhile the node daemon leaks: the agent's watch rule sees it with no alert.
    let leak =
        shipped.tree()["rules"].as_array().unwrap().iter().find(|r| r["name"] == "node-daemon-leak").cloned();
    let abs = leak.expect("the watch rule")["verify"]["goroutines"]["abs"].as_u64().unwrap();
    daemon.get(&format!("/goroutines?n={}", abs + 1000)).await;

    let decision = captured(&serve, cpu["alertname"].as_str().unwrap(), Duration::from_secs(90)).await;
    let reason = decision["reason"].as_str().unwrap();
    assert!(reason.contains("cpu_percent"), "verified on the cgroup's CPU: {decision}");
    let opened = open_captures(&serve, &decision, d).await;
    assert_eq!(kinds(&opened), ["cpu", "goroutine"], "{opened:?}");
    in_bucket(&moto, &shipped, &opened).await;
    let decision = captured(&serve, memory["alertname"].as_str().unwrap(), Duration::from_secs(60)).await;
    let reason = decision["reason"].as_str().unwrap();
    assert!(reason.contains("memory_percent"), "verified on the cgroup's memory: {decision}");
    let opened = open_captures(&serve, &decision, d).await;
    assert_eq!(kinds(&opened), ["goroutine", "heap"], "{opened:?}");
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
        let mut config = Shipped::configmap("deploy/kubernetes/receiver-configmap.yaml");
        let port = demo.addr.port();
        config.edit("listen_address: 0.0.0.0:9731", "listen_address: 127.0.0.1:0", 1);
        config.edit("/etc/alertprof/", &format!("{}/etc/alertprof/", root.display()), 3);
        config.edit("dir: /var/lib/alertprof", &format!("dir: {}/var/lib/alertprof", root.display()), 1);
        config.edit("endpoint: http://minio.storage.svc:9000", &format!("endpoint: {}", moto.url), 1);
        config.edit("\"10.0.0.0/8:6060-6070\"", &format!("\"127.0.0.0/8:{port}-{port}\""), 1);
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
        let deadline = Instant::now() + Duration::from_secs(60);
        let decision = loop {
            let decisions = serve.get("/api/v1/decisions?limit=1000").await;
            let mut new = decisions.as_array().unwrap().iter().filter(|d| !before[index].contains(d));
            if let Some(decision) = new.find(|d| d["alertname"] == alertname) {
                break decision.clone();
            }
            assert!(Instant::now() < deadline, "replica {index}: no decision on {alertname}: {decisions}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        match decision["outcome"].as_str().unwrap() {
            "captured" if captured.is_none() => captured = Some((index, decision)),
            "duplicate" => {}
            _ => panic!("replica {index}: {decision}, captured by {captured:?}"),
        }
    }
    captured.expect("one replica captured")
}
