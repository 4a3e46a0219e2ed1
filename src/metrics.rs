//! alertprof's own Prometheus metrics, all prefixed `alertprof_`.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::model::{Outcome, ProfileKind};
use crate::pyroscope::PushMetrics;

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
#[derive(Default)]
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
    /// Pushes to Pyroscope by result, and what waits in their queue.
    pub pyroscope: PushMetrics,
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

    /// The recorder's metrics with their names and help, in the order /metrics lists them.
    fn described(&self) -> Vec<(&'static str, &'static str, AnyMetric)> {
        vec![
            (
                "recorder_segments",
                "Profiles the recorder keeps, by target and kind",
                AnyMetric::of(&self.segments),
            ),
            ("recorder_bytes", "Bytes the recorder keeps, by target", AnyMetric::of(&self.bytes)),
            (
                "recorder_reach_seconds",
                "How far back the recorder's oldest profile of a target reaches",
                AnyMetric::of(&self.reach),
            ),
            (
                "recorder_fetches",
                "The recorder's requests, by target, kind and result (ok, failed, in_use: someone else held the CPU profiler)",
                AnyMetric::of(&self.fetches),
            ),
            (
                "recorder_backing_off",
                "1 while the recorder leaves a target's CPU profiler to someone else who holds it",
                AnyMetric::of(&self.backing_off),
            ),
            (
                "process_exits",
                "Ends of a recorded target's process (exit, kill, restart), by target",
                AnyMetric::of(&self.exits),
            ),
        ]
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

impl Hot {
    /// The hottest series of `metrics`, created now so they are listed from the start.
    fn new(metrics: &Metrics) -> Hot {
        let label = |name: &'static str, value: &str| vec![(name, value.to_string())];
        Hot {
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
        }
    }
}

/// A metric of any type, for the table of `Metrics::described`.
#[derive(Debug)]
struct AnyMetric(Box<dyn Metric>);

impl AnyMetric {
    /// A handle on `metric` (metrics are shared handles: a clone counts in the same place).
    fn of(metric: &(impl Metric + Clone)) -> AnyMetric {
        AnyMetric(Box::new(metric.clone()))
    }
}

impl EncodeMetric for AnyMetric {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut metrics = Metrics {
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
            pyroscope: PushMetrics::default(),
            registry: Registry::with_prefix("alertprof"),
            hot: Hot::default(),
        };
        metrics.hot = Hot::new(&metrics);
        for (name, help, metric) in metrics.described() {
            metrics.registry.register(name, help, metric);
        }
        metrics.pyroscope.register(&mut metrics.registry);
        metrics.config_reload_success.set(1);
        metrics.store_up.set(1);
        metrics
    }

    /// Every metric with its name and help, in the order /metrics lists them.
    fn described(&self) -> Vec<(&'static str, &'static str, AnyMetric)> {
        let mut described = vec![
            (
                "alerts_received",
                "Alerts received on the webhook, by status",
                AnyMetric::of(&self.alerts_received),
            ),
            (
                "webhook_requests",
                "Webhook requests, by HTTP status code",
                AnyMetric::of(&self.webhook_requests),
            ),
            ("decisions", "Decisions, by outcome", AnyMetric::of(&self.decisions)),
            (
                "alertmanager_polls",
                "Polls of Alertmanager's API (alertmanager_api), by result (ok, failed)",
                AnyMetric::of(&self.alertmanager_polls),
            ),
            (
                "alertmanager_alerts",
                "Alerts that matched in the last successful poll of Alertmanager's API",
                AnyMetric::of(&self.alertmanager_alerts),
            ),
            (
                "alertmanager_alerts_malformed",
                "Alerts of Alertmanager's API skipped because intake cannot read them (a label that is not a string, a startsAt that is not a time), each counted once",
                AnyMetric::of(&self.alertmanager_alerts_malformed),
            ),
            ("captures", "Captures, by kind and result (ok, failed)", AnyMetric::of(&self.captures)),
            (
                "capture_duration_seconds",
                "Time from a capture's first request to its stored profile, by kind",
                AnyMetric::of(&self.capture_duration),
            ),
            ("capture_bytes", "Bytes of profiles kept, by kind", AnyMetric::of(&self.capture_bytes)),
            ("retention_deleted", "Captures deleted by retention", AnyMetric::of(&self.retention_deleted)),
            (
                "annotations",
                "Grafana annotations, by result (ok, rejected, failed)",
                AnyMetric::of(&self.annotations),
            ),
            ("queue_depth", "Jobs waiting in the queue", AnyMetric::of(&self.queue_depth)),
            ("queue_capacity", "Size of the job queue", AnyMetric::of(&self.queue_capacity)),
            ("captures_in_flight", "Captures running now", AnyMetric::of(&self.captures_in_flight)),
            ("http_connections", "HTTP connections open now", AnyMetric::of(&self.http_connections)),
            (
                "analyses_running",
                "Analyses of profiles (summaries, diffs, flame graphs) running now",
                AnyMetric::of(&self.analyses_running),
            ),
            (
                "config_last_reload_successful",
                "Whether the last config reload succeeded (1) or kept the old config (0)",
                AnyMetric::of(&self.config_reload_success),
            ),
            ("signal", "Latest reading of each signal of each target", AnyMetric::of(&self.signal)),
        ];
        described.extend(self.recorder.described());
        described.push((
            "store_up",
            "1 while the store answers; 0 while a shared store (storage.object_store) cannot be listed",
            AnyMetric::of(&self.store_up),
        ));
        described
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
