//! Pyroscope: kept profiles pushed with `push.v1.PusherService/Push` (Connect, protobuf)
//! from a bounded queue on disk, by a worker that retries while Pyroscope is down and never
//! holds up a capture; and links to a pushed profile's view in Pyroscope or Grafana.

mod client;
mod labels;
mod links;
#[allow(clippy::all)]
pub mod proto;
mod queue;
mod worker;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use client::PyroscopeClient;
pub use labels::{MAX_VALUE_BYTES, ProfileType, PushItem, PushSource};
pub use links::{ProfileView, UiStyle, ViewLink};
pub use queue::{Depth, EnqueueError, Held, PushQueue, QueueError, QueueLimits};
pub use worker::{Backoff, PushWorker};

/// How one push ended, or one try of it: the `result` label of
/// `alertprof_pyroscope_pushes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushResult {
    /// Pyroscope took it.
    Ok,
    /// One try failed (5xx, 429, timeout, no connection); the push stays queued.
    Retry,
    /// Pyroscope refused it (4xx but 429): dropped, since trying again would not help.
    Rejected,
    /// Its capture's retention ended before Pyroscope took it: dropped.
    DroppedExpired,
    /// The queue was full and this was the oldest (or it alone was over the byte bound).
    DroppedFull,
    /// It could not be queued (its profile gone before it was linked, a full disk), or its
    /// entry or its profile in the queue could not be read (damaged, removed by hand).
    DroppedInvalid,
}

impl PushResult {
    pub const ALL: [PushResult; 6] = [
        PushResult::Ok,
        PushResult::Retry,
        PushResult::Rejected,
        PushResult::DroppedExpired,
        PushResult::DroppedFull,
        PushResult::DroppedInvalid,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PushResult::Ok => "ok",
            PushResult::Retry => "retry",
            PushResult::Rejected => "rejected",
            PushResult::DroppedExpired => "dropped_expired",
            PushResult::DroppedFull => "dropped_full",
            PushResult::DroppedInvalid => "dropped_invalid",
        }
    }
}

/// The queue's and the worker's counts, as Prometheus metrics the caller registers; cheap
/// to clone (each clone counts into the same series), so this module needs nothing of
/// `crate::metrics`.
#[derive(Clone, Default)]
pub struct PushMetrics {
    pushes: Family<[(&'static str, &'static str); 1], Counter>,
    /// Pushes waiting on disk, the one being tried included.
    pub queue_entries: Gauge,
    /// Their entries' and profiles' bytes on disk.
    pub queue_bytes: Gauge,
}

impl PushMetrics {
    /// Registers `pyroscope_pushes_total{result}`, `pyroscope_queue_entries` and
    /// `pyroscope_queue_bytes` (alertprof's registry adds the `alertprof_` prefix).
    pub fn register(&self, registry: &mut Registry) {
        for result in PushResult::ALL {
            self.count_by(result, 0);
        }
        registry.register(
            "pyroscope_pushes",
            "Pushes to Pyroscope by result; retry counts tries that failed and will be tried again",
            self.pushes.clone(),
        );
        registry.register("pyroscope_queue_entries", "Pushes waiting on disk", self.queue_entries.clone());
        registry.register(
            "pyroscope_queue_bytes",
            "Bytes on disk of the pushes waiting (entries and profiles)",
            self.queue_bytes.clone(),
        );
    }

    /// How many pushes (or tries, for `Retry`) ended so.
    pub fn pushes(&self, result: PushResult) -> u64 {
        self.pushes.get_or_create(&[("result", result.name())]).get()
    }

    fn count(&self, result: PushResult) {
        self.count_by(result, 1);
    }

    fn count_by(&self, result: PushResult, n: u64) {
        self.pushes.get_or_create(&[("result", result.name())]).inc_by(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Registered in alertprof's registry, the counts read as documented: every result
    /// from zero, and the queue's depth.
    #[test]
    fn metrics_as_exported() {
        let mut registry = Registry::with_prefix("alertprof");
        let metrics = PushMetrics::default();
        metrics.register(&mut registry);
        metrics.count(PushResult::Ok);
        metrics.count(PushResult::Ok);
        metrics.count(PushResult::DroppedFull);
        metrics.queue_entries.set(3);
        metrics.queue_bytes.set(4096);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "alertprof_pyroscope_pushes_total{result=\"ok\"} 2",
            "alertprof_pyroscope_pushes_total{result=\"dropped_full\"} 1",
            "alertprof_pyroscope_pushes_total{result=\"rejected\"} 0",
            "alertprof_pyroscope_queue_entries 3",
            "alertprof_pyroscope_queue_bytes 4096",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
        assert_eq!(metrics.pushes(PushResult::Ok), 2);
    }
}
