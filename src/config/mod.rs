//! The YAML config: parsed once into a tree, then validated field by field into typed
//! values, reporting every problem with its place before anything runs.

mod units;
mod walk;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use serde_json::Value;

use crate::capture::ProfileKind;
use crate::rules::endpoint::{AllowedTarget, Endpoint, UrlSpec, UrlTemplate};
pub use units::{format_duration, parse_duration, parse_size};
use walk::{Object, Walker, field, index};
pub use walk::{Problem, is_label_name};

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
    pub webhook: WebhookConfig,
    pub gate: GateConfig,
    pub capture: CaptureConfig,
    pub storage: StorageConfig,
    pub grafana: Option<GrafanaConfig>,
    pub targets: Vec<Target>,
    pub rules: Vec<Rule>,
}

/// A secret read from a file. Never printed: `Debug` shows `<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// Who may call `/api/*` and `POST /-/reload`, and optionally `/metrics` and health.
#[derive(Debug, Clone)]
pub struct Auth {
    pub credentials: Credentials,
    /// Whether `/metrics` needs the credentials too (Prometheus then sends them).
    pub protect_metrics: bool,
    /// Whether `/-/healthy` and `/-/ready` need them (probes usually cannot).
    pub protect_health: bool,
}

#[derive(Debug, Clone)]
pub enum Credentials {
    Bearer(Secret),
    Basic { username: String, password: Secret },
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Larger request bodies are refused with 413 before they are parsed.
    pub max_body_bytes: u64,
    /// Payloads with more alerts are refused with 413: the work per payload stays bounded.
    pub max_alerts: usize,
}

#[derive(Debug, Clone)]
pub struct GateConfig {
    /// Captures running at once over all targets.
    pub max_in_flight: usize,
    /// Jobs waiting for a worker; beyond it the webhook answers 503 so Alertmanager retries.
    pub queue_size: usize,
    /// How long a (fingerprint, startsAt, rule) key is remembered. Alertmanager resends a
    /// firing alert with the same startsAt for as long as it fires.
    pub dedupe_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Added to a timed profile's seconds to make its timeout; the whole timeout of others.
    pub timeout_margin: Duration,
    /// Larger bodies are cut off and the capture fails.
    pub max_profile_bytes: u64,
    /// On shutdown, how long captures in flight may still run before they are cancelled.
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub dir: PathBuf,
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct GrafanaConfig {
    pub url: Url,
    pub token: Option<Secret>,
    pub dashboard_uid: Option<String>,
    pub tags: Vec<String>,
    /// Tries per annotation when Grafana answers 5xx or not at all.
    pub max_attempts: u32,
    /// Wait before the first retry, doubled after each.
    pub retry_backoff: Duration,
}

/// A target's or rule's name: shared, not copied, by every job and decision that names it.
pub type Name = std::sync::Arc<str>;

#[derive(Debug, Clone)]
pub struct Target {
    pub name: Name,
    /// Base URL; `/debug/pprof/...` is appended. May be templated from alert labels.
    pub pprof_url: UrlSpec,
    pub metrics_url: Option<UrlSpec>,
    /// Where templated URLs may lead; required with them.
    pub allowed_targets: Vec<AllowedTarget>,
    /// The URLs ready for jobs when none is templated: built once, shared by every job.
    pub endpoint: Option<Arc<Endpoint>>,
    pub process: Option<ProcessRef>,
    /// An alert whose labels include all of these is for this target.
    pub alert_labels: BTreeMap<String, String>,
}

/// How to find a target's local process for cgroup and /proc readings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessRef {
    ListenPort(u16),
    Pid(u32),
    /// Relative to `cgroup_root`.
    Cgroup(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: Name,
    /// Alerts this rule handles; `None` for watch-only rules.
    pub alert_labels: Option<BTreeMap<String, String>>,
    /// Indices into `Config::targets`.
    pub targets: Vec<usize>,
    pub watch: Option<Duration>,
    pub verify: Vec<SignalCheck>,
    pub capture: Vec<ProfileKind>,
    pub seconds: u32,
    pub cooldown: Duration,
    /// When to capture baselines, the normal-times profiles spikes are compared with.
    pub baseline: Baseline,
}

/// `baseline:` of a rule. A baseline captures the rule's kinds while the rule's signals
/// are quiet; spikes captured later name what grew against it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Baseline {
    /// When the rule's alert resolves.
    pub on_resolved: bool,
    /// Periodically, when the rule's signals are quiet and it is out of cooldown.
    pub every: Option<Duration>,
}

