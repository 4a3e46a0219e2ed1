//! Fetches profiles from a Go service's `/debug/pprof` endpoints: streams the body to a
//! staged file with a size bound and a timeout, retries Go's `cpu profiling already in
//! use`, and validates what arrived. The staged file goes back to the job, which keeps it
//! or fails it.

pub mod perf;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{StatusCode, Url};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

pub use validate::{validate_bytes, validate_file};

use crate::config::{CaptureConfig, format_duration};
use crate::model::ProfileKind;
use crate::profile::InvalidBody;

/// Bytes buffered per download before they are written.
const WRITE_BUFFER: usize = 128 << 10;

/// Gunzipped profiles larger than this many times the body limit are refused.
pub const MAX_UNZIP_RATIO: u64 = 16;

/// Why a capture failed. Every variant names the URL it was fetching, or the file it was
/// writing, and keeps the error underneath as its source.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot reach {url}: {}", crate::http::error_chain(source))]
    Connect { url: String, source: reqwest::Error },
    #[error("no complete answer from {url} within {}", format_duration(*after))]
    Timeout { url: String, after: Duration },
    #[error("{url} answered {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("{url} sent more than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("download from {url} broke off: {}", crate::http::error_chain(source))]
    Body { url: String, source: reqwest::Error },
    #[error("invalid {kind} body from {url}: {reason}")]
    Invalid { url: String, kind: ProfileKind, reason: InvalidBody },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("stopped: alertprof is shutting down")]
    Cancelled,
}

impl CaptureError {
    /// Go's answer while someone else holds its CPU profiler (or tracer).
    pub fn is_in_use(&self) -> bool {
        matches!(self, CaptureError::Status { status: 500, body, .. } if body.contains("already in use"))
    }

    /// Nothing listens where the target was.
    pub fn is_refused(&self) -> bool {
        matches!(self, CaptureError::Connect { source, .. } if crate::http::is_refused(source))
    }

    /// Whether the target's server answered at all.
    pub fn answered(&self) -> bool {
        matches!(
            self,
            CaptureError::Status { .. } | CaptureError::TooLarge { .. } | CaptureError::Invalid { .. }
        )
    }
}

/// What a successful download was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub bytes: u64,
    pub sha256: String,
}

/// An HTTP client for pprof endpoints, with alertprof's limits.
#[derive(Clone)]
pub struct PprofClient {
    http: reqwest::Client,
    settings: CaptureConfig,
    /// Whether to wait and try again while Go says its profiler is in use.
    retry_in_use: bool,
}

/// Backoff between tries while Go says the CPU profiler (or tracer) is in use.
const IN_USE_BACKOFF: [Duration; 4] =
    [Duration::from_millis(500), Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(4)];

impl PprofClient {
    pub fn new(settings: CaptureConfig) -> PprofClient {
        PprofClient { http: crate::http::client(), settings, retry_in_use: true }
    }

    /// The same client, but failing at once when the profiler is in use: for the recorder,
    /// which backs off for longer than a capture could wait.
    pub fn failing_when_in_use(&self) -> PprofClient {
        PprofClient { retry_in_use: false, ..self.clone() }
    }

    /// The underlying HTTP client, shared with metric scrapes: one connection pool and
    /// one TLS setup for the whole service.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The same client, but connecting to `host` only at `addresses` (checked once
    /// resolved, so a second lookup cannot lead elsewhere).
    pub fn pinned(&self, host: &str, addresses: &[std::net::SocketAddr]) -> PprofClient {
        let http =
            crate::http::builder().resolve_to_addrs(host, addresses).build().expect("the HTTP client builds");
        PprofClient { http, ..self.clone() }
    }

