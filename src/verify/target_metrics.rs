//! The target's own `/metrics` (client_golang's Go collector): `go_goroutines`,
//! `go_threads`, `go_memstats_heap_inuse_bytes`, and any sample by name and labels.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use prometheus_parse::{Sample, Scrape, Value};
use reqwest::Url;

/// A scrape larger than this is refused: /metrics of a Go service is kilobytes.
const MAX_SCRAPE_BYTES: usize = 16 << 20;

/// Why a target's `/metrics` gave no readings.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("cannot scrape {url}: {}", crate::http::error_chain(.source))]
    Http { url: String, source: reqwest::Error },
    #[error("cannot scrape {url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url} sent more than {MAX_SCRAPE_BYTES} bytes")]
    TooLarge { url: String },
    #[error("{url} is not Prometheus text: {source}")]
    Parse { url: String, source: ExpositionError },
}

/// Why a text is not in Prometheus's text exposition format.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ExpositionError(#[source] std::io::Error);

/// One scrape of a target's metrics.
#[derive(Debug, Default)]
pub struct TargetMetrics {
    samples: Vec<Sample>,
}

impl TargetMetrics {
    /// Parses the text exposition format.
    pub fn parse(text: &str) -> Result<TargetMetrics, ExpositionError> {
        let lines = text.lines().map(|line| Ok(line.to_string()));
        let scrape = Scrape::parse(lines).map_err(ExpositionError)?;
        Ok(TargetMetrics { samples: scrape.samples })
    }

    /// The value of the first sample named `name` whose labels include `labels`
    /// (counters, gauges and untyped samples).
    pub fn value(&self, name: &str, labels: &BTreeMap<String, String>) -> Option<f64> {
        self.samples
            .iter()
            .filter(|sample| sample.metric == name)
            .filter(|sample| labels.iter().all(|(k, v)| sample.labels.get(k) == Some(v.as_str())))
            .find_map(|sample| match sample.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
                _ => None,
            })
    }

    pub fn goroutines(&self) -> Option<f64> {
        self.value("go_goroutines", &BTreeMap::new())
    }

    pub fn threads(&self) -> Option<f64> {
        self.value("go_threads", &BTreeMap::new())
    }

    pub fn heap_inuse_bytes(&self) -> Option<f64> {
        self.value("go_memstats_heap_inuse_bytes", &BTreeMap::new())
    }

    /// When the process started, epoch seconds (client_golang's process collector).
    pub fn start_time(&self) -> Option<f64> {
        self.value("process_start_time_seconds", &BTreeMap::new())
    }
}

/// Scrapes `url` with a timeout and a size bound.
pub async fn scrape(
    client: &reqwest::Client,
    url: &Url,
    timeout: Duration,
) -> Result<TargetMetrics, ScrapeError> {
    let http = |source| ScrapeError::Http { url: url.to_string(), source };
    let work = async {
        let response = client
            .get(url.clone())
            .header("accept", "text/plain;version=0.0.4")
            .send()
            .await
            .map_err(http)?;
        if !response.status().is_success() {
            return Err(ScrapeError::Status { url: url.to_string(), status: response.status().as_u16() });
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            body.extend_from_slice(&chunk.map_err(http)?);
            if body.len() > MAX_SCRAPE_BYTES {
                return Err(ScrapeError::TooLarge { url: url.to_string() });
            }
        }
        let text = String::from_utf8_lossy(&body);
        TargetMetrics::parse(&text).map_err(|source| ScrapeError::Parse { url: url.to_string(), source })
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(ScrapeError::Timeout { url: url.to_string(), timeout }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go runtime gauges and labelled samples are found; histograms and absent names are not.
    #[test]
    fn reads_go_runtime_metrics() {
        let text = "\
# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 1042
# TYPE go_threads gauge
go_threads 12
go_memstats_heap_inuse_bytes 4.194304e+06
# TYPE http_requests_total counter
http_requests_total{code=\"200\",method=\"get\"} 7
http_requests_total{code=\"500\",method=\"get\"} 3
# TYPE latency_seconds histogram
latency_seconds_bucket{le=\"+Inf\"} 3
latency_seconds_sum 1.5
latency_seconds_count 3
";
        let metrics = TargetMetrics::parse(text).unwrap();
        assert_eq!(metrics.goroutines(), Some(1042.0));
        assert_eq!(metrics.threads(), Some(12.0));
        assert_eq!(metrics.heap_inuse_bytes(), Some(4_194_304.0));
        let code = |c: &str| BTreeMap::from([("code".to_string(), c.to_string())]);
        assert_eq!(metrics.value("http_requests_total", &code("500")), Some(3.0));
        assert_eq!(metrics.value("http_requests_total", &code("404")), None);
        assert_eq!(metrics.value("latency_seconds", &BTreeMap::new()), None);
        assert_eq!(metrics.value("absent", &BTreeMap::new()), None);
    }
}
