//! The Alertmanager webhook: parse, check, match alerts to rules and targets, queue the
//! jobs, answer at once. Nothing here waits on a target.

pub mod alertmanager;

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::json;

pub use alertmanager::{Alert, AlertStatus, WebhookPayload};

use crate::app::{App, Area, auth_refusal, refusal_outcome};
use crate::config::Config;
use crate::decision::{Decision, Outcome, Reason};
use crate::rules::{Match, match_alert};
use crate::store::TriggerSource;

/// What the webhook answers when it does not take a payload. Only the intake's errors
/// become HTTP responses.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("malformed payload: {0}")]
    Malformed(String),
    #[error("{count} alerts in one payload; at most {max} are taken (webhook.max_alerts)")]
    TooManyAlerts { count: usize, max: usize },
    #[error("queue full ({capacity} jobs waiting); retry later")]
    QueueFull { capacity: usize },
    #[error("alertprof is shutting down")]
    ShuttingDown,
}

impl IntakeError {
    fn status(&self) -> StatusCode {
        match self {
            IntakeError::Malformed(_) => StatusCode::BAD_REQUEST,
            IntakeError::TooManyAlerts { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IntakeError::QueueFull { .. } | IntakeError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for IntakeError {
    fn into_response(self) -> Response {
        (self.status(), Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// `POST /api/v1/alerts`: auth first, then the body, bounded by `webhook.max_body_size`.
pub async fn receive_alerts(State(app): State<Arc<App>>, request: Request) -> Response {
    let config = app.config();
    let response = match auth_refusal(&config, Area::Api, request.method(), request.headers()) {
        Some(refusal) => refusal,
        None => receive(&app, &config, request.into_body()).await,
    };
    app.metrics.webhook_request(response.status().as_u16());
    response
}

async fn receive(app: &App, config: &Arc<Config>, body: Body) -> Response {
    let body = match axum::body::to_bytes(body, config.webhook.max_body_bytes as usize).await {
        Ok(body) => body,
        Err(error) => {
            let too_large = error.into_inner().is::<http_body_util::LengthLimitError>();
            let (status, error) = match too_large {
                true => (StatusCode::PAYLOAD_TOO_LARGE, "payload over webhook.max_body_size".to_string()),
                false => (StatusCode::BAD_REQUEST, "cannot read the payload".to_string()),
            };
            tracing::warn!(error = %error, "Webhook payload not taken.");
            return (status, Json(json!({ "error": error }))).into_response();
        }
    };
    match accept(app, config, &body) {
        Ok((accepted, ignored)) => {
            (StatusCode::OK, Json(json!({ "accepted": accepted, "ignored": ignored }))).into_response()
        }
        Err(error) => {
            tracing::warn!(error = %error, "Webhook payload not taken.");
            error.into_response()
        }
    }
}

/// Parses and checks a webhook body.
pub fn parse(body: &[u8]) -> Result<WebhookPayload<'_>, IntakeError> {
    let payload: WebhookPayload =
        serde_json::from_slice(body).map_err(|error| IntakeError::Malformed(error.to_string()))?;
    payload.check().map_err(IntakeError::Malformed)?;
    Ok(payload)
}

/// Parses and queues a payload; returns (alerts accepted, alerts ignored). On any error
/// nothing was queued or recorded.
fn accept(app: &App, config: &Arc<Config>, body: &[u8]) -> Result<(usize, usize), IntakeError> {
    let payload = parse(body)?;
    if payload.alerts.len() > config.webhook.max_alerts {
        return Err(IntakeError::TooManyAlerts {
            count: payload.alerts.len(),
            max: config.webhook.max_alerts,
        });
    }
    let now = Utc::now();
    let mut jobs = Vec::new();
    let mut decisions = Vec::with_capacity(payload.alerts.len());
    let mut accepted = 0;
    // A duplicate or a cooldown is decided here and never queued: most of an alert storm,
    // kept off the queue so its bound protects real work, and no job is built for it.
    let refused = |dedupe: &str, rule: &str, target: &str| app.gate.check(Some(dedupe), rule, target, now);
    for alert in &payload.alerts {
        let mut taken = false;
        let decide = |rule, target, (outcome, reason): (Outcome, Reason)| Decision {
            at: now,
            source: TriggerSource::Alertmanager,
            outcome,
            reason,
            alertname: alert.alertname().map(str::to_string),
            fingerprint: Some(alert.fingerprint().into_owned()),
            rule,
            target,
            captures: Vec::new(),
            readings: Default::default(),
            annotations: Vec::new(),
            top: Default::default(),
            grew: Default::default(),
        };
        for found in match_alert(config, alert, refused) {
            match found {
                Match::Job(job) => {
                    taken = true;
                    jobs.push(*job);
                }
                Match::Refused { rule, target, refusal } => {
                    taken = true;
                    decisions.push(decide(Some(rule), Some(target), refusal_outcome(refusal)));
                }
                Match::Skip { rule, target, outcome, reason } => {
                    decisions.push(decide(rule, target, (outcome, reason.into())))
                }
            }
        }
        accepted += usize::from(taken);
    }
    let permits = app.reserve(jobs.len())?;
    for alert in &payload.alerts {
        app.metrics.alert_received(&alert.status);
    }
    for (permit, job) in permits.zip(jobs) {
        permit.send(job);
    }
    app.sync_queue_depth();
    let ignored = payload.alerts.len() - accepted;
    app.decisions.record_all(decisions, &app.metrics);
    Ok((accepted, ignored))
}
