//! alertprof's own Prometheus metrics, all prefixed `alertprof_`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::model::{Outcome, ProfileKind};

type Labels = Vec<(&'static str, String)>;

/// One more in a gauge for as long as it lives (a connection open, an analysis running),
/// however its scope ends.
pub struct Counted(Gauge);

impl Counted {
    pub fn new(gauge: &Gauge) -> Counted {
        gauge.inc();
        Counted(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn duration_histogram() -> Histogram {
    // 10 ms .. ~5.5 min: instant profiles to long CPU profiles and traces.
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

/// Counters of the hottest series, looked up once: a family lookup takes a lock and
/// allocates its labels, which shows at tens of thousands of alerts a second.
struct Hot {
    alerts: [Counter; 3],
    codes: Vec<(u16, Counter)>,
    outcomes: Vec<Counter>,
}

pub struct Metrics {
    registry: Registry,
    hot: Hot,
    alerts_received: Family<Labels, Counter>,
    webhook_requests: Family<Labels, Counter>,
    decisions: Family<Labels, Counter>,
    captures: Family<Labels, Counter>,
    capture_duration: Family<Labels, Histogram, fn() -> Histogram>,
    capture_bytes: Family<Labels, Counter>,
    retention_deleted: Counter,
    annotations: Family<Labels, Counter>,
    alertmanager_polls: Family<Labels, Counter>,
    alertmanager_alerts: Gauge,
    /// Alerts of Alertmanager's API that intake cannot read, each counted once.
    pub alertmanager_alerts_malformed: Counter,
    pub queue_depth: Gauge,
    pub queue_capacity: Gauge,
    pub captures_in_flight: Gauge,
    pub analyses_running: Gauge,
    pub http_connections: Gauge,
    pub config_reload_success: Gauge,
    /// 1 while the store answers (always, for the local one), 0 while a shared one cannot
    /// be listed.
    pub store_up: Gauge,
    pub signal: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub recorder: RecorderMetrics,
}

/// The recorder's state, per target (and kind).
#[derive(Default)]
pub struct RecorderMetrics {
    pub segments: Family<Labels, Gauge>,
    pub bytes: Family<Labels, Gauge>,
    pub reach: Family<Labels, Gauge>,
    fetches: Family<Labels, Counter>,
    pub backing_off: Family<Labels, Gauge>,
    exits: Family<Labels, Counter>,
}

impl RecorderMetrics {
    /// A recorder's fetch of `kind` from `target`: `ok`, `failed`, or `in_use` (someone
    /// else held the CPU profiler).
    pub fn fetch(&self, target: &str, kind: ProfileKind, result: &str) {
        let labels = vec![
            ("target", target.to_string()),
            ("kind", kind.name().to_string()),
            ("result", result.to_string()),
        ];
        self.fetches.get_or_create(&labels).inc();
    }

    pub fn exit(&self, target: &str) {
        self.exits.get_or_create(&vec![("target", target.to_string())]).inc();
    }

    /// Forgets a target no longer recorded.
    pub fn forget(&self, target: &str, kinds: &[ProfileKind]) {
        let by_target = vec![("target", target.to_string())];
        for family in [&self.bytes, &self.reach, &self.backing_off] {
            family.remove(&by_target);
        }
        for kind in kinds {
            self.segments.remove(&vec![("target", target.to_string()), ("kind", kind.name().to_string())]);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("alertprof");
        let metrics = Metrics {
            alerts_received: Family::default(),
            webhook_requests: Family::default(),
            decisions: Family::default(),
            captures: Family::default(),
            capture_duration: Family::new_with_constructor(duration_histogram),
            capture_bytes: Family::default(),
            retention_deleted: Counter::default(),
            annotations: Family::default(),
            alertmanager_polls: Family::default(),
            alertmanager_alerts: Gauge::default(),
            alertmanager_alerts_malformed: Counter::default(),
            queue_depth: Gauge::default(),
            queue_capacity: Gauge::default(),
            captures_in_flight: Gauge::default(),
            analyses_running: Gauge::default(),
            http_connections: Gauge::default(),
            config_reload_success: Gauge::default(),
            store_up: Gauge::default(),
            signal: Family::default(),
            recorder: RecorderMetrics::default(),
            registry: Registry::default(),
            hot: Hot { alerts: Default::default(), codes: Vec::new(), outcomes: Vec::new() },
        };
        let label = |name: &'static str, value: &str| vec![(name, value.to_string())];
        let hot = Hot {
            alerts: ["firing", "resolved", "other"]
                .map(|status| metrics.alerts_received.get_or_create(&label("status", status)).clone()),
            codes: [200u16, 400, 401, 413, 503]
                .iter()
                .map(|&code| {
                    (code, metrics.webhook_requests.get_or_create(&label("code", &code.to_string())).clone())
                })
                .collect(),
            outcomes: Outcome::ALL
                .iter()
                .map(|outcome| metrics.decisions.get_or_create(&label("outcome", outcome.name())).clone())
                .collect(),
        };
        registry.register(
            "alerts_received",
            "Alerts received on the webhook, by status",
            metrics.alerts_received.clone(),
        );
        registry.register(
            "webhook_requests",
            "Webhook requests, by HTTP status code",
            metrics.webhook_requests.clone(),
        );
        registry.register("decisions", "Decisions, by outcome", metrics.decisions.clone());
        registry.register(
            "alertmanager_polls",
            "Polls of Alertmanager's API (alertmanager_api), by result (ok, failed)",
            metrics.alertmanager_polls.clone(),
        );
        registry.register(
            "alertmanager_alerts",
            "Alerts that matched in the last successful poll of Alertmanager's API",
            metrics.alertmanager_alerts.clone(),
        );
        registry.register(
            "alertmanager_alerts_malformed",
            "Alerts of Alertmanager's API skipped because intake cannot read them (a label that is not a string, a startsAt that is not a time), each counted once",
            metrics.alertmanager_alerts_malformed.clone(),
        );
        registry.register("captures", "Captures, by kind and result (ok, failed)", metrics.captures.clone());
        registry.register(
            "capture_duration_seconds",
            "Time from a capture's first request to its stored profile, by kind",
            metrics.capture_duration.clone(),
        );
        registry.register("capture_bytes", "Bytes of profiles kept, by kind", metrics.capture_bytes.clone());
        registry.register(
            "retention_deleted",
            "Captures deleted by retention",
            metrics.retention_deleted.clone(),
        );
        registry.register(
            "annotations",
            "Grafana annotations, by result (ok, rejected, failed)",
            metrics.annotations.clone(),
        );
        registry.register("queue_depth", "Jobs waiting in the queue", metrics.queue_depth.clone());
        registry.register("queue_capacity", "Size of the job queue", metrics.queue_capacity.clone());
        registry.register("captures_in_flight", "Captures running now", metrics.captures_in_flight.clone());
        registry.register("http_connections", "HTTP connections open now", metrics.http_connections.clone());
        registry.register(
            "analyses_running",
            "Analyses of profiles (summaries, diffs, flame graphs) running now",
            metrics.analyses_running.clone(),
        );
        registry.register(
            "config_last_reload_successful",
            "Whether the last config reload succeeded (1) or kept the old config (0)",
            metrics.config_reload_success.clone(),
        );
        registry.register("signal", "Latest reading of each signal of each target", metrics.signal.clone());
        let recorder = &metrics.recorder;
        registry.register(
            "recorder_segments",
            "Profiles the recorder keeps, by target and kind",
            recorder.segments.clone(),
        );
        registry.register("recorder_bytes", "Bytes the recorder keeps, by target", recorder.bytes.clone());
        registry.register(
            "recorder_reach_seconds",
            "How far back the recorder's oldest profile of a target reaches",
            recorder.reach.clone(),
        );
        registry.register(
            "recorder_fetches",
            "The recorder's requests, by target, kind and result (ok, failed, in_use: someone else held the CPU profiler)",
            recorder.fetches.clone(),
        );
        registry.register(
            "recorder_backing_off",
            "1 while the recorder leaves a target's CPU profiler to someone else who holds it",
            recorder.backing_off.clone(),
        );
        registry.register(
            "process_exits",
            "Ends of a recorded target's process (exit, kill, restart), by target",
            recorder.exits.clone(),
        );
        registry.register(
            "store_up",
            "1 while the store answers; 0 while a shared store (storage.object_store) cannot be listed",
            metrics.store_up.clone(),
        );
        metrics.config_reload_success.set(1);
        metrics.store_up.set(1);
        Metrics { registry, hot, ..metrics }
    }

    pub fn alert_received(&self, status: &str) {
        let index = match status {
            "firing" => 0,
            "resolved" => 1,
            _ => 2,
        };
        self.hot.alerts[index].inc();
    }

    /// A poll of Alertmanager's API: `ok` with the alerts that matched, or `failed`.
    pub fn alertmanager_poll(&self, result: &str, alerts: usize) {
        self.alertmanager_polls.get_or_create(&vec![("result", result.to_string())]).inc();
        if result == "ok" {
            self.alertmanager_alerts.set(alerts as i64);
        }
    }

    pub fn webhook_request(&self, code: u16) {
        match self.hot.codes.iter().find(|(known, _)| *known == code) {
            Some((_, counter)) => {
                counter.inc();
            }
            None => {
                self.webhook_requests.get_or_create(&vec![("code", code.to_string())]).inc();
            }
        }
    }

    pub fn decision(&self, outcome: Outcome) {
        self.hot.outcomes[outcome as usize].inc();
    }

    pub fn capture(&self, kind: ProfileKind, ok: bool, seconds: f64, bytes: u64) {
        let result = if ok { "ok" } else { "failed" };
        self.captures
            .get_or_create(&vec![("kind", kind.name().to_string()), ("result", result.to_string())])
            .inc();
        let kind_label = vec![("kind", kind.name().to_string())];
        self.capture_duration.get_or_create(&kind_label).observe(seconds);
        if ok {
            self.capture_bytes.get_or_create(&kind_label).inc_by(bytes);
        }
    }

    pub fn annotation(&self, result: &str) {
        self.annotations.get_or_create(&vec![("result", result.to_string())]).inc();
    }

    pub fn retention_deleted(&self, count: usize) {
        self.retention_deleted.inc_by(count as u64);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