impl Baseline {
    /// Shortest `every`: a baseline is a full capture, not a sample.
    pub const MIN_EVERY: Duration = Duration::from_secs(60);
}

/// A signal a rule re-checks locally before capturing.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalCheck {
    pub signal: Signal,
    pub threshold: Threshold,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    CpuPercent,
    MemoryPercent,
    Goroutines,
    Threads,
    HeapPercent,
    Metric { name: String, labels: BTreeMap<String, String> },
}

impl Signal {
    /// The key of its readings: the name, and for a metric its label matchers too
    /// (`http_requests_total{code="500"}`).
    pub fn key(&self) -> String {
        match self {
            Signal::Metric { name, labels } if !labels.is_empty() => {
                let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                format!("{name}{{{}}}", parts.join(","))
            }
            other => other.name().to_string(),
        }
    }

    pub const BUILTIN: [&'static str; 5] =
        ["cpu_percent", "memory_percent", "goroutines", "threads", "heap_percent"];

    pub fn name(&self) -> &str {
        match self {
            Signal::CpuPercent => "cpu_percent",
            Signal::MemoryPercent => "memory_percent",
            Signal::Goroutines => "goroutines",
            Signal::Threads => "threads",
            Signal::HeapPercent => "heap_percent",
            Signal::Metric { name, .. } => name,
        }
    }
}

/// holmes' trigger: `cur >= min` and not `cur >= max`, and `cur >= abs` or
/// `cur >= avg(history) * (1 + diff/100)`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Threshold {
    pub min: Option<f64>,
    pub abs: Option<f64>,
    pub diff: Option<f64>,
    pub max: Option<f64>,
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
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

impl Config {
    /// Reads and validates a config file. Relative paths in it (secret files, storage dir)
    /// are taken relative to the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::parse(&text, &base).map_err(|error| match error {
            ParseError::Syntax(message) => ConfigError::Syntax { path: path.to_path_buf(), message },
            ParseError::Invalid(problems) => ConfigError::Invalid { path: path.to_path_buf(), problems },
        })
    }

    /// Validates config text; `base` resolves relative paths.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ParseError> {
        let tree: Value = if text.trim().is_empty() {
            Value::Object(Default::default())
        } else {
            serde_saphyr::from_str(text).map_err(|error| ParseError::Syntax(error.to_string()))?
        };
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
            "webhook",
            "gate",
            "capture",
            "storage",
            "grafana",
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
    let webhook = read_webhook(w, top.get("webhook"));
    let gate = read_gate(w, top.get("gate"));
    let capture = read_capture(w, top.get("capture"));
    let storage = read_storage(w, top.get("storage"), base);
    let grafana = match top.get("grafana") {
        Some((path, value)) => read_grafana(w, &path, value, base).map(Some),
        None => Some(None),
    };
    let targets = read_targets(w, top.get("targets"));
    let rules = read_rules(w, top.get("rules"), &declared_targets(top.get("targets")));
    Some(Config {
        listen_address: listen_address?,
        external_url: external_url?,
        sample_interval: sample_interval?,
        history: history?,
        cgroup_root: cgroup_root?,
        proc_root: proc_root?,
        auth: auth?,
        webhook: webhook?,
        gate: gate?,
        capture: capture?,
        storage: storage?,
        grafana: grafana?,
        targets: targets?,
        rules: rules?,
    })
}

