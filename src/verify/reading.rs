//! One sample of a target: each signal's value, or why it has none.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::target_metrics::ScrapeError;
use crate::model::SignalKey;

/// One sample of a target: each signal's value, or why there is none.
pub type Sample = BTreeMap<SignalKey, Result<f64, NoReading>>;

/// Why a signal has no reading in a sample. One cause often leaves several signals without
/// a reading (a scrape that failed, a process gone), so the errors it carries are shared.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NoReading {
    #[error("no process configured for the target")]
    NoProcessConfigured,
    #[error("no process listens on port {0}")]
    NoListener(u16),
    #[error("no process {0}")]
    NoProcess(u32),
    /// CPU use is the difference of two samples of the same process.
    #[error("CPU use needs a second sample")]
    FirstSample,
    #[error("no CPU usage readable for the target")]
    NoCpuUsage,
    #[error("no memory usage readable for the target")]
    NoMemoryUsage,
    /// What a percentage of memory is taken against.
    #[error("no memory limit or host memory readable")]
    NoMemoryLimit,
    /// The target's `/metrics` has no such sample (a metric, by its key).
    #[error("{0} not in the target's metrics")]
    NotInMetrics(String),
    #[error("{0}")]
    Scrape(#[source] Arc<ScrapeError>),
    #[error("no metrics_url configured for the target")]
    NoMetricsUrl,
    /// A templated target is read on the alert's arrival, from its cgroup on this node if
    /// the alert names one.
    #[error("a templated target has no local process or cgroup")]
    NoLocalProcess,
    /// Reading /proc and cgroups failed (a panic); nothing local was read.
    #[error("{0}")]
    Fault(#[source] Arc<SampleError>),
}

/// Why a sample could not be taken at all: a fault (a panic) while reading.
#[derive(Debug, thiserror::Error)]
#[error("reading /proc and cgroups failed: {0}")]
pub struct SampleError(#[from] tokio::task::JoinError);

#[cfg(test)]
mod tests {
    use super::*;

    /// Each reason reads as decisions, pages and logs have always said it (`no reading of
    /// cpu_percent: …` ends with these); a failed scrape is said as the scrape says it, and
    /// kept as the cause.
    #[test]
    fn reasons_read_as_before() {
        let scrape = ScrapeError::Status { url: "http://10.0.0.1:6060/metrics".into(), status: 503 };
        let cases = [
            (NoReading::NoProcessConfigured, "no process configured for the target"),
            (NoReading::NoListener(6060), "no process listens on port 6060"),
            (NoReading::NoProcess(4242), "no process 4242"),
            (NoReading::FirstSample, "CPU use needs a second sample"),
            (NoReading::NoCpuUsage, "no CPU usage readable for the target"),
            (NoReading::NoMemoryUsage, "no memory usage readable for the target"),
            (NoReading::NoMemoryLimit, "no memory limit or host memory readable"),
            (NoReading::NotInMetrics("go_goroutines".into()), "go_goroutines not in the target's metrics"),
            (NoReading::Scrape(Arc::new(scrape)), "http://10.0.0.1:6060/metrics answered 503"),
            (NoReading::NoMetricsUrl, "no metrics_url configured for the target"),
            (NoReading::NoLocalProcess, "a templated target has no local process or cgroup"),
        ];
        for (why, text) in cases {
            assert_eq!(why.to_string(), text);
        }
        let scrape = ScrapeError::TooLarge { url: "http://t/metrics".into() };
        let why = NoReading::Scrape(Arc::new(scrape));
        let cause = std::error::Error::source(&why).expect("the scrape's error is kept");
        assert_eq!(cause.to_string(), "http://t/metrics sent more than 16777216 bytes");
    }
}
