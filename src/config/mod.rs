//! The YAML config: parsed once into a tree, then validated field by field into typed
//! values, reporting every problem with its place before anything runs. One file a
//! section (`service`, `fleet`, `targets` with their `recorder`, `rules`); below them the
//! readers they share (`values`, `walk`, `units`); `checks` across sections once each is
//! read. This file only assembles them into a `Config`; no file imports one above it.

mod checks;
mod fleet;
mod pyroscope;
mod recorder;
mod rules;
mod service;
mod targets;
mod units;
mod values;
mod walk;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde_json::Value;

use checks::{check_kinds, check_lookback, check_pyroscope};
use fleet::read_alertmanager_api;
pub use fleet::{AlertmanagerApiConfig, ObjectStoreConfig};
use pyroscope::read_pyroscope;
pub use pyroscope::{MAX_SERVICE_NAME_BYTES, PyroscopeConfig};
pub use recorder::RecorderConfig;
use rules::read_rules;
pub use rules::{Baseline, EXIT_RULE, Rule};
pub use service::{
    Auth, CaptureConfig, Credentials, GateConfig, GrafanaConfig, HttpConfig, StorageConfig, WebhookConfig,
};
use service::{
    Basics, read_auth, read_basics, read_capture, read_gate, read_grafana, read_http, read_storage,
    read_webhook,
};
pub use targets::{ProcessRef, Target};
use targets::{declared_targets, read_targets};
pub use units::{UnitError, format_duration, parse_duration, parse_size};
use values::read_bounded;
pub use walk::Problem;
use walk::{Walker, optional};

/// The whole validated config. Everything here has been checked; code downstream never
/// re-validates it.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen_address: SocketAddr,
    /// How links in annotations and logs reach this service.
    pub external_url: Url,
    /// How often each target's signals are read.
    pub sample_interval: Duration,
    /// Samples kept per signal, the window `diff` averages over.
    pub history: usize,
    pub cgroup_root: PathBuf,
    pub proc_root: PathBuf,
    pub auth: Option<Auth>,
    pub http: HttpConfig,
    pub webhook: WebhookConfig,
    pub gate: GateConfig,
    pub capture: CaptureConfig,
    pub storage: StorageConfig,
    pub grafana: Option<GrafanaConfig>,
    /// Where kept profiles are pushed, and where people look at them.
    pub pyroscope: Option<PyroscopeConfig>,
    /// Alertmanager's API, polled for alerts.
    pub alertmanager_api: Option<AlertmanagerApiConfig>,
    pub targets: Vec<Target>,
    pub rules: Vec<Rule>,
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot read config {path}: larger than {} MiB; is it the config file?", MAX_CONFIG_BYTES >> 20)]
    TooLarge { path: PathBuf },
    #[error("{path}: not valid YAML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: {}:\n{}", crate::model::text::counted(problems.len(), "problem"), problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

impl ConfigError {
    /// Every problem, one line each, as `check-config` prints them.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid { problems, .. } => problems.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

/// The largest config file read: far above any real one, and a bound on what a wrong path
/// (`/dev/zero`, a log file) costs, at start and on every reload.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

impl Config {
    /// Reads and validates a config file. Relative paths in it (secret files, storage dir)
    /// are taken relative to the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = match read_bounded(path, MAX_CONFIG_BYTES) {
            Ok(Some(text)) => text,
            Ok(None) => return Err(ConfigError::TooLarge { path: path.to_path_buf() }),
            Err(source) => return Err(ConfigError::Read { path: path.to_path_buf(), source }),
        };
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::parse(&text, &base).map_err(|error| match error {
            ParseError::Syntax(message) => ConfigError::Syntax { path: path.to_path_buf(), message },
            ParseError::Invalid(problems) => ConfigError::Invalid { path: path.to_path_buf(), problems },
        })
    }

    /// Validates config text; `base` resolves relative paths.
    /// An empty file (or one of comments only) is refused: it is more often a file caught
    /// while being written than a wish for every default, which `{}` says.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ParseError> {
        let tree: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_saphyr::from_str(text).map_err(|error| ParseError::Syntax(error.to_string()))?
        };
        if tree.is_null() {
            let message = "the file is empty; write {} for every default";
            return Err(ParseError::Invalid(vec![Problem { path: String::new(), message: message.into() }]));
        }
        let mut walker = Walker::default();
        let config = read_config(&mut walker, &tree, base);
        match config {
            Some(config) if walker.problems.is_empty() => Ok(config),
            _ => {
                if walker.problems.is_empty() {
                    walker.report("", "invalid config");
                }
                Err(ParseError::Invalid(walker.problems))
            }
        }
    }

    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|target| &*target.name == name)
    }
}

