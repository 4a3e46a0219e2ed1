//! The YAML config: parsed once into a tree, then validated field by field into typed
//! values, reporting every problem with its place before anything runs. One file a
//! section: the service's own settings, targets, rules; the walker and units below them.

mod fleet;
mod recorder;
mod rules;
mod service;
mod targets;
mod units;
mod walk;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde_json::Value;

pub use fleet::{AlertmanagerApiConfig, ObjectStoreConfig};
pub use recorder::RecorderConfig;
use rules::read_rules;
pub use rules::{Baseline, EXIT_RULE, Rule};
pub use service::{
    Auth, CaptureConfig, Credentials, GateConfig, GrafanaConfig, HttpConfig, StorageConfig, WebhookConfig,
};
use service::{read_auth, read_capture, read_gate, read_grafana, read_http, read_storage, read_webhook};
pub use targets::{ProcessRef, Target};
use targets::{declared_targets, read_targets};
pub use units::{format_duration, parse_duration, parse_size};
pub use walk::Problem;
use walk::{Object, Walker};

use crate::model::name::is_safe_name;
use crate::model::{Secret, UrlSpec, UrlTemplate};

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
    #[error("{path}: {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
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

const DEFAULT_LISTEN: &str = "127.0.0.1:9731";
/// The largest config file read: far above any real one, and a bound on what a wrong path
/// (`/dev/zero`, a log file) costs, at start and on every reload.
const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// The largest secret file read: a token or a password, not a file of them.
const MAX_SECRET_BYTES: u64 = 64 << 10;

/// A file's text, if it is at most `max` bytes (`None` if larger): what is past the bound
/// is never read.
fn read_bounded(path: &Path, max: u64) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Ok(None);
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error))
}

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

fn read_config(w: &mut Walker, tree: &Value, base: &Path) -> Option<Config> {
    let top = w.object(
        "",
        tree,
        &[
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
            "alertmanager_api",
            "targets",
            "rules",
        ],
    )?;
    let listen_address = match top.get("listen_address") {
        Some((path, value)) => w.string(&path, value).and_then(|text| {
            text.parse::<SocketAddr>()
                .map_err(|_| {
                    w.report(&path, format!("{text:?} is not a host:port address like 127.0.0.1:9731"))
                })
                .ok()
        }),
        None => DEFAULT_LISTEN.parse().ok(),
    };
    let external_url = match top.get("external_url") {
        Some((path, value)) => read_url(w, &path, value),
        None => listen_address.and_then(|addr| Url::parse(&format!("http://{addr}")).ok()),
    };
    let sample_interval =
        optional(w, &top, "sample_interval", Duration::from_secs(5), Walker::positive_duration);
    let history = optional(w, &top, "history", 10, |w, p, v| w.integer(p, v, 2, 10_000).map(|n| n as usize));
    let cgroup_root = optional(w, &top, "cgroup_root", PathBuf::from("/sys/fs/cgroup"), |w, p, v| {
        w.string(p, v).map(|s| base.join(s))
    });
    let proc_root = optional(w, &top, "proc_root", PathBuf::from("/proc"), |w, p, v| {
        w.string(p, v).map(|s| base.join(s))
    });
    let auth = match top.get("auth") {
        Some((path, value)) => read_auth(w, &path, value, base).map(Some),
        None => Some(None),
    };
    let http = read_http(w, top.get("http"));
    let webhook = read_webhook(w, top.get("webhook"));
    let gate = read_gate(w, top.get("gate"));
    let capture = read_capture(w, top.get("capture"));
    let storage = read_storage(w, top.get("storage"), base);
    let grafana = match top.get("grafana") {
        Some((path, value)) => read_grafana(w, &path, value, base).map(Some),
        None => Some(None),
    };
    let alertmanager_api = match top.get("alertmanager_api") {
        Some((path, value)) => fleet::read_alertmanager_api(w, &path, value).map(Some),
        None => Some(None),
    };
    let targets = read_targets(w, top.get("targets"));
    let rules = read_rules(w, top.get("rules"), &declared_targets(top.get("targets")));
    if let (Some(targets), Some(rules)) = (&targets, &rules) {
        recorder::check_lookback(w, targets, rules);
    }
    Some(Config {
        listen_address: listen_address?,
        external_url: external_url?,
        sample_interval: sample_interval?,
        history: history?,
        cgroup_root: cgroup_root?,
        proc_root: proc_root?,
        auth: auth?,
        http: http?,
        webhook: webhook?,
        gate: gate?,
        capture: capture?,
        storage: storage?,
        grafana: grafana?,
        alertmanager_api: alertmanager_api?,
        targets: targets?,
        rules: rules?,
    })
}