/// Reads `key` with `read` if present, else the default.
fn optional<T>(
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
fn read_url(w: &mut Walker, path: &str, value: &Value) -> Option<Url> {
    let text = w.string(path, value)?;
    if text.contains("{{") {
        w.report(path, "templated URLs are not supported here; list each target with its own URL");
        return None;
    }
    match Url::parse(text) {
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
fn read_url_spec(w: &mut Walker, path: &str, value: &Value) -> Option<UrlSpec> {
    let text = w.string(path, value)?;
    if !text.contains("{{") && !text.contains("}}") {
        return read_url(w, path, value).map(UrlSpec::Fixed);
    }
    let template = UrlTemplate::parse(text).map_err(|message| w.report(path, message)).ok()?;
    match Url::parse(&template.sample()) {
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
fn read_secret(w: &mut Walker, path: &str, value: &Value, base: &Path) -> Option<Secret> {
    let file = base.join(w.string(path, value)?);
    match std::fs::read_to_string(&file) {
        Ok(text) => {
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

fn read_auth(w: &mut Walker, path: &str, value: &Value, base: &Path) -> Option<Auth> {
    let auth =
        w.object(path, value, &["bearer_token_file", "basic_auth", "protect_metrics", "protect_health"])?;
    let protect_metrics = optional(w, &auth, "protect_metrics", false, Walker::boolean);
    let protect_health = optional(w, &auth, "protect_health", false, Walker::boolean);
    let credentials = read_credentials(w, path, &auth, base);
    Some(Auth {
        credentials: credentials?,
        protect_metrics: protect_metrics?,
        protect_health: protect_health?,
    })
}

fn read_credentials(w: &mut Walker, path: &str, auth: &Object<'_>, base: &Path) -> Option<Credentials> {
    match (auth.get("bearer_token_file"), auth.get("basic_auth")) {
        (Some((path, value)), None) => read_secret(w, &path, value, base).map(Credentials::Bearer),
        (None, Some((path, value))) => {
            let basic = w.object(&path, value, &["username", "password_file"])?;
            let username = match basic.get("username") {
                Some((p, v)) => w.string(&p, v).map(str::to_string),
                None => {
                    w.report(&path, "needs username");
                    None
                }
            };
            let password = match basic.get("password_file") {
                Some((p, v)) => read_secret(w, &p, v, base),
                None => {
                    w.report(&path, "needs password_file");
                    None
                }
            };
            Some(Credentials::Basic { username: username?, password: password? })
        }
        (Some(_), Some(_)) => {
            w.report(path, "give bearer_token_file or basic_auth, not both");
            None
        }
        (None, None) => {
            w.report(path, "needs bearer_token_file or basic_auth");
            None
        }
    }
}

fn read_webhook(w: &mut Walker, entry: Option<(String, &Value)>) -> Option<WebhookConfig> {
    let default = WebhookConfig { max_body_bytes: 4 << 20, max_alerts: 10_000 };
    let Some((path, value)) = entry else {
        return Some(default);
    };
    let object = w.object(&path, value, &["max_body_size", "max_alerts"])?;
    let max_body_bytes = optional(w, &object, "max_body_size", default.max_body_bytes, Walker::size);
    let max_alerts = optional(w, &object, "max_alerts", default.max_alerts, |w, p, v| {
        w.integer(p, v, 1, 1_000_000).map(|n| n as usize)
    });
    Some(WebhookConfig { max_body_bytes: max_body_bytes?, max_alerts: max_alerts? })
}

fn read_gate(w: &mut Walker, entry: Option<(String, &Value)>) -> Option<GateConfig> {
    let default =
        GateConfig { max_in_flight: 4, queue_size: 1024, dedupe_ttl: Duration::from_secs(7 * 86400) };
    let Some((path, value)) = entry else {
        return Some(default);
    };
    let object = w.object(&path, value, &["max_in_flight", "queue_size", "dedupe_ttl"])?;
    let max_in_flight = optional(w, &object, "max_in_flight", default.max_in_flight, |w, p, v| {
        w.integer(p, v, 1, 256).map(|n| n as usize)
    });
    let queue_size = optional(w, &object, "queue_size", default.queue_size, |w, p, v| {
        w.integer(p, v, 1, 1_000_000).map(|n| n as usize)
    });
    let dedupe_ttl = optional(w, &object, "dedupe_ttl", default.dedupe_ttl, Walker::positive_duration);
    Some(GateConfig { max_in_flight: max_in_flight?, queue_size: queue_size?, dedupe_ttl: dedupe_ttl? })
}

fn read_capture(w: &mut Walker, entry: Option<(String, &Value)>) -> Option<CaptureConfig> {
    let default = CaptureConfig {
        timeout_margin: Duration::from_secs(10),
        max_profile_bytes: 512 << 20,
        shutdown_grace: Duration::from_secs(20),
    };
    let Some((path, value)) = entry else {
        return Some(default);
    };
    let object = w.object(&path, value, &["timeout_margin", "max_profile_size", "shutdown_grace"])?;
    let timeout_margin =
        optional(w, &object, "timeout_margin", default.timeout_margin, Walker::positive_duration);
    let max_profile_bytes = optional(w, &object, "max_profile_size", default.max_profile_bytes, Walker::size);
    let shutdown_grace = optional(w, &object, "shutdown_grace", default.shutdown_grace, Walker::duration);
    Some(CaptureConfig {
        timeout_margin: timeout_margin?,
        max_profile_bytes: max_profile_bytes?,
        shutdown_grace: shutdown_grace?,
    })
}

fn read_storage(w: &mut Walker, entry: Option<(String, &Value)>, base: &Path) -> Option<StorageConfig> {
    let default = StorageConfig {
        dir: base.join("alertprof-data"),
        max_age: Some(Duration::from_secs(7 * 86400)),
        max_bytes: Some(1 << 30),
    };
    let Some((path, value)) = entry else {
        return Some(default);
    };
    let object = w.object(&path, value, &["dir", "retention"])?;
    let dir =
        optional(w, &object, "dir", default.dir.clone(), |w, p, v| w.string(p, v).map(|s| base.join(s)));
    let (max_age, max_bytes) = match object.get("retention") {
        None => (Some(default.max_age), Some(default.max_bytes)),
        Some((path, value)) => match w.object(&path, value, &["max_age", "max_bytes"]) {
            None => (None, None),
            Some(retention) => (
                optional(w, &retention, "max_age", None, |w, p, v| w.positive_duration(p, v).map(Some)),
                optional(w, &retention, "max_bytes", None, |w, p, v| w.size(p, v).map(Some)),
            ),
        },
    };
    Some(StorageConfig { dir: dir?, max_age: max_age?, max_bytes: max_bytes? })
}

fn read_grafana(w: &mut Walker, path: &str, value: &Value, base: &Path) -> Option<GrafanaConfig> {
    let object = w.object(
        path,
        value,
        &["url", "token_file", "dashboard_uid", "tags", "max_attempts", "retry_backoff"],
    )?;
    let url = match object.get("url") {
        Some((p, v)) => read_url(w, &p, v),
        None => {
            w.report(path, "needs url");
            None
        }
    };
    let token = optional(w, &object, "token_file", None, |w, p, v| read_secret(w, p, v, base).map(Some));
    let dashboard_uid =
        optional(w, &object, "dashboard_uid", None, |w, p, v| w.string(p, v).map(|s| Some(s.to_string())));
    let tags = optional(w, &object, "tags", vec!["alertprof".to_string()], |w, p, v| {
        let items = w.list(p, v)?;
        let tags: Vec<_> = items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| w.string(&index(p, i), item).map(str::to_string))
            .collect();
        (tags.len() == items.len()).then_some(tags)
    });
    let max_attempts =
        optional(w, &object, "max_attempts", 5, |w, p, v| w.integer(p, v, 1, 20).map(|n| n as u32));
    let retry_backoff =
        optional(w, &object, "retry_backoff", Duration::from_millis(500), Walker::positive_duration);
    Some(GrafanaConfig {
        url: url?,
        token: token?,
        dashboard_uid: dashboard_uid?,
        tags: tags?,
        max_attempts: max_attempts?,
        retry_backoff: retry_backoff?,
    })
}

/// Target and rule names become directory and file names: `[a-zA-Z0-9_.-]+`, not `.`/`..`.
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn read_name(w: &mut Walker, object: &Object<'_>, seen: &mut HashSet<String>, what: &str) -> Option<String> {
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

fn read_targets(w: &mut Walker, entry: Option<(String, &Value)>) -> Option<Vec<Target>> {
    let Some((path, value)) = entry else {
        return Some(Vec::new());
    };
    let items = w.list(&path, value)?;
    let mut seen = HashSet::new();
    let targets: Vec<Option<Target>> =
        items.iter().enumerate().map(|(i, item)| read_target(w, &index(&path, i), item, &mut seen)).collect();
    targets.into_iter().collect()
}

/// A target as written, even if it is otherwise invalid, so that rules naming it are not
/// reported as naming an unknown target too.
struct Declared {
    name: String,
    templated: bool,
}

fn declared_targets(entry: Option<(String, &Value)>) -> Vec<Declared> {
    let items = entry.and_then(|(_, value)| value.as_array().cloned()).unwrap_or_default();
    let text =
        |item: &Value, key: &str| item.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    items
        .iter()
        .map(|item| Declared {
            name: text(item, "name"),
            templated: text(item, "pprof_url").contains("{{") || text(item, "metrics_url").contains("{{"),
        })
        .collect()
}

fn read_target(w: &mut Walker, path: &str, value: &Value, seen: &mut HashSet<String>) -> Option<Target> {
    let object = w.object(
        path,
        value,
        &["name", "pprof_url", "metrics_url", "process", "alert_labels", "allowed_targets"],
    )?;
    let name = read_name(w, &object, seen, "target");
    let pprof_url = match object.get("pprof_url") {
        Some((p, v)) => read_url_spec(w, &p, v),
        None => {
            w.report(path, "needs pprof_url");
            None
        }
    };
    let metrics_url = optional(w, &object, "metrics_url", None, |w, p, v| read_url_spec(w, p, v).map(Some));
    let process = optional(w, &object, "process", None, |w, p, v| read_process(w, p, v).map(Some));
    let alert_labels = optional(w, &object, "alert_labels", BTreeMap::new(), Walker::labels);
    let allowed_targets = optional(w, &object, "allowed_targets", Vec::new(), |w, p, v| {
        let items = w.list(p, v)?;
        let parsed: Vec<Option<AllowedTarget>> = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let item_path = index(p, i);
                let text = w.string(&item_path, item)?;
                AllowedTarget::parse(text).map_err(|message| w.report(&item_path, message)).ok()
            })
            .collect();
        parsed.into_iter().collect()
    });
    let templated = [&pprof_url, &metrics_url.clone().flatten()]
        .iter()
        .any(|spec| matches!(spec, Some(UrlSpec::Template(_))));
    let allowed_path = field(path, "allowed_targets");
    match (&allowed_targets, templated) {
        (Some(allowed), true) if allowed.is_empty() => w.report(
            &allowed_path,
            "templated URLs need allowed_targets: the hosts and ports alert labels may lead to",
        ),
        (Some(allowed), false) if !allowed.is_empty() => {
            w.report(&allowed_path, "applies only to templated URLs ({{ labels.NAME }})")
        }
        _ => {}
    }
    if templated && matches!(process, Some(Some(_))) {
        w.report(&field(path, "process"), "a templated target has no one local process");
    }
    let pprof_url = pprof_url?;
    let metrics_url = metrics_url?;
    Some(Target {
        endpoint: Endpoint::fixed(&pprof_url, metrics_url.as_ref()),
        name: name?.into(),
        pprof_url,
        metrics_url,
        allowed_targets: allowed_targets?,
        process: process?,
        alert_labels: alert_labels?,
    })
}

fn read_process(w: &mut Walker, path: &str, value: &Value) -> Option<ProcessRef> {
    let object = w.object(path, value, &["listen_port", "pid", "cgroup"])?;
    let given: Vec<_> = ["listen_port", "pid", "cgroup"].into_iter().filter(|key| object.has(key)).collect();
    if given.len() != 1 {
        w.report(path, "give exactly one of listen_port, pid, cgroup");
        return None;
    }
    let (p, v) = object.get(given[0])?;
    match given[0] {
        "listen_port" => w.integer(&p, v, 1, 65535).map(|port| ProcessRef::ListenPort(port as u16)),
        "pid" => w.integer(&p, v, 1, u32::MAX as u64).map(|pid| ProcessRef::Pid(pid as u32)),
        _ => {
            let cgroup = w.string(&p, v)?;
            let relative = cgroup.trim_start_matches('/');
            if Path::new(relative).components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
                w.report(&p, format!("{cgroup:?} must be a cgroup path without `..`"));
                return None;
            }
            Some(ProcessRef::Cgroup(PathBuf::from(relative)))
        }
    }
}

fn read_rules(w: &mut Walker, entry: Option<(String, &Value)>, targets: &[Declared]) -> Option<Vec<Rule>> {
    let Some((path, value)) = entry else {
        return Some(Vec::new());
    };
    let items = w.list(&path, value)?;
    let mut seen = HashSet::new();
    let rules: Vec<Option<Rule>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| read_rule(w, &index(&path, i), item, &mut seen, targets))
        .collect();
    rules.into_iter().collect()
}

fn read_rule(
    w: &mut Walker,
    path: &str,
    value: &Value,
    seen: &mut HashSet<String>,
    targets: &[Declared],
) -> Option<Rule> {
    let object = w.object(
        path,
        value,
        &[
            "name",
            "alert_labels",
            "targets",
            "watch",
            "verify",
            "capture",
            "seconds",
            "cooldown",
            "baseline",
            "on_resolved",
        ],
    )?;
    let name = read_name(w, &object, seen, "rule");
    let alert_labels = optional(w, &object, "alert_labels", None, |w, p, v| w.labels(p, v).map(Some));
    let rule_targets = optional(w, &object, "targets", (0..targets.len()).collect(), |w, p, v| {
        let items = w.list(p, v)?;
        let mut chosen = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_path = index(p, i);
            let name = w.string(&item_path, item)?;
            match targets.iter().position(|target| target.name == name) {
                Some(position) if !chosen.contains(&position) => chosen.push(position),
                Some(_) => w.report(&item_path, format!("target {name:?} is listed twice")),
                None => w.report(&item_path, format!("unknown target {name:?}")),
            }
        }
        Some(chosen)
    });
    let watch = optional(w, &object, "watch", None, |w, p, v| {
        let watch = w.object(p, v, &["interval"])?;
        match watch.get("interval") {
            Some((p, v)) => w.positive_duration(&p, v).map(Some),
            None => {
                w.report(p, "needs interval");
                None
            }
        }
    });
    let verify = optional(w, &object, "verify", Vec::new(), read_verify);
    let capture = match object.get("capture") {
        Some((p, v)) => read_kinds(w, &p, v),
        None => {
            w.report(path, "needs capture: a list of profile kinds");
            None
        }
    };
    let seconds = optional(w, &object, "seconds", 10, |w, p, v| w.integer(p, v, 1, 300).map(|n| n as u32));
    let cooldown = optional(w, &object, "cooldown", Duration::from_secs(300), Walker::duration);
    let baseline = optional(w, &object, "baseline", Baseline::default(), read_baseline);
    if object.get("on_resolved").is_some() {
        w.report(&field(path, "on_resolved"), "moved: write baseline: {on_resolved: true}");
    }
    // Watch rules and periodic baselines read one instance: templated targets have none.
    let watched = matches!(watch, Some(Some(_)));
    let periodic = matches!(&baseline, Some(Baseline { every: Some(_), .. }));
    let local = [(watched, "watch", "watch"), (periodic, "baseline", "baseline.every")];
    for (_, place, what) in local.into_iter().filter(|(on, ..)| *on) {
        for &t in rule_targets.iter().flatten() {
            if targets[t].templated {
                w.report(
                    &field(path, place),
                    format!("target {:?} has a templated URL; {what} needs fixed URLs", targets[t].name),
                );
            }
        }
    }
    if let (Some(None), Some(None)) = (&alert_labels, &watch) {
        w.report(path, "needs alert_labels (to handle alerts) or watch (to evaluate locally), or both");
    }
    if let (Some(None), Some(Baseline { on_resolved: true, .. })) = (&alert_labels, &baseline) {
        w.report(
            &field(&field(path, "baseline"), "on_resolved"),
            "needs alert_labels: watch rules have no resolved alerts",
        );
    }
    if let (Some(Some(_)), Some(verify)) = (&watch, &verify)
        && verify.is_empty()
    {
        w.report(path, "a watch rule needs verify: the signals that trigger it");
    }
    Some(Rule {
        name: name?.into(),
        alert_labels: alert_labels?,
        targets: rule_targets?,
        watch: watch?,
        verify: verify?,
        capture: capture?,
        seconds: seconds?,
        cooldown: cooldown?,
        baseline: baseline?,
    })
}

fn read_baseline(w: &mut Walker, path: &str, value: &Value) -> Option<Baseline> {
    let object = w.object(path, value, &["on_resolved", "every"])?;
    let on_resolved = optional(w, &object, "on_resolved", false, Walker::boolean);
    let every = optional(w, &object, "every", None, |w, p, v| {
        let every = w.positive_duration(p, v)?;
        if every < Baseline::MIN_EVERY {
            w.report(p, "must be at least 1m: a baseline is a full capture");
            return None;
        }
        Some(Some(every))
    });
    let baseline = Baseline { on_resolved: on_resolved?, every: every? };
    if !baseline.on_resolved && baseline.every.is_none() {
        w.report(path, "needs on_resolved: true or every, or both");
        return None;
    }
    Some(baseline)
}

fn read_kinds(w: &mut Walker, path: &str, value: &Value) -> Option<Vec<ProfileKind>> {
    let items = w.list(path, value)?;
    if items.is_empty() {
        w.report(path, "must list at least one profile kind");
        return None;
    }
    let mut kinds = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let item_path = index(path, i);
        let Some(name) = w.string(&item_path, item) else {
            ok = false;
            continue;
        };
        match ProfileKind::parse(name) {
            Some(kind) if kinds.contains(&kind) => {
                w.report(&item_path, format!("kind {name:?} is listed twice"));
                ok = false;
            }
            Some(kind) => kinds.push(kind),
            None => {
                let known: Vec<_> = ProfileKind::ALL.iter().map(|k| k.name()).collect();
                w.report(&item_path, format!("unknown kind {name:?} (known: {})", known.join(", ")));
                ok = false;
            }
        }
    }
    ok.then_some(kinds)
}

fn read_verify(w: &mut Walker, path: &str, value: &Value) -> Option<Vec<SignalCheck>> {
    let mut known: Vec<&str> = Signal::BUILTIN.to_vec();
    known.push("metric");
    let object = w.object(path, value, &known)?;
    let mut checks = Vec::new();
    let mut ok = true;
    for key in known {
        let Some((p, v)) = object.get(key) else {
            continue;
        };
        let check = if key == "metric" {
            read_metric_check(w, &p, v)
        } else {
            let signal = match key {
                "cpu_percent" => Signal::CpuPercent,
                "memory_percent" => Signal::MemoryPercent,
                "goroutines" => Signal::Goroutines,
                "threads" => Signal::Threads,
                _ => Signal::HeapPercent,
            };
            w.object(&p, v, &["min", "abs", "diff", "max"])
                .and_then(|fields| read_threshold(w, &fields))
                .map(|threshold| SignalCheck { signal, threshold })
        };
        match check {
            Some(check) => checks.push(check),
            None => ok = false,
        }
    }
    if ok && checks.is_empty() {
        w.report(path, "lists no signals; omit verify to capture on the alert alone");
        return None;
    }
    ok.then_some(checks)
}

fn read_metric_check(w: &mut Walker, path: &str, value: &Value) -> Option<SignalCheck> {
    let object = w.object(path, value, &["name", "labels", "min", "abs", "diff", "max"])?;
    let name = match object.get("name") {
        Some((p, v)) => w.string(&p, v).and_then(|name| {
            let valid = walk::is_label_name(&name.replace(':', "_"));
            if valid {
                Some(name.to_string())
            } else {
                w.report(&p, format!("{name:?} is not a metric name"));
                None
            }
        }),
        None => {
            w.report(path, "needs name: the metric to read from the target's /metrics");
            None
        }
    };
    let labels = optional(w, &object, "labels", BTreeMap::new(), Walker::labels);
    let threshold = read_threshold(w, &object);
    Some(SignalCheck { signal: Signal::Metric { name: name?, labels: labels? }, threshold: threshold? })
}

fn read_threshold(w: &mut Walker, object: &Object<'_>) -> Option<Threshold> {
    let mut read = |key: &str| optional(w, object, key, None, |w, p, v| w.number(p, v).map(Some));
    let threshold =
        Threshold { min: read("min")?, abs: read("abs")?, diff: read("diff")?, max: read("max")? };
    if threshold.abs.is_none() && threshold.diff.is_none() && threshold.min.is_none() {
        w.report(&object.path, "needs at least one of min, abs, diff");
        return None;
    }
    if let Some(diff) = threshold.diff
        && diff < 0.0
    {
        w.report(&field(&object.path, "diff"), "must not be negative");
        return None;
    }
    if let (Some(low), Some(max)) = (threshold.min.or(threshold.abs), threshold.max)
        && max <= low
    {
        w.report(
            &field(&object.path, "max"),
            format!("{max} must be above min/abs {low}, or nothing triggers"),
        );
        return None;
    }
    Some(threshold)
}

#[cfg(test)]
mod tests {
    use super::*;

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
                threshold: Threshold { min: Some(20.0), abs: Some(70.0), diff: Some(25.0), max: Some(400.0) }
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

    /// An empty file is a valid config of defaults; thresholds that can never trigger and
    /// clashing options are problems.
    #[test]
    fn defaults_and_impossible_thresholds() {
        let config = Config::parse("", Path::new("/etc/alertprof")).unwrap();
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
