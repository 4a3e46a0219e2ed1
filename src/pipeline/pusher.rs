//! Kept profiles handed to Pyroscope: each kept profile.proto capture, and with
//! `pyroscope.recorder` each recorder segment, queued on disk under
//! `<storage.dir>/.pyroscope` for the push worker (`loops::pushing`). Queueing is a hard
//! link and a small file; nothing here waits for Pyroscope, and nothing fails a capture.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use reqwest::Url;

use super::live::LiveConfig;
use crate::config::Config;
use crate::model::{CaptureMeta, PendingCapture, PyroscopeSeries};
use crate::pyroscope::{
    Held, ProfileType, PushItem, PushMetrics, PushQueue, PushSource, QueueError, QueueLimits,
};
use crate::recorder::Added;

/// How long a push may wait for Pyroscope when captures are kept without a `max_age`: the
/// queue's bounds drop the oldest long before.
const WITHOUT_MAX_AGE: chrono::Duration = chrono::Duration::days(365);

/// Queues kept profiles for Pyroscope: what the capture step and the recorder's segments
/// use of it.
#[derive(Clone)]
pub struct Pusher {
    /// The running config: whether there is a `pyroscope` section, the targets' service
    /// names, how long captures are kept.
    config: LiveConfig,
    /// `<storage.dir>/.pyroscope`.
    dir: PathBuf,
    /// Opened with the first config that has a `pyroscope` section (at the start or on a
    /// reload), then kept: pushes wait in it while a reload leaves Pyroscope out, and go
    /// once one puts it back.
    queue: Arc<Mutex<Option<PushQueue>>>,
    metrics: PushMetrics,
}

impl Pusher {
    /// Opens the queue at once when the config has a `pyroscope` section: a directory that
    /// cannot be used stops the start, as the store's does. Blocking.
    pub fn new(config: LiveConfig, metrics: PushMetrics) -> Result<Pusher, QueueError> {
        let dir = config.current().storage.dir.join(".pyroscope");
        let pusher = Pusher { config, dir, queue: Arc::default(), metrics };
        if pusher.config.current().pyroscope.is_some() {
            pusher.queue()?;
        }
        Ok(pusher)
    }

    /// The queue, opened (and what an earlier run left in it taken up) at the first call.
    /// Blocking then.
    pub fn queue(&self) -> Result<PushQueue, QueueError> {
        let mut queue = self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(queue) = &*queue {
            return Ok(queue.clone());
        }
        let opened = PushQueue::open(&self.dir, QueueLimits::default(), self.metrics.clone())?;
        *queue = Some(opened.clone());
        Ok(opened)
    }

    /// The series `pending` is pushed to, if it is: with a `pyroscope` section, a kind
    /// Pyroscope reads (profile.proto: not traces, not goroutine text).
    pub fn series(&self, pending: &PendingCapture) -> Option<PyroscopeSeries> {
        let config = self.config.current();
        config.pyroscope.as_ref()?;
        ProfileType::of(pending.kind)?;
        let target = config.target(&pending.target);
        let service_name = target.map_or(pending.target.as_str(), |target| target.service_name());
        Some(PyroscopeSeries { service_name: service_name.to_string() })
    }

    /// Holds the staged profile of `capture`, about to be kept, for its push: the store
    /// moves it (or uploads and deletes it). Blocking. `None`, logged, if it cannot.
    pub fn hold(&self, staged: &Path, capture: &str) -> Option<Held> {
        let held = self
            .queue()
            .map_err(|error| error.to_string())
            .and_then(|queue| queue.hold(staged).map_err(|error| error.to_string()));
        held.inspect_err(|error| {
            tracing::warn!(id = %capture, error = %error, "Profile not queued for Pyroscope.");
        })
        .ok()
    }