/// Reads `key` with `read` if present, else the default.
pub(super) fn optional<T>(
    w: &mut Walker,
    object: &Object<'_>,
    key: &str,
    default: T,
    read: impl FnOnce(&mut Walker, &str, &Value) -> Option<T>,
) -> Option<T> {
    match object.get(key) {
        Some((path, value)) => read(w, &path, value),
        None => Some(default),
    }
}

/// An `http` or `https` URL with a host.
pub(super) fn read_url(w: &mut Walker, path: &str, value: &Value) -> Option<Url> {
    let text = w.string(path, value)?;
    if text.contains("{{") {
        w.report(path, "templated URLs are not supported here; list each target with its own URL");
        return None;
    }
    match Url::parse(text) {
        Ok(url) if url.fragment().is_some() => {
            w.report(path, format!("{text:?} has a fragment (#…), which is never sent; leave it out"));
            None
        }
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Some(url),
        Ok(_) => {
            w.report(path, format!("{text:?} must be an http:// or https:// URL with a host"));
            None
        }
        Err(error) => {
            w.report(path, format!("{text:?} is not a URL: {error}"));
            None
        }
    }
}

/// A target URL: fixed, or a `{{ labels.NAME }}` template.
pub(super) fn read_url_spec(w: &mut Walker, path: &str, value: &Value) -> Option<UrlSpec> {
    let text = w.string(path, value)?;
    if !text.contains("{{") && !text.contains("}}") {
        return read_url(w, path, value).map(UrlSpec::Fixed);
    }
    let template = UrlTemplate::parse(text).map_err(|error| w.report(path, error.to_string())).ok()?;
    match Url::parse(&template.sample()) {
        Ok(url) if url.fragment().is_some() => {
            w.report(path, format!("{text:?} has a fragment (#…), which is never sent; leave it out"));
            None
        }
        Ok(url) if matches!(url.scheme(), "http" | "https") => Some(UrlSpec::Template(template)),
        _ => {
            w.report(
                path,
                format!("{text:?} must be an http:// or https:// URL once its labels are filled in"),
            );
            None
        }
    }
}

/// Reads a secret from `<key>_file` (relative to the config), trimming one trailing newline.
pub(super) fn read_secret(w: &mut Walker, path: &str, value: &Value, base: &Path) -> Option<Secret> {
    let file = base.join(w.string(path, value)?);
    match read_bounded(&file, MAX_SECRET_BYTES) {
        Ok(None) => {
            let max = MAX_SECRET_BYTES >> 10;
            w.report(
                path,
                format!("{} is larger than {max} KiB; a secret file holds one secret", file.display()),
            );
            None
        }
        Ok(Some(text)) => {
            let secret = text.strip_suffix('\n').unwrap_or(&text);
            let secret = secret.strip_suffix('\r').unwrap_or(secret);
            if secret.is_empty() {
                w.report(path, format!("{} is empty", file.display()));
                return None;
            }
            Some(Secret::new(secret))
        }
        Err(error) => {
            w.report(path, format!("cannot read {}: {error}", file.display()));
            None
        }
    }
}

pub(super) fn read_name(
    w: &mut Walker,
    object: &Object<'_>,
    seen: &mut HashSet<String>,
    what: &str,
) -> Option<String> {
    let Some((path, value)) = object.get("name") else {
        w.report(&object.path, format!("{what} needs a name"));
        return None;
    };
    let name = w.string(&path, value)?;
    if !is_safe_name(name) {
        w.report(&path, format!("{name:?} must be 1-128 characters of a-z A-Z 0-9 _ . -"));
        return None;
    }
    if !seen.insert(name.to_string()) {
        w.report(&path, format!("duplicate {what} name {name:?}"));
        return None;
    }
    Some(name.to_string())
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
                "storage: {object_store: {url: gs://b/p, endpoint: minio:9000, region: \"eu west\", access_key_id_file: /nonexistent}}"
            ),
            [
                "storage.object_store.url: \"gs://b/p\" must be s3://BUCKET/PREFIX (S3 and S3-compatible stores)",
                "storage.object_store.endpoint: \"minio:9000\" must be an http:// or https:// URL with a host",
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
                "rules[2].baseline: target \"any\" has a templated URL; baseline.every needs fixed URLs",
                "rules[3].on_resolved: moved: write baseline: {on_resolved: true}",
                "rules[4].baseline.often: unknown key \"often\" (known: on_resolved, every)",
                "rules[4].baseline: needs on_resolved: true or every, or both",
                "rules[5].baseline.on_resolved: must be true or false",
            ]
        );
    }
}
