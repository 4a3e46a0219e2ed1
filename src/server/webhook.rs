//! `POST /api/v1/alerts`, Alertmanager's webhook: auth, a bounded body, intake, queue,
//! decisions, and an answer at once. The intake's and the queue's refusals become the
//! HTTP answers Alertmanager acts on (it retries 5xx only).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::json;

use super::auth::{self, Area};
use crate::config::Config;
use crate::intake::{IntakeError, intake, parse};
use crate::pipeline::App;

/// `POST /api/v1/alerts`: auth first, then the body, bounded by `webhook.max_body_size`.
pub async fn receive_alerts(State(app): State<Arc<App>>, request: Request) -> Response {
    let config = app.config();
    let response = match auth::refusal(&config, Area::Api, request.method(), request.headers()) {
        Some(refusal) => refusal,
        None => receive(&app, &config, request.into_body()).await,
    };
    app.metrics.webhook_request(response.status().as_u16());
    response
}

fn refuse(status: StatusCode, error: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %error, "Webhook payload not taken.");
    (status, Json(json!({ "error": error.to_string() }))).into_response()
}

async fn receive(app: &App, config: &Arc<Config>, body: Body) -> Response {
    let body = match axum::body::to_bytes(body, config.webhook.max_body_bytes as usize).await {
        Ok(body) => body,
        Err(error) => {
            return match error.into_inner().is::<http_body_util::LengthLimitError>() {
                true => refuse(StatusCode::PAYLOAD_TOO_LARGE, "payload over webhook.max_body_size"),
                false => refuse(StatusCode::BAD_REQUEST, "cannot read the payload"),
            };
        }
    };
    let taken = parse(&body).and_then(|payload| {
        let now = Utc::now();
        let refused =
            |dedupe: &str, rule: &str, target: &str| app.gate.check(Some(dedupe), rule, target, now);
        intake(config, &payload, refused).map(|taken| (payload, taken))
    });
    let (payload, taken) = match taken {
        Ok(taken) => taken,
        Err(error @ IntakeError::Malformed(_)) => return refuse(StatusCode::BAD_REQUEST, error),
        Err(error @ IntakeError::TooManyAlerts { .. }) => {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, error);
        }
    };
    // All or nothing: a refused payload changes nothing, not even the counts.
    if let Err(error) = app.enqueue(taken.jobs) {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, error);
    }
    for alert in &payload.alerts {
        app.metrics.alert_received(&alert.status);
    }
    app.decisions.record_all(taken.decisions, &app.metrics);
    (StatusCode::OK, Json(json!({ "accepted": taken.accepted, "ignored": taken.ignored }))).into_response()
}