    /// Queues the push of `kept`, whose profile was held before the store took it.
    /// Blocking. A failure is logged and counted; the capture stays kept.
    pub fn capture_kept(&self, kept: &CaptureMeta, held: Held) {
        let (Some(series), Some(profile_type)) = (&kept.pyroscope, ProfileType::of(kept.kind)) else {
            return;
        };
        let item = PushItem {
            source: PushSource::Capture(kept.id.to_string()),
            profile_type,
            service_name: series.service_name.clone(),
            alertname: kept.trigger.alertname.clone(),
            rule: Some(kept.rule.clone()),
            instance: Url::parse(&kept.url).ok().as_ref().and_then(instance),
            labels: Vec::new(),
            file: held.path().to_path_buf(),
            expires_at: expires(&self.config.current(), kept.finished_at),
        };
        self.enqueue(&item);
    }

    /// Queues a segment the recorder added, with `pyroscope.recorder`; off the async
    /// threads. Its push waits as long as a capture's would.
    pub async fn segment(&self, added: Added) {
        let config = self.config.current();
        if !config.pyroscope.as_ref().is_some_and(|pyroscope| pyroscope.recorder) {
            return;
        }
        let Some(item) = segment_item(&config, &added) else { return };
        let pusher = self.clone();
        if let Err(error) = tokio::task::spawn_blocking(move || pusher.enqueue(&item)).await {
            tracing::warn!(error = %error, "Queueing a recorded segment for Pyroscope failed.");
        }
    }

    fn enqueue(&self, item: &PushItem) {
        let queued = self
            .queue()
            .map_err(|error| error.to_string())
            .and_then(|queue| queue.enqueue_blocking(item).map_err(|error| error.to_string()));
        if let Err(error) = queued {
            tracing::warn!(push = %item.source.name(), error = %error, "Profile not queued for Pyroscope.");
        }
    }
}

/// The push of a recorder segment: the target's series (no capture id), the instance of
/// its pprof endpoint for the kinds fetched from it.
fn segment_item(config: &Config, added: &Added) -> Option<PushItem> {
    let segment = &added.segment;
    let profile_type = ProfileType::of(segment.kind)?;
    let target = config.target(&added.target);
    let pprof_url = target.and_then(|target| target.endpoint.as_ref()?.pprof_url.clone());
    let name = format!("recorder-{}-{}-{}", added.target, segment.kind, segment.to.timestamp_millis());
    Some(PushItem {
        source: PushSource::Recorded(name),
        profile_type,
        service_name: target.map_or(added.target.as_str(), |target| target.service_name()).to_string(),
        alertname: None,
        rule: None,
        instance: pprof_url.filter(|_| segment.kind.needs_pprof_url()).as_ref().and_then(instance),
        labels: Vec::new(),
        file: segment.path.clone(),
        expires_at: expires(config, segment.to),
    })
}

/// `host:port` of an endpoint, as Prometheus names a scrape target's `instance`; none for
/// what is not an HTTP URL (the source of a perf capture).
fn instance(url: &Url) -> Option<String> {
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    Some(format!("{}:{}", url.host_str()?, url.port_or_known_default()?))
}

/// When a profile finished `at` stops being worth pushing: when captures are deleted by
/// age.
fn expires(config: &Config, at: DateTime<Utc>) -> DateTime<Utc> {
    let max_age = config.storage.max_age.and_then(|age| chrono::Duration::from_std(age).ok());
    at + max_age.unwrap_or(WITHOUT_MAX_AGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An instance is the host and port of an HTTP endpoint, the scheme's port when it has
    /// none; a perf source has none.
    #[test]
    fn instances() {
        let of = |url: &str| Url::parse(url).ok().as_ref().and_then(instance);
        assert_eq!(of("http://10.0.0.7:6060/debug/pprof/heap").as_deref(), Some("10.0.0.7:6060"));
        assert_eq!(
            of("https://api.example/debug/pprof/profile?seconds=10").as_deref(),
            Some("api.example:443")
        );
        assert_eq!(of("perf: pid 4242 (found by listen_port 6060)"), None);
        assert_eq!(of("recorder"), None);
    }
}
