//! The "scrape" half of intake: Alertmanager's `GET /api/v2/alerts`, polled every
//! `alertmanager_api.interval` with its matchers, failing over across its URLs. Alerts new
//! since the last poll go through the same intake, rules, verify and gate as the webhook's;
//! an alert still firing is not taken again. This is how a per-node agent gets its node's
//! alerts with no webhook routing: it takes every matching alert, and answers `elsewhere`
//! for those whose process is on another node.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::{AlertmanagerApiConfig, Config};
use crate::metrics::Metrics;
use crate::pipeline::inbox::Inbox;
use crate::pipeline::live::LiveConfig;

/// The most a poll's answer may be: every matching alert, with its labels and annotations.
const MAX_ANSWER: usize = 32 << 20;
/// How long one request may take, at most: a poll never overlaps the next by much.
const MAX_REQUEST: Duration = Duration::from_secs(10);

/// Why a poll (or one URL of it) got no list of alerts.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The URL of the alerts could not be made from a configured URL.
    #[error("{0}")]
    Url(#[from] url::ParseError),
    /// The request failed, or its answer could not be read to the end.
    #[error("{}", crate::http::error_chain(.0))]
    Request(#[source] reqwest::Error),
    #[error("answer over {} MiB", MAX_ANSWER >> 20)]
    TooLarge,
    /// Not a success; `body` is the start of the answer, for the reason it may give.
    #[error("HTTP {status}: {body}")]
    Status { status: reqwest::StatusCode, body: String },
    #[error("not a list of alerts: {0}")]
    NotAlerts(#[source] serde_json::Error),
    /// No URL answered: each with its error, in the order they were tried.
    #[error("{}", failures(.0))]
    EveryUrlFailed(Vec<(reqwest::Url, PollError)>),
}

fn failures(errors: &[(reqwest::Url, PollError)]) -> String {
    let each: Vec<String> = errors.iter().map(|(url, error)| format!("{url}: {error}")).collect();
    each.join("; ")
}

/// How much of a failed answer's body a `PollError::Status` keeps.
const BODY_SHOWN: usize = 200;

/// An alert as `GET /api/v2/alerts` gives it (`gettableAlert`), the fields intake uses,
/// typed as intake reads them: an alert that does not parse is skipped alone.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiAlert {
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: serde_json::Map<String, Value>,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<String>,
    #[serde(default)]
    fingerprint: String,
    #[serde(rename = "generatorURL", default)]
    generator_url: Option<String>,
}

impl ApiAlert {
    /// Whether it was taken already: the same alert, firing since the same moment.
    fn key(&self) -> String {
        let starts_at = self.starts_at.map(|at| at.to_rfc3339()).unwrap_or_default();
        format!("{}@{starts_at}", self.fingerprint)
    }

    /// As the webhook's payload has it.
    fn webhook(&self) -> Value {
        json!({
            "status": "firing",
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": self.starts_at,
            "endsAt": self.ends_at,
            "generatorURL": self.generator_url,
            "fingerprint": self.fingerprint,
        })
    }
}

/// Polls while `alertmanager_api` is configured, following reloads, until `shutdown`.
pub async fn run_polling(
    config: LiveConfig,
    inbox: Inbox,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut changes = config.changes();
    let mut poller = Poller {
        client: crate::http::client(),
        seen: HashSet::new(),
        current: 0,
        trouble: None,
        malformed: HashSet::new(),
        inbox,
        metrics,
    };
    loop {
        let config = changes.borrow_and_update().clone();
        let wait = match config.alertmanager_api.clone() {
            Some(api) => {
                poller.poll(&config, &api).await;
                api.interval
            }
            None => Duration::MAX,
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            changed = changes.changed() => if changed.is_err() { break },
            () = shutdown.cancelled() => break,
        }
    }
}

struct Poller {
    client: reqwest::Client,
    /// The alerts of the last poll that were taken (or decided at once).
    seen: HashSet<String>,
    /// The URL that answered last, tried first.
    current: usize,
    /// Why the last poll failed (as logged), while polls fail: said once, and again when
    /// it changes.
    trouble: Option<String>,
    /// Fingerprints of the listed alerts that cannot be read, told once each.
    malformed: HashSet<String>,
    /// Where the new alerts go: the webhook's way in.
    inbox: Inbox,
    metrics: Arc<Metrics>,
}

impl Poller {
    async fn poll(&mut self, config: &Arc<Config>, api: &AlertmanagerApiConfig) {
        let alerts = match self.fetch(api).await {
            Ok(alerts) => {
                self.metrics.alertmanager_poll("ok", alerts.len());
                if let Some(was) = self.trouble.take() {
                    tracing::info!(was = %was, "Alertmanager's API answers again.");
                }
                alerts
            }
            Err(error) => {
                self.metrics.alertmanager_poll("failed", 0);
                let why = error.to_string();
                if self.trouble.as_ref() != Some(&why) {
                    tracing::error!(error = %why, "Cannot poll Alertmanager's API; alerts wait until it answers.");
                    self.trouble = Some(why);
                }
                return;
            }
        };
        let alerts = self.readable(alerts);
        let keys: HashSet<String> = alerts.iter().map(ApiAlert::key).collect();
        let new: Vec<&ApiAlert> = alerts.iter().filter(|alert| !self.seen.contains(&alert.key())).collect();
        // Alerts that resolved are gone from the next answer, and forgotten here.
        self.seen.retain(|key| keys.contains(key));
        for batch in new.chunks(config.webhook.max_alerts.max(1)) {
            let body = json!({"version": "4", "status": "firing", "receiver": "alertmanager_api",
                              "alerts": batch.iter().map(|alert| alert.webhook()).collect::<Vec<_>>()});
            let body = serde_json::to_vec(&body).expect("JSON serializes");
            // Not taken (a full queue, say): not seen, so the next poll offers them again.
            if let Err(error) = self.inbox.take(config, &body) {
                tracing::warn!(error = %error, alerts = batch.len(), "Alerts from Alertmanager's API wait for the next poll.");
                continue;
            }
            self.seen.extend(batch.iter().map(|alert| alert.key()));
        }
    }

    /// The alerts of an answer that intake can read. Each of the others is skipped alone,
    /// counted and logged once (by fingerprint, for as long as Alertmanager lists it), so
    /// one bad alert never holds back the rest.
    fn readable(&mut self, answer: Vec<Value>) -> Vec<ApiAlert> {
        let mut listed = HashSet::new();
        let mut alerts = Vec::with_capacity(answer.len());
        for value in answer {
            let fingerprint = value.get("fingerprint").and_then(Value::as_str).unwrap_or("").to_string();
            match serde_json::from_value::<ApiAlert>(value) {
                Ok(alert) => alerts.push(alert),
                Err(error) => {
                    if !self.malformed.contains(&fingerprint) {
                        self.metrics.alertmanager_alerts_malformed.inc();
                        tracing::warn!(
                            fingerprint = %crate::model::text::clip(&fingerprint, 64),
                            error = %error,
                            "An alert of Alertmanager's API cannot be read; skipped, the others are taken."
                        );
                    }
                    listed.insert(fingerprint);
                }
            }
        }
        // Forgotten once Alertmanager no longer lists it: if it comes back, it is told again.
        self.malformed = listed;
        alerts
    }

    /// The active, unsilenced, uninhibited alerts that match, from the first URL that
    /// answers (the one that answered last tried first).
    async fn fetch(&mut self, api: &AlertmanagerApiConfig) -> Result<Vec<Value>, PollError> {
        let timeout = api.interval.min(MAX_REQUEST);
        let mut errors = Vec::new();
        for step in 0..api.urls.len() {
            let at = (self.current + step) % api.urls.len();
            // An Alertmanager under a path (`--web.route-prefix`) keeps it: the URL is a directory.
            let mut base = api.urls[at].clone();
            if !base.path().ends_with('/') {
                base.set_path(&format!("{}/", base.path()));
            }
            let url = base.join("api/v2/alerts")?;
            let mut query: Vec<(&str, &str)> = vec![
                ("active", "true"),
                ("silenced", "false"),
                ("inhibited", "false"),
                ("unprocessed", "true"),
            ];
            query.extend(api.matchers.iter().map(|matcher| ("filter", matcher.as_str())));
            match get_alerts(&self.client, url, &query, timeout).await {
                Ok(alerts) => {
                    if at != self.current {
                        tracing::info!(url = %api.urls[at], "Polling this Alertmanager now.");
                        self.current = at;
                    }
                    return Ok(alerts);
                }
                Err(error) => errors.push((api.urls[at].clone(), error)),
            }
        }
        Err(PollError::EveryUrlFailed(errors))
    }
}

async fn get_alerts(
    client: &reqwest::Client,
    url: reqwest::Url,
    query: &[(&str, &str)],
    timeout: Duration,
) -> Result<Vec<Value>, PollError> {
    let mut url = url;
    url.query_pairs_mut().extend_pairs(query);
    let mut response = client.get(url).timeout(timeout).send().await.map_err(PollError::Request)?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(PollError::Request)? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(PollError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(BODY_SHOWN)]).trim().to_string();
        return Err(PollError::Status { status, body: text });
    }
    serde_json::from_slice(&body).map_err(PollError::NotAlerts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// When no Alertmanager answers, the error names each URL with its own error, in the
    /// order they were tried, as the log line has always said it.
    #[test]
    fn every_url_is_named() {
        let url = |text: &str| reqwest::Url::parse(text).unwrap();
        let status = reqwest::StatusCode::SERVICE_UNAVAILABLE;
        let error = PollError::EveryUrlFailed(vec![
            (url("http://am-0:9093"), PollError::Status { status, body: "not ready".into() }),
            (url("http://am-1:9093/am"), PollError::TooLarge),
        ]);
        assert_eq!(
            error.to_string(),
            "http://am-0:9093/: HTTP 503 Service Unavailable: not ready; http://am-1:9093/am: answer over 32 MiB"
        );
        let json = serde_json::from_slice::<Vec<Value>>(b"{}").unwrap_err();
        let error = PollError::NotAlerts(json);
        assert!(error.to_string().starts_with("not a list of alerts: invalid type: map"), "{error}");
        assert!(std::error::Error::source(&error).is_some_and(|e| e.is::<serde_json::Error>()));
    }
}
