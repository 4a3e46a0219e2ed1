//! Grafana's annotation API: `POST {url}/api/annotations` with a service-account token,
//! a region from capture start to end, tags and an HTML text linking the profile.

use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde::Serialize;

use crate::config::{GrafanaConfig, Secret};
use crate::store::CaptureMeta;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an annotation was not added.
#[derive(Debug, thiserror::Error)]
pub enum AnnotateError {
    /// Grafana refused it (4xx): retrying would not help.
    #[error("Grafana refused the annotation: {status} {body}")]
    Rejected { status: u16, body: String },
    /// 5xx, timeouts and connection errors, still failing after every try.
    #[error("Grafana unavailable after {attempts} tries: {last}")]
    Unavailable { attempts: u32, last: String },
}

impl AnnotateError {
    /// The `result` label of `alertprof_annotations_total`.
    pub fn result(&self) -> &'static str {
        match self {
            AnnotateError::Rejected { .. } => "rejected",
            AnnotateError::Unavailable { .. } => "failed",
        }
    }
}

/// The body of `POST /api/annotations`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Annotation {
    #[serde(rename = "dashboardUID", skip_serializing_if = "Option::is_none")]
    pub dashboard_uid: Option<String>,
    /// Epoch milliseconds.
    pub time: i64,
    pub time_end: i64,
    pub tags: Vec<String>,
    pub text: String,
}

#[derive(Clone)]
pub struct GrafanaClient {
    http: reqwest::Client,
    endpoint: Url,
    token: Option<Secret>,
    dashboard_uid: Option<String>,
    tags: Vec<String>,
    /// How links in the text reach alertprof.
    external_url: Url,
    max_attempts: u32,
    first_backoff: Duration,
}

impl GrafanaClient {
    pub fn new(config: &GrafanaConfig, external_url: &Url) -> GrafanaClient {
        let endpoint = Url::parse(&format!("{}/api/annotations", config.url.as_str().trim_end_matches('/')))
            .unwrap_or_else(|_| config.url.clone());
        GrafanaClient {
            http: crate::http::client(),
            endpoint,
            token: config.token.clone(),
            dashboard_uid: config.dashboard_uid.clone(),
            tags: config.tags.clone(),
            external_url: external_url.clone(),
            max_attempts: config.max_attempts,
            first_backoff: config.retry_backoff,
        }
    }

    /// The link to a capture's profile.
    pub fn profile_link(&self, id: &str) -> String {
        self.capture_link(id, "/profile")
    }

    /// `{external_url}/api/v1/captures/{id}{rest}`.
    fn capture_link(&self, id: &str, rest: &str) -> String {
        format!("{}/api/v1/captures/{id}{rest}", self.external_url.as_str().trim_end_matches('/'))
    }

    /// The annotation for a kept capture; `why` is what verified it.
    pub fn annotation(&self, capture: &CaptureMeta, why: &[String]) -> Annotation {
        let mut tags = self.tags.clone();
        let alertname = capture.trigger.alertname.clone();
        let mut extra = vec![capture.target.clone(), capture.rule.clone(), capture.kind.clone()];
        extra.extend(alertname.clone());
        for tag in extra {
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        let trigger = match &alertname {
            Some(name) => format!("alert <b>{}</b>", escape(name)),
            None => format!("{} rule", capture.trigger.source.name()),
        };
        let what = if capture.baseline { "baseline " } else { "" };
        let mut text = format!(
            "alertprof captured a {what}<b>{}</b> profile of <b>{}</b> (rule {}) on {trigger}.",
            escape(&capture.kind),
            escape(&capture.target),
            escape(&capture.rule),
        );
        if !why.is_empty() {
            text.push_str(&format!("<br>Verified: {}.", escape(&why.join("; "))));
        }
        if !capture.readings.is_empty() {
            let readings: Vec<String> = capture
                .readings
                .iter()
                .map(|(k, v)| format!("{k}={}", crate::verify::trigger::show(k, *v)))
                .collect();
            text.push_str(&format!("<br>Readings: {}.", escape(&readings.join(", "))));
        }
        if let Some(summary) = capture.summary.as_ref().filter(|s| !s.top.is_empty()) {
            text.push_str(&format!(
                "<br>Top ({}, flat): {}.",
                escape(&summary.sample_type),
                escape(&crate::app::top_line(summary))
            ));
        }
        if let Some(diff) = &capture.diff {
            text.push_str(&format!(
                "<br>Grew vs baseline ({}): {}.",
                escape(&diff.sample_type),
                escape(&crate::app::grew_line(diff, &capture.kind))
            ));
        }
        // The download comes first: it is the link that matters, and the one tools look for.
        text.push_str(&format!(
            "<br><a href=\"{}\">Download {}</a> ({} bytes; open with <code>go tool pprof</code>)",
            escape(&self.profile_link(&capture.id)),
            escape(capture.file.as_deref().unwrap_or(&capture.id)),
            capture.bytes
        ));
        if capture.summary.is_some() {
            let link = self.capture_link(&capture.id, "/flamegraph.svg");
            text.push_str(&format!(" · <a href=\"{}\">Flame graph</a>", escape(&link)));
        }
        if let Some(diff) = &capture.diff {
            let link = self.capture_link(&capture.id, &format!("/diff?base={}", diff.base));
            text.push_str(&format!(" · <a href=\"{}\">Diff against the baseline</a>", escape(&link)));
        }
        let page = format!("{}/captures/{}", self.external_url.as_str().trim_end_matches('/'), capture.id);
        text.push_str(&format!(" · <a href=\"{}\">Open in alertprof</a>", escape(&page)));
        Annotation {
            dashboard_uid: self.dashboard_uid.clone(),
            time: capture.started_at.timestamp_millis(),
            time_end: capture.finished_at.timestamp_millis().max(capture.started_at.timestamp_millis()),
            tags,
            text,
        }
    }

    /// Posts an annotation, retrying 5xx, timeouts and connection errors with backoff.
    /// Returns Grafana's annotation id.
    pub async fn annotate(&self, annotation: &Annotation) -> Result<i64, AnnotateError> {
        let mut wait = self.first_backoff;
        let mut last = String::new();
        for attempt in 1..=self.max_attempts {
            let mut request = self.http.post(self.endpoint.clone()).timeout(REQUEST_TIMEOUT).json(annotation);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token.expose());
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    let body: serde_json::Value = response.json().await.unwrap_or_default();
                    return Ok(body.get("id").and_then(serde_json::Value::as_i64).unwrap_or_default());
                }
                Ok(response)
                    if response.status().is_client_error()
                        && response.status() != StatusCode::TOO_MANY_REQUESTS =>
                {
                    let status = response.status().as_u16();
                    let body = response.text().await.unwrap_or_default();
                    return Err(AnnotateError::Rejected { status, body: body.chars().take(200).collect() });
                }
                Ok(response) => last = format!("answered {}", response.status()),
                Err(error) => last = crate::http::error_chain(&error),
            }
            if attempt < self.max_attempts {
                tracing::info!(attempt, wait_ms = wait.as_millis() as u64, error = %last, "Grafana annotation failed; retrying.");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        Err(AnnotateError::Unavailable { attempts: self.max_attempts, last })
    }
}

/// Escapes text for Grafana's HTML annotation text.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
