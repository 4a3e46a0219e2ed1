//! The service's own settings at the top level, and its own sections: auth, http, webhook,
//! gate, capture, storage and Grafana.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde_json::Value;

use super::fleet::{ObjectStoreConfig, read_object_store};
use super::values::{read_secret, read_url};
use super::walk::{Object, Walker, index, optional};
use crate::model::Secret;

/// The settings at the top level: where the service listens and how it is reached, how
/// often and how far back targets are sampled, and where cgroups and /proc are read.
pub(super) struct Basics {
    pub(super) listen_address: SocketAddr,
    pub(super) external_url: Url,
    pub(super) sample_interval: Duration,
    pub(super) history: usize,
    pub(super) cgroup_root: PathBuf,
    pub(super) proc_root: PathBuf,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:9731";

pub(super) fn read_basics(w: &mut Walker, top: &Object<'_>, base: &Path) -> Option<Basics> {
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
        optional(w, top, "sample_interval", Duration::from_secs(5), Walker::positive_duration);
    let history = optional(w, top, "history", 10, |w, p, v| w.integer(p, v, 2, 10_000).map(|n| n as usize));
    let cgroup_root = optional(w, top, "cgroup_root", PathBuf::from("/sys/fs/cgroup"), |w, p, v| {
        w.string(p, v).map(|s| base.join(s))
    });
    let proc_root =
        optional(w, top, "proc_root", PathBuf::from("/proc"), |w, p, v| w.string(p, v).map(|s| base.join(s)));
    Some(Basics {
        listen_address: listen_address?,
        external_url: external_url?,
        sample_interval: sample_interval?,
        history: history?,
        cgroup_root: cgroup_root?,
        proc_root: proc_root?,
    })
}

/// Who may call `/api/*` and `POST /-/reload`, and optionally `/metrics` and health.
#[derive(Debug, Clone, PartialEq)]
pub struct Auth {
    pub credentials: Credentials,
    /// Whether `/metrics` needs the credentials too (Prometheus then sends them).
    pub protect_metrics: bool,
    /// Whether `/-/healthy` and `/-/ready` need them (probes usually cannot).
    pub protect_health: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Credentials {
    Bearer(Secret),
    Basic { username: String, password: Secret },
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// Larger request bodies are refused with 413 before they are parsed.
    pub max_body_bytes: u64,
    /// Payloads with more alerts are refused with 413: the work per payload stays bounded.
    pub max_alerts: usize,
}

/// Bounds on HTTP connections: what one client can hold.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// A request's headers must arrive within this, or the connection is closed.
    pub header_timeout: Duration,
    /// A request's body must arrive whole within this, or the request is refused.
    pub body_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GateConfig {
    /// Captures running at once over all targets.
    pub max_in_flight: usize,
    /// Jobs waiting for a worker; beyond it the webhook answers 503 so Alertmanager retries.
    pub queue_size: usize,
    /// How long a (fingerprint, startsAt, rule) key is remembered. Alertmanager resends a
    /// firing alert with the same startsAt for as long as it fires.
    pub dedupe_ttl: Duration,
    /// Labels left out of an alert's identity, so that the copies HA Prometheus replicas
    /// send (differing only in, say, `replica`) are one alert. Alertmanager does not merge
    /// them.
    pub dedupe_ignore_labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CaptureConfig {
    /// Added to a timed profile's seconds to make its timeout; the whole timeout of others.
    pub timeout_margin: Duration,
    /// Larger bodies are cut off and the capture fails.
    pub max_profile_bytes: u64,
    /// On shutdown, how long captures in flight may still run before they are cancelled.
    pub shutdown_grace: Duration,
    /// How often a `perf` capture samples its process's CPU time, a second: 99, not 100,
    /// so the samples do not beat with the target's own timers.
    pub perf_frequency: u32,
}

impl CaptureConfig {
    /// The most a `perf` capture may sample a second.
    pub const MAX_PERF_FREQUENCY: u64 = 1000;
}

impl Default for CaptureConfig {
    fn default() -> CaptureConfig {
        CaptureConfig {
            timeout_margin: Duration::from_secs(10),
            max_profile_bytes: 512 << 20,
            shutdown_grace: Duration::from_secs(20),
            perf_frequency: 99,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    /// Local: the captures (without an object store), staging, gate state, the recorder.
    pub dir: PathBuf,
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
    /// Where captures are kept instead of `dir`, shared by every instance.
    pub object_store: Option<ObjectStoreConfig>,
}

#[derive(Debug, Clone, PartialEq)]
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

pub(super) fn read_auth(w: &mut Walker, path: &str, value: &Value, base: &Path) -> Option<Auth> {
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

/// `bearer_token_file` or `basic_auth: {username, password_file}` of `auth`, one of them.
pub(super) fn read_credentials(
    w: &mut Walker,
    path: &str,
    auth: &Object<'_>,
    base: &Path,
) -> Option<Credentials> {
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

pub(super) fn read_webhook(w: &mut Walker, entry: Option<(String, &Value)>) -> Option<WebhookConfig> {
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

pub(super) fn read_http(w: &mut Walker, entry: Option<(String, &Value)>) -> Option<HttpConfig> {
    let default = HttpConfig {
        max_connections: 512,
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(30),
    };
    let Some((path, value)) = entry else {
        return Some(default);
    };
    let object = w.object(&path, value, &["max_connections", "header_timeout", "body_timeout"])?;
    let max_connections = optional(w, &object, "max_connections", default.max_connections, |w, p, v| {
        w.integer(p, v, 1, 1_000_000).map(|n| n as usize)
    });
    let header_timeout =
        optional(w, &object, "header_timeout", default.header_timeout, Walker::positive_duration);
    let body_timeout = optional(w, &object, "body_timeout", default.body_timeout, Walker::positive_duration);
    Some(HttpConfig {
        max_connections: max_connections?,
        header_timeout: header_timeout?,
        body_timeout: body_timeout?,
    })
}

pub(super) fn read_gate(w: &mut Walker, entry: Option<(String, &Value)>) -> Option<GateConfig> {
    let default = GateConfig {
        max_in_flight: 4,
        queue_size: 1024,
        dedupe_ttl: Duration::from_secs(7 * 86400),
        dedupe_ignore_labels: Vec::new(),
    };
    let Some((path, value)) = entry else {
        return Some(default);
    };
    let object =
        w.object(&path, value, &["max_in_flight", "queue_size", "dedupe_ttl", "dedupe_ignore_labels"])?;
    let max_in_flight = optional(w, &object, "max_in_flight", default.max_in_flight, |w, p, v| {
        w.integer(p, v, 1, 256).map(|n| n as usize)
    });
    let queue_size = optional(w, &object, "queue_size", default.queue_size, |w, p, v| {
        w.integer(p, v, 1, 1_000_000).map(|n| n as usize)
    });
    let dedupe_ttl = optional(w, &object, "dedupe_ttl", default.dedupe_ttl, Walker::positive_duration);
    let dedupe_ignore_labels = optional(w, &object, "dedupe_ignore_labels", Vec::new(), Walker::label_names);
    Some(GateConfig {
        max_in_flight: max_in_flight?,
        queue_size: queue_size?,
        dedupe_ttl: dedupe_ttl?,
        dedupe_ignore_labels: dedupe_ignore_labels?,
    })
}

pub(super) fn read_capture(w: &mut Walker, entry: Option<(String, &Value)>) -> Option<CaptureConfig> {
    let default = CaptureConfig::default();
    let Some((path, value)) = entry else {
        return Some(default);
    };
    let keys = ["timeout_margin", "max_profile_size", "shutdown_grace", "perf_frequency"];
    let object = w.object(&path, value, &keys)?;
    let timeout_margin =
        optional(w, &object, "timeout_margin", default.timeout_margin, Walker::positive_duration);
    let max_profile_bytes = optional(w, &object, "max_profile_size", default.max_profile_bytes, Walker::size);
    let shutdown_grace = optional(w, &object, "shutdown_grace", default.shutdown_grace, Walker::duration);
    let perf_frequency = optional(w, &object, "perf_frequency", default.perf_frequency as u64, |w, p, v| {
        w.integer(p, v, 1, CaptureConfig::MAX_PERF_FREQUENCY)
    });
    Some(CaptureConfig {
        timeout_margin: timeout_margin?,
        max_profile_bytes: max_profile_bytes?,
        shutdown_grace: shutdown_grace?,
        perf_frequency: perf_frequency? as u32,
    })
}

pub(super) fn read_storage(
    w: &mut Walker,
    entry: Option<(String, &Value)>,
    base: &Path,
) -> Option<StorageConfig> {
    let default = StorageConfig {
        dir: base.join("alertprof-data"),
        max_age: Some(Duration::from_secs(7 * 86400)),
        max_bytes: Some(1 << 30),
        object_store: None,
    };
    let Some((path, value)) = entry else {
        return Some(default);
    };
    let object = w.object(&path, value, &["dir", "retention", "object_store"])?;
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
    let object_store =
        optional(w, &object, "object_store", None, |w, p, v| read_object_store(w, p, v, base).map(Some));
    Some(StorageConfig { dir: dir?, max_age: max_age?, max_bytes: max_bytes?, object_store: object_store? })
}

pub(super) fn read_grafana(w: &mut Walker, path: &str, value: &Value, base: &Path) -> Option<GrafanaConfig> {
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
