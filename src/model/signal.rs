//! The signals a rule re-checks locally, and holmes' thresholds on them.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Latest reading of each signal, by key (`cpu_percent`, `go_foo{code="500"}`).
pub type Readings = BTreeMap<SignalKey, f64>;

/// Recent readings of each signal, by key: (epoch milliseconds, value), oldest first.
pub type Series = BTreeMap<SignalKey, Vec<(i64, f64)>>;

/// What a signal's readings are kept under: its name, and for a metric its label matchers
/// too (`http_requests_total{code="500"}`). Made only by `Signal::key`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SignalKey(String);

impl SignalKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SignalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Borrow<str> for SignalKey {
    fn borrow(&self) -> &str {
        &self.0
    }
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
    /// The signals alertprof reads itself, in the order configs list them.
    pub const BUILTIN: [Signal; 5] =
        [Signal::CpuPercent, Signal::MemoryPercent, Signal::Goroutines, Signal::Threads, Signal::HeapPercent];

    /// The built-in signal of this name.
    pub fn builtin(name: &str) -> Option<Signal> {
        Signal::BUILTIN.into_iter().find(|signal| signal.name() == name)
    }

    /// The key of its readings: the name, and for a metric its label matchers too
    /// (`http_requests_total{code="500"}`).
    pub fn key(&self) -> SignalKey {
        SignalKey(match self {
            Signal::Metric { name, labels } if !labels.is_empty() => {
                let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                format!("{name}{{{}}}", parts.join(","))
            }
            other => other.name().to_string(),
        })
    }

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

/// A signal a rule re-checks locally before capturing.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalCheck {
    pub signal: Signal,
    pub threshold: Threshold,
}

/// holmes' trigger: `cur >= min` and not `cur >= max`, and `cur >= abs` or
/// `cur >= avg(history) * (1 + diff/100)` or `cur >= avg(history) + zscore × stddev(history)`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Threshold {
    pub min: Option<f64>,
    pub abs: Option<f64>,
    pub diff: Option<f64>,
    /// For signals that always move: how many standard deviations above the mean of the
    /// history a spike is.
    pub zscore: Option<f64>,
    pub max: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Built-in names parse back; a metric's key carries its labels.
    #[test]
    fn names_and_keys() {
        for signal in Signal::BUILTIN {
            assert_eq!(Signal::builtin(signal.name()), Some(signal.clone()));
            assert_eq!(signal.key().as_str(), signal.name());
        }
        assert_eq!(Signal::builtin("metric"), None);
        let metric = Signal::Metric {
            name: "http_requests_total".into(),
            labels: BTreeMap::from([("code".into(), "500".into())]),
        };
        assert_eq!(metric.key().as_str(), "http_requests_total{code=\"500\"}");
    }
}
