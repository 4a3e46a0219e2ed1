//! The files we ship and how they are run: a config as read from its file (or a
//! ConfigMap's) with the edits this machine needs, each asserted to match; the binary run
//! on it as systemd runs it, or as a Kubernetes workload of deploy/ runs it (its args, user,
//! groups, read-only root, memory limit, grace after SIGTERM).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::{Serve, client};

/// The bucket's keys in the ConfigMaps' secret files (moto takes any): never in the log.
pub const KEY_ID: &str = "AKIASHIPPEDCONFIGS01";
pub const SECRET_KEY: &str = "shipped-configs-secret-access-key";

/// A shipped config's text, as read from its file, and the edits this machine needs.
pub struct Shipped {
    path: &'static str,
    text: String,
}

impl Shipped {
    pub fn file(path: &'static str) -> Shipped {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
        Shipped { path, text }
    }

    /// The config inside a ConfigMap manifest (`data["alertprof.yaml"]`).
    pub fn configmap(path: &'static str) -> Shipped {
        let manifest: Value = serde_saphyr::from_str(&Shipped::file(path).text).unwrap();
        assert_eq!(manifest["kind"], "ConfigMap", "{path}");
        let text = manifest["data"]["alertprof.yaml"].as_str().unwrap_or_else(|| panic!("{path}: no config"));
        Shipped { path, text: text.to_string() }
    }

    /// Replaces `from`, which must occur exactly `times` times.
    pub fn edit(&mut self, from: &str, to: &str, times: usize) {
        let found = self.text.matches(from).count();
        assert_eq!(found, times, "{}: {from:?} found {found} times, not {times}:\n{}", self.path, self.text);
        self.text = self.text.replace(from, to);
    }

    /// The config, parsed: what the test reads from it (rule's alerts, the bucket).
    pub fn tree(&self) -> Value {
        serde_saphyr::from_str(&self.text).unwrap_or_else(|e| panic!("{}: {e}", self.path))
    }

    /// The labels an alert for the rule `name` must have, from its `alert_labels`.
    pub fn alert_labels(&self, rule: &str) -> serde_json::Map<String, Value> {
        let tree = self.tree();
        let found = tree["rules"].as_array().unwrap().iter().find(|r| r["name"] == rule);
        let found = found.unwrap_or_else(|| panic!("{}: no rule {rule}", self.path));
        found["alert_labels"].as_object().unwrap().clone()
    }

    /// The bucket and prefix of `storage.object_store.url` (`s3://BUCKET/PREFIX`).
    pub fn bucket(&self) -> (String, String) {
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

/// Runs the binary on a shipped file (written to `dir/alertprof.yaml`) as systemd runs it
/// (deploy/systemd): `serve --config FILE` in `/`, where the file's relative paths are
/// still relative to it. Checks it is ready.
pub async fn serve_file(dir: &Path, shipped: &Shipped) -> Serve {
    let path = dir.join("alertprof.yaml");
    std::fs::write(&path, &shipped.text).unwrap();
    check_config(&path);
    let mut command = Command::new(Serve::binary());
    command.arg("serve").arg("--config").arg(&path).current_dir("/");
    ready(Serve::run(dir, command).await).await
}

async fn ready(serve: Serve) -> Serve {
    let ready = serve.get_raw("/-/ready").await;
    assert_eq!(ready.status(), 200, "/-/ready");
    serve
}

/// How a Kubernetes workload of deploy/ runs alertprof: its container's args, its user
/// and groups, how long the kubelet waits after SIGTERM.
pub struct Workload {
    pub args: Vec<String>,
    pub user: u32,
    pub group: u32,
    pub fs_group: u32,
    /// The container's root filesystem is read-only: only the emptyDir may be written.
    pub read_only_root: bool,
    /// How many run (`spec.replicas` of a Deployment; one per node of a DaemonSet).
    pub replicas: usize,
    /// `resources.limits.memory`, in bytes.
    pub memory_limit: u64,
    /// Where Prometheus scrapes it (`prometheus.io/path`), with no credentials.
    pub metrics_path: String,
    pub grace: Duration,
    /// `capabilities.add`, lower case without `CAP_` (as setpriv names them): the only
    /// ones it holds, all others dropped.
    pub capabilities: Vec<String>,
    /// `hostPID`: the host's pids, which this machine's processes have anyway.
    pub host_pid: bool,
}

impl Workload {
    pub fn read(path: &'static str) -> Workload {
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
            capabilities: container_user["capabilities"]["add"]
                .as_array()
                .map(|added| added.iter().map(|c| c.as_str().unwrap().to_lowercase()).collect())
                .unwrap_or_default(),
            host_pid: pod["hostPID"] == true,
        }
    }

    /// The volumes as the pod has them, under `dir` instead of `/`: the config and the
    /// secrets' files in `etc/alertprof` (the projected volume: mode 0440, group fsGroup;
    /// alertprof's bearer token is `token`, moto takes any keys), `var/lib/alertprof` an
    /// emptyDir (0777, group fsGroup).
    pub fn volumes(&self, dir: &Path, shipped: &Shipped, token: &str) -> PathBuf {
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
    /// groups, only the capabilities it adds (after dropping all), no new privileges, and
    /// with a read-only root filesystem, in a mount namespace of its own where only the
    /// emptyDir under `dir` is writable.
    pub async fn serve(&self, dir: &Path, config: &Path) -> Serve {
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
            "--inh-caps=-all".into(),
            self.capabilities
                .iter()
                .fold("--bounding-set=-all".to_string(), |set, cap| format!("{set},+{cap}")),
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
        let effective = status.lines().find_map(|line| line.strip_prefix("CapEff:")).unwrap();
        let effective = u64::from_str_radix(effective.trim(), 16).unwrap();
        let added = self.capabilities.iter().fold(0u64, |mask, cap| mask | 1 << capability_number(cap));
        assert_eq!(effective, added, "holds only the capabilities it adds: {:?}", self.capabilities);
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
    pub async fn stops(&self, serve: Serve, secrets: &[&str]) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", serve.child.0.id())).unwrap();
        let peak = status.lines().find_map(|line| line.strip_prefix("VmHWM:")).unwrap();
        let peak: u64 = peak.trim().trim_end_matches(" kB").parse::<u64>().unwrap() * 1024;
        assert!(peak < self.memory_limit, "peak memory {peak} over the limit {}", self.memory_limit);
        stops(serve, self.grace, secrets).await;
    }
}

/// The number of a capability as Kubernetes names it (`PERFMON`, lower-cased).
fn capability_number(name: &str) -> u32 {
    match name {
        "sys_ptrace" => 19,
        "sys_admin" => 21,
        "perfmon" => 38,
        "bpf" => 39,
        _ => panic!("capability {name}: add its number"),
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
pub fn systemd_stop_timeout() -> Duration {
    let unit = Shipped::file("deploy/systemd/alertprof.service").text;
    let seconds = unit.lines().find_map(|line| line.strip_prefix("TimeoutStopSec=")).expect("TimeoutStopSec");
    Duration::from_secs(seconds.trim_end_matches('s').parse().expect("TimeoutStopSec=Ns"))
}

/// Re-reading the unchanged config (by SIGHUP, as systemd's `ExecReload` sends it, or by
/// `POST /-/reload`) keeps it, and finds no setting changed.
pub async fn reloads(serve: &Serve, by_signal: bool) {
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
pub async fn stops(serve: Serve, grace: Duration, secrets: &[&str]) {
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