/// Why config text could not be used.
#[derive(Debug, Clone, PartialEq)]
pub enum ParseError {
    Syntax(String),
    Invalid(Vec<Problem>),
}

/// The keys of the top level: the service's own settings, then its sections.
const TOP_KEYS: &[&str] = &[
    "listen_address",
    "external_url",
    "sample_interval",
    "history",
    "cgroup_root",
    "proc_root",
    "auth",
    "http",
    "webhook",
    "gate",
    "capture",
    "storage",
    "grafana",
    "pyroscope",
    "alertmanager_api",
    "targets",
    "rules",
];

/// Reads the sections one after the other, the order their problems are listed in, then
/// checks across them.
fn read_config(w: &mut Walker, tree: &Value, base: &Path) -> Option<Config> {
    let top = w.object("", tree, TOP_KEYS)?;
    let basics = read_basics(w, &top, base);
    let auth = optional(w, &top, "auth", None, |w, p, v| read_auth(w, p, v, base).map(Some));
    let http = read_http(w, top.get("http"));
    let webhook = read_webhook(w, top.get("webhook"));
    let gate = read_gate(w, top.get("gate"));
    let capture = read_capture(w, top.get("capture"));
    let storage = read_storage(w, top.get("storage"), base);
    let grafana = optional(w, &top, "grafana", None, |w, p, v| read_grafana(w, p, v, base).map(Some));
    let pyroscope = optional(w, &top, "pyroscope", None, |w, p, v| read_pyroscope(w, p, v, base).map(Some));
    let alertmanager_api =
        optional(w, &top, "alertmanager_api", None, |w, p, v| read_alertmanager_api(w, p, v).map(Some));
    let targets = read_targets(w, top.get("targets"));
    let rules = read_rules(w, top.get("rules"), &declared_targets(top.get("targets")));
    if let (Some(targets), Some(rules)) = (&targets, &rules) {
        check_kinds(w, targets, rules);
        check_lookback(w, targets, rules);
    }
    if let (Some(Some(pyroscope)), Some(targets)) = (&pyroscope, &targets) {
        check_pyroscope(w, pyroscope, targets);
    }
    let Basics { listen_address, external_url, sample_interval, history, cgroup_root, proc_root } = basics?;
    Some(Config {
        listen_address,
        external_url,
        sample_interval,
        history,
        cgroup_root,
        proc_root,
        auth: auth?,
        http: http?,
        webhook: webhook?,
        gate: gate?,
        capture: capture?,
        storage: storage?,
        grafana: grafana?,
        pyroscope: pyroscope?,
        alertmanager_api: alertmanager_api?,
        targets: targets?,
        rules: rules?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use crate::model::{ProfileKind, Signal, SignalCheck, Threshold};

    /// The config of DESIGN.md reads into the values it states, defaults filled in.
    #[test]
    fn design_example() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token.txt"), "tok\n").unwrap();
        std::fs::write(dir.path().join("grafana-token.txt"), "glsa_x").unwrap();
        let text = r#"
listen_address: 127.0.0.1:9731
external_url: http://127.0.0.1:9731
auth: {bearer_token_file: token.txt}
storage:
  dir: ./alertprof-data
  retention: {max_age: 7d, max_bytes: 1GiB}
grafana:
  url: http://127.0.0.1:3000
  token_file: grafana-token.txt
  dashboard_uid: alertprof
  tags: [alertprof]
targets:
  - name: checkout
    pprof_url: http://127.0.0.1:6060
    metrics_url: http://127.0.0.1:6060/metrics
    process: {listen_port: 6060}
    alert_labels: {job: checkout}
rules:
  - name: cpu-spike
    alert_labels: {alertname: HighCPU}
    targets: [checkout]
    watch: {interval: 1s}
    verify:
      cpu_percent: {min: 20, abs: 70, diff: 25, max: 400}
      metric: {name: go_foo, labels: {a: b}, abs: 3}
    capture: [cpu, goroutine]
    seconds: 10
    cooldown: 5m
"#;
        let config = Config::parse(text, dir.path()).unwrap();
        assert_eq!(config.sample_interval, Duration::from_secs(5));
        assert_eq!(config.history, 10);
        assert_eq!(config.gate.max_in_flight, 4);
        assert_eq!(config.gate.queue_size, 1024);
        assert_eq!(config.storage.dir, dir.path().join("./alertprof-data"));
        assert_eq!(config.storage.max_bytes, Some(1 << 30));
        let auth = config.auth.as_ref().unwrap();
        assert!(matches!(&auth.credentials, Credentials::Bearer(token) if token.expose() == "tok"));
        assert!(!auth.protect_metrics && !auth.protect_health);
        let grafana = config.grafana.as_ref().unwrap();
        assert_eq!(grafana.token.as_ref().unwrap().expose(), "glsa_x");
        assert_eq!(format!("{grafana:?}").matches("glsa_x").count(), 0, "secrets never print");
        let target = &config.targets[0];
        assert_eq!(target.process, Some(ProcessRef::ListenPort(6060)));
        let rule = &config.rules[0];
        assert_eq!(rule.targets, vec![0]);
        assert_eq!(rule.watch, Some(Duration::from_secs(1)));
        assert_eq!(rule.capture, vec![ProfileKind::Cpu, ProfileKind::Goroutine]);
        assert_eq!(rule.cooldown, Duration::from_secs(300));
        assert_eq!(
            rule.verify[0],
            SignalCheck {
                signal: Signal::CpuPercent,
                threshold: Threshold {
                    min: Some(20.0),
                    abs: Some(70.0),
                    diff: Some(25.0),
                    max: Some(400.0),
                    zscore: None
                }
            }
        );
        assert!(matches!(&rule.verify[1].signal, Signal::Metric { name, .. } if name == "go_foo"));
    }

    /// The problems `check-config` would list for `text`, one line each.
    fn problems(text: &str) -> Vec<String> {
        let Err(ParseError::Invalid(problems)) = Config::parse(text, Path::new(".")) else {
            panic!("accepted:\n{text}")
        };
        problems.iter().map(ToString::to_string).collect()
    }

    /// An empty file is refused, `{}` is every default; thresholds that can never trigger
    /// and clashing options are problems.
    #[test]
    fn defaults_and_impossible_thresholds() {
        for empty in ["", "\n  \n", "# nothing yet\n"] {
            assert_eq!(problems(empty), ["the file is empty; write {} for every default"]);
        }
        let config = Config::parse("{}", Path::new("/etc/alertprof")).unwrap();
        assert_eq!(config.listen_address.to_string(), "127.0.0.1:9731");
        assert_eq!(config.external_url.as_str(), "http://127.0.0.1:9731/");
        assert_eq!(config.storage.dir, Path::new("/etc/alertprof/alertprof-data"));
        let text = r#"
targets: [{name: t, pprof_url: "http://h:1", process: {pid: 1, listen_port: 2}}]
rules:
  - {name: a, watch: {interval: 1s}, capture: [heap]}
  - {name: b, alert_labels: {x: y}, verify: {goroutines: {min: 10, max: 5}}, capture: [heap]}
  - {name: c, watch: {interval: 1s}, baseline: {on_resolved: true}, verify: {threads: {abs: 1}}, capture: [heap]}
"#;
        let lines = problems(text);
        assert_eq!(
            lines,
            [
                "targets[0].process: give exactly one of listen_port, pid, cgroup",
                "rules[0]: a watch rule needs verify: the signals that trigger it",
                "rules[1].verify.goroutines.max: 5 must be above min/abs 10, or nothing triggers",
                "rules[2].baseline.on_resolved: needs alert_labels: watch rules have no resolved alerts",
            ]
        );
    }

    /// A URL with a fragment is refused, fixed or templated (the fragment is never sent,
    /// and a path appended after it would be part of it); a query is kept.
    #[test]
    fn urls_with_a_fragment_are_refused() {
        let text = r#"
targets:
  - {name: a, pprof_url: "http://h:1/?q=1#frag"}
  - {name: b, pprof_url: "http://{{ labels.instance }}/#x", allowed_targets: ["10.0.0.0/8:1"]}
  - {name: c, pprof_url: "http://h:1/base?token=t"}
"#;
        assert_eq!(
            problems(text),
            [
                "targets[0].pprof_url: \"http://h:1/?q=1#frag\" has a fragment (#…), which is never sent; leave it out",
                "targets[1].pprof_url: \"http://{{ labels.instance }}/#x\" has a fragment (#…), which is never sent; leave it out",
            ]
        );
    }

    /// `host:port` is taken as `http://host:port`, as `alertprof capture` takes it, fixed or
    /// templated; a scheme other than http(s) is still refused, named as written.
    #[test]
    fn urls_without_a_scheme_are_http() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"
targets:
  - {name: a, pprof_url: "127.0.0.1:6060", metrics_url: "127.0.0.1:6060/metrics"}
  - {name: b, pprof_url: "{{ labels.instance }}", allowed_targets: ["10.0.0.0/8:6060"]}
"#;
        let config = Config::parse(text, dir.path()).unwrap();
        let a = config.targets[0].endpoint.as_ref().unwrap();
        assert_eq!(a.pprof_url.as_ref().unwrap().as_str(), "http://127.0.0.1:6060/");
        assert_eq!(a.metrics_url.as_ref().unwrap().as_str(), "http://127.0.0.1:6060/metrics");
        let labels = [("instance".to_string(), "10.1.2.3:6060".to_string())].into();
        let b = config.targets[1].endpoint_for(&labels).unwrap();
        assert_eq!(b.pprof_url.as_ref().unwrap().as_str(), "http://10.1.2.3:6060/");
        assert_eq!(
            problems("targets: [{name: a, pprof_url: \"ftp://h:1\"}]"),
            ["targets[0].pprof_url: \"ftp://h:1\" must be an http:// or https:// URL with a host"]
        );
    }

    /// `gate.dedupe_ignore_labels`: label names, each once; every mistake named.
    #[test]
    fn dedupe_ignore_labels() {
        let config =
            Config::parse("gate: {dedupe_ignore_labels: [replica, prometheus_replica]}", Path::new("/"));
        assert_eq!(config.unwrap().gate.dedupe_ignore_labels, ["replica", "prometheus_replica"]);
        assert!(Config::parse("{}", Path::new("/")).unwrap().gate.dedupe_ignore_labels.is_empty());
        assert_eq!(
            problems("gate: {dedupe_ignore_labels: [replica, 1x, replica, 7]}"),
            [
                "gate.dedupe_ignore_labels[1]: \"1x\" is not a valid label name",
                "gate.dedupe_ignore_labels[2]: \"replica\" is listed twice",
                "gate.dedupe_ignore_labels[3]: must be a string, not a number",
            ]
        );
        assert_eq!(
            problems("gate: {dedupe_ignore_labels: replica}"),
            ["gate.dedupe_ignore_labels: must be a list, not a string"]
        );
    }

    /// `storage.object_store`: an s3:// URL with a real bucket name and a safe prefix, an
    /// http(s) endpoint, both key files or neither; every mistake named.
    #[test]
    fn object_store() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("id"), "AKIA\n").unwrap();
        std::fs::write(dir.path().join("secret"), "s3cr3t\n").unwrap();
        let text = "storage: {object_store: {url: s3://profiles/fleet/eu/, endpoint: http://minio:9000, \
                    region: eu-west-1, access_key_id_file: id, secret_access_key_file: secret}}";
        let config = Config::parse(text, dir.path()).unwrap();
        let store = config.storage.object_store.unwrap();
        assert_eq!((store.bucket.as_str(), store.prefix.as_str()), ("profiles", "fleet/eu"));
        assert_eq!(store.url(), "s3://profiles/fleet/eu");
        assert_eq!(store.access_key_id.unwrap().expose(), "AKIA");
        let bare = Config::parse("storage: {object_store: {url: s3://profiles}}", dir.path()).unwrap();
        let bare = bare.storage.object_store.unwrap();
        assert!(bare.prefix.is_empty() && bare.access_key_id.is_none() && bare.endpoint.is_none());
        assert_eq!(
            problems(
                "storage: {object_store: {url: gs://b/p, endpoint: \"ftp://minio:9000\", region: \"eu west\", access_key_id_file: /nonexistent}}"
            ),
            [
                "storage.object_store.url: \"gs://b/p\" must be s3://BUCKET/PREFIX (S3 and S3-compatible stores)",
                "storage.object_store.endpoint: \"ftp://minio:9000\" must be an http:// or https:// URL with a host",
                "storage.object_store.region: \"eu west\" is not a region name (like us-east-1)",
                "storage.object_store.access_key_id_file: cannot read /nonexistent: No such file or directory (os error 2)",
            ]
        );
        assert_eq!(
            problems("storage: {object_store: {url: s3://Bad_Bucket/../x}}"),
            ["storage.object_store.url: \"Bad_Bucket\" is not a bucket name: 3-63 of a-z 0-9 . -"]
        );
        assert_eq!(
            problems("storage: {object_store: {url: s3://ok-bucket/../x}}"),
            ["storage.object_store.url: \"../x\": a prefix is parts of a-z A-Z 0-9 - _ . between slashes"]
        );
        assert_eq!(
            problems("storage: {object_store: {endpoint: http://minio:9000}}"),
            ["storage.object_store: needs url: s3://BUCKET/PREFIX"]
        );
    }

    /// `alertmanager_api` and a templated target's cgroup: what an agent polling
    /// Alertmanager needs, each mistake named.
    #[test]
    fn alertmanager_api_and_templated_cgroups() {
        let text = r#"
alertmanager_api: {urls: [http://am-0:9093, http://am-1:9093], matchers: ['alertprof="true"', 'severity!=info']}
targets:
  - {name: pods, pprof_url: "http://{{ labels.instance }}", allowed_targets: ["10.0.0.0/8:6060"],
     process: {cgroup: "{{ labels.id }}"}}
"#;
        let config = Config::parse(text, Path::new("/")).unwrap();
        let api = config.alertmanager_api.unwrap();
        assert_eq!((api.urls.len(), api.interval, api.matchers.len()), (2, Duration::from_secs(5), 2));
        let labels = |id: &str| {
            BTreeMap::from([
                ("instance".to_string(), "10.1.2.3:6060".to_string()),
                ("id".to_string(), id.to_string()),
            ])
        };
        let endpoint =
            config.targets[0].endpoint_for(&labels("/kubepods.slice/pod_1.slice/cri-a1.scope")).unwrap();
        assert_eq!(endpoint.cgroup.as_deref(), Some(Path::new("kubepods.slice/pod_1.slice/cri-a1.scope")));
        for bad in ["/kubepods/../../etc", "/a b", "/"] {
            let error = config.targets[0].endpoint_for(&labels(bad)).unwrap_err();
            assert!(error.to_string().contains("cgroup path"), "{bad}: {error}");
        }
        assert_eq!(
            problems(
                "alertmanager_api: {urls: [], interval: 100ms, matchers: [alertprof, '1x=\"y\"', 'a=\"b']}\n\
                 targets:\n\
                 - {name: a, pprof_url: \"http://{{ labels.instance }}\", allowed_targets: [\"h:1\"], process: {pid: 1}}\n\
                 - {name: b, pprof_url: \"http://h:1\", process: {cgroup: \"{{ labels.id }}\"}}\n"
            ),
            [
                "alertmanager_api.urls: lists no Alertmanager; give at least one URL",
                "alertmanager_api.interval: must be at least 1s: every poll lists every matching alert",
                "alertmanager_api.matchers[0]: \"alertprof\" is not a matcher like alertprof=\"true\"",
                "alertmanager_api.matchers[1]: \"1x=\\\"y\\\"\": \"1x\" is not a label name",
                "alertmanager_api.matchers[2]: \"a=\\\"b\": the value's quotes are not closed",
                "targets[0].process: a templated target has no one local process; give its cgroup from the alert's labels, as {cgroup: \"{{ labels.id }}\"}",
                "targets[1].process.cgroup: templates need a templated pprof_url: the process is the alert's",
            ]
        );
        assert_eq!(
            problems("alertmanager_api: {interval: 5s}"),
            ["alertmanager_api: needs urls: the Alertmanagers to poll, e.g. [http://alertmanager:9093]"]
        );
    }

    /// Baselines: on resolve or periodic, each mistake named; the old `on_resolved` key
    /// says where it went.
    #[test]
    fn baselines() {
        let text = r#"
targets:
  - {name: t, pprof_url: "http://h:1"}
  - {name: any, pprof_url: "http://{{ labels.instance }}", allowed_targets: ["10.0.0.0/8:6060"]}
rules:
  - {name: a, alert_labels: {x: y}, targets: [t], capture: [heap], baseline: {on_resolved: true, every: 2h}}
"#;
        let config = Config::parse(text, Path::new(".")).unwrap();
        let rule = &config.rules[0];
        assert_eq!(rule.baseline, Baseline { on_resolved: true, every: Some(Duration::from_secs(7200)) });
        let text = r#"
targets:
  - {name: t, pprof_url: "http://h:1"}
  - {name: any, pprof_url: "http://{{ labels.instance }}", allowed_targets: ["10.0.0.0/8:6060"]}
rules:
  - {name: a, alert_labels: {x: y}, targets: [t], capture: [heap], baseline: {every: 30s}}
  - {name: b, alert_labels: {x: y}, targets: [t], capture: [heap], baseline: {}}
  - {name: c, alert_labels: {x: y}, capture: [heap], baseline: {every: 1h}}
  - {name: d, alert_labels: {x: y}, capture: [heap], on_resolved: true}
  - {name: e, alert_labels: {x: y}, capture: [heap], baseline: {often: 1h}}
  - {name: f, alert_labels: {x: y}, capture: [heap], baseline: {on_resolved: 3}}
"#;
        let lines = problems(text);
        assert_eq!(
            lines,
            [
                "rules[0].baseline.every: must be at least 1m: a baseline is a full capture",
                "rules[1].baseline: needs on_resolved: true or every, or both",
                "rules[2].baseline: target \"any\" is templated from alert labels; baseline.every needs a fixed target",
                "rules[3].on_resolved: moved: write baseline: {on_resolved: true}",
                "rules[4].baseline.often: unknown key \"often\" (known: on_resolved, every)",
                "rules[4].baseline: needs on_resolved: true or every, or both",
                "rules[5].baseline.on_resolved: must be true or false",
            ]
        );
    }

    /// `targets[].recorder`: every key is optional (`{}` records everything at the
    /// defaults); `off` (YAML's `false`) leaves a kind out; a rule reaches back through a
    /// target's recorder.
    #[test]
    fn recorder_defaults_and_off() {
        let yaml = "targets:\n\
                    - {name: a, pprof_url: \"http://127.0.0.1:1\", recorder: {}}\n\
                    - {name: b, pprof_url: \"http://127.0.0.1:2\", recorder: {cpu: off, goroutine: false, cpu_duty: 0.5}}\n\
                    rules:\n\
                    - {name: r, watch: {interval: 1s}, verify: {cpu_percent: {zscore: 3}}, capture: [heap], lookback: 2m}\n";
        let config = Config::parse(yaml, Path::new("/nonexistent")).unwrap();
        let a = config.targets[0].recorder.as_ref().unwrap();
        assert_eq!(a, &RecorderConfig::default());
        assert_eq!(a.describe(), "cpu 10s, heap 15s, goroutine 15s; keeps 5m, 64 MiB");
        let b = config.targets[1].recorder.as_ref().unwrap();
        assert_eq!(b.kinds(), [ProfileKind::Heap]);
        assert_eq!(config.rules[0].lookback, Some(Duration::from_secs(120)));
        assert_eq!(config.rules[0].verify[0].threshold.zscore, Some(3.0));
    }

    /// `targets[].recorder` and `rules[].lookback`: each mistake is named at its place.
    #[test]
    fn recorder_mistakes_are_named() {
        let yaml = "targets:\n\
                    - {name: a, pprof_url: \"http://127.0.0.1:1\", recorder: {cpu: 1500ms, keep: 20s, max_bytes: 1000, cpu_duty: 2}}\n\
                    - {name: b, pprof_url: \"http://127.0.0.1:2\", recorder: {cpu: off, heap: off, goroutine: off}}\n\
                    - {name: f, pprof_url: \"http://127.0.0.1:6\", recorder: {heap: 1ms, goroutine: 2h, keep: 24h}}\n\
                    - {name: c, pprof_url: \"http://{{ labels.instance }}\", allowed_targets: [\"10.0.0.0/8:6060\"], recorder: {}}\n\
                    - {name: d, pprof_url: \"http://127.0.0.1:4\"}\n\
                    - {name: e, pprof_url: \"http://127.0.0.1:5\", recorder: {heap: 10s, cpu: off, goroutine: off, keep: 1m}}\n\
                    rules:\n\
                    - {name: exit, alert_labels: {a: b}, capture: [cpu]}\n\
                    - {name: r1, alert_labels: {a: b}, capture: [cpu], targets: [d], lookback: 1m}\n\
                    - {name: r2, alert_labels: {a: b}, capture: [cpu], targets: [e], lookback: 1m}\n\
                    - {name: r3, alert_labels: {a: b}, capture: [heap], targets: [e], lookback: 2m}\n\
                    - {name: r4, alert_labels: {a: b}, capture: [heap], verify: {goroutines: {zscore: 0}}}\n";
        let expected = [
            "targets[0].recorder.cpu: 1s500ms must be whole seconds from 1s to 1m",
            "targets[0].recorder.cpu_duty: 2 must be above 0 and at most 1",
            "targets[0].recorder.keep: 20s keeps less than two of heap's 15s periods",
            "targets[0].recorder.max_bytes: 1000 bytes is too little",
            "targets[1].recorder: records nothing",
            "targets[2].recorder.heap: 1ms must be from 1s to 1h",
            "targets[2].recorder.goroutine: 2h must be from 1s to 1h",
            "targets[3].recorder: a templated target has no one instance to record",
            "rules[0].name: \"exit\" names the captures of a process's last profiles",
            "rules[4].verify.goroutines.zscore: must be above 0",
        ];
        let found = problems(yaml);
        for wanted in expected {
            assert!(found.iter().any(|p| p.starts_with(wanted)), "{wanted:?} not in {found:#?}");
        }
        // Rules are checked against targets once both are valid.
        let yaml = yaml
            .lines()
            .filter(|l| !["name: a,", "name: b,", "name: c,", "name: f,"].iter().any(|name| l.contains(name)))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("{name: exit,", "{name: x,")
            .replace("zscore: 0", "zscore: 1");
        let found = problems(&yaml);
        let expected = [
            "rules[1].lookback: target \"d\" has no recorder to reach back into",
            "rules[2].lookback: target \"e\" records heap, none of the kinds the rule captures",
            "rules[3].lookback: 2m reaches further back than target \"e\"'s recorder keeps (1m)",
        ];
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for (problem, wanted) in found.iter().zip(expected) {
            assert!(problem.starts_with(wanted), "{problem:?} should start with {wanted:?}");
        }
    }
}