    /// The full URL of `kind` under a pprof base URL (a path prefix in the base is kept).
    pub fn profile_url(base: &Url, kind: ProfileKind, seconds: u32) -> Url {
        let request = kind.request_path(seconds);
        let (path, query) = match request.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (request.as_str(), None),
        };
        let mut url = base.clone();
        url.set_path(&format!("{}{path}", base.path().trim_end_matches('/')));
        // The base's own query (a proxy's token, say) stays, before the profile's.
        let query = match (base.query().filter(|q| !q.is_empty()), query) {
            (Some(own), Some(profile)) => Some(format!("{own}&{profile}")),
            (own, profile) => own.or(profile).map(str::to_string),
        };
        url.set_query(query.as_deref());
        url.set_fragment(None);
        url
    }

    /// The most a profile's body may be.
    pub fn max_profile_bytes(&self) -> u64 {
        self.settings.max_profile_bytes
    }

    /// The whole time a capture may take: the profile's own seconds plus the margin.
    pub fn timeout(&self, kind: ProfileKind, seconds: u32) -> Duration {
        let own = if kind.is_timed() { Duration::from_secs(seconds.into()) } else { Duration::ZERO };
        own + self.settings.timeout_margin
    }

    /// Downloads `kind` into `dest` and validates it. On any error `dest` may hold a part
    /// and the caller deletes it. `received` counts bytes as they arrive (progress bars).
    pub async fn fetch(
        &self,
        base: &Url,
        kind: ProfileKind,
        seconds: u32,
        dest: &Path,
        received: Option<&AtomicU64>,
        cancel: &CancellationToken,
    ) -> Result<Fetched, CaptureError> {
        let url = Self::profile_url(base, kind, seconds);
        let timeout = self.timeout(kind, seconds);
        let work = async {
            let fetched = self.download(&url, kind, timeout, dest, received).await?;
            let limit = self.settings.max_profile_bytes.saturating_mul(MAX_UNZIP_RATIO);
            let path = dest.to_path_buf();
            tokio::task::spawn_blocking(move || validate_file(kind.format(), &path, limit))
                .await
                .map_err(|error| CaptureError::Write { path: dest.to_path_buf(), source: error.into() })?
                .map_err(|reason| CaptureError::Invalid { url: url.to_string(), kind, reason })?;
            Ok(fetched)
        };
        tokio::select! {
            result = tokio::time::timeout(timeout, work) => result.unwrap_or_else(|_| Err(CaptureError::Timeout {
                url: url.to_string(),
                after: timeout,
            })),
            () = cancel.cancelled() => Err(CaptureError::Cancelled),
        }
    }

    async fn download(
        &self,
        url: &Url,
        kind: ProfileKind,
        timeout: Duration,
        dest: &Path,
        received: Option<&AtomicU64>,
    ) -> Result<Fetched, CaptureError> {
        let started = tokio::time::Instant::now();
        let mut backoff = IN_USE_BACKOFF.iter();
        let response = loop {
            let response = self
                .http
                .get(url.clone())
                .send()
                .await
                .map_err(|source| CaptureError::Connect { url: url.to_string(), source })?;
            if response.status().is_success() {
                break response;
            }
            let status = response.status();
            let body = error_body(response).await;
            // Go answers 500 while another CPU profile or trace runs; wait and retry while
            // the timeout leaves room for the profile itself.
            let in_use = status == StatusCode::INTERNAL_SERVER_ERROR && body.contains("already in use");
            let needed = if kind.is_timed() {
                timeout.saturating_sub(self.settings.timeout_margin)
            } else {
                Duration::ZERO
            };
            match backoff.next() {
                Some(wait) if in_use && self.retry_in_use && started.elapsed() + *wait + needed < timeout => {
                    tracing::info!(url = %url, wait_ms = wait.as_millis() as u64, "Profiler in use on the target; retrying.");
                    tokio::time::sleep(*wait).await;
                }
                _ => {
                    return Err(CaptureError::Status { url: url.to_string(), status: status.as_u16(), body });
                }
            }
        };
        let write_error = |source: std::io::Error| CaptureError::Write { path: dest.to_path_buf(), source };
        let mut file = tokio::fs::File::create(dest).await.map_err(write_error)?;
        // tokio buffers up to 2 MiB per file for its blocking writes; 20 captures at once
        // would hold 40 MiB. A small buffer keeps memory flat at the same throughput.
        file.set_max_buf_size(WRITE_BUFFER);
        let mut hasher = Sha256::new();
        let mut bytes: u64 = 0;
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| CaptureError::Body { url: url.to_string(), source })?;
            bytes += chunk.len() as u64;
            if bytes > self.settings.max_profile_bytes {
                return Err(CaptureError::TooLarge {
                    url: url.to_string(),
                    limit: self.settings.max_profile_bytes,
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(write_error)?;
            if let Some(counter) = received {
                counter.store(bytes, Ordering::Relaxed);
            }
        }
        file.flush().await.map_err(write_error)?;
        Ok(Fetched { bytes, sha256: hex::encode(hasher.finalize()) })
    }
}

/// The first line or so of an error answer, for the reason.
async fn error_body(response: reqwest::Response) -> String {
    let mut text = String::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk));
        if text.len() >= 200 {
            break;
        }
    }
    let text = text.trim();
    let mut short: String = text.chars().take(200).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    if short.is_empty() { "(empty body)".to_string() } else { short }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The profile's path goes after the base's path and before any query, whose own
    /// parameters stay, ahead of the profile's.
    #[test]
    fn profile_urls_put_the_path_before_the_query() {
        let url =
            |base: &str, kind| PprofClient::profile_url(&Url::parse(base).unwrap(), kind, 5).to_string();
        assert_eq!(url("http://h:1", ProfileKind::Heap), "http://h:1/debug/pprof/heap");
        assert_eq!(url("http://h:1/app/", ProfileKind::Heap), "http://h:1/app/debug/pprof/heap");
        assert_eq!(url("http://h/?q=1", ProfileKind::Heap), "http://h/debug/pprof/heap?q=1");
        assert_eq!(url("http://h/p?q=1", ProfileKind::Cpu), "http://h/p/debug/pprof/profile?q=1&seconds=5");
        assert_eq!(url("http://h/?q=1#frag", ProfileKind::Heap), "http://h/debug/pprof/heap?q=1");
        assert_eq!(url("http://h:1", ProfileKind::GoroutineText), "http://h:1/debug/pprof/goroutine?debug=2");
    }
}
