//! `POST /api/v1/alerts`, Alertmanager's webhook: auth, a bounded body, intake, queue,
//! decisions, and an answer at once. The intake's and the queue's refusals become the
//! HTTP answers Alertmanager acts on (it retries 5xx only).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::auth::{self, Area};
use super::listen::BodyTimeout;
use crate::config::{Config, format_duration};
use crate::intake::IntakeError;
use crate::pipeline::{App, PayloadError};

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

async fn receive(app: &Arc<App>, config: &Arc<Config>, body: Body) -> Response {
    // Bodies are read a few at a time, so that many clients sending large ones slowly cannot
    // take the memory; one that waits too long for its turn is asked to come back.
    let Ok(_turn) = tokio::time::timeout(config.http.body_timeout, app.bodies.acquire()).await else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "too many payloads being read; retry later");
    };
    let body = match axum::body::to_bytes(body, config.webhook.max_body_bytes as usize).await {
        Ok(body) => body,
        Err(error) => {
            let error = error.into_inner();
            let caused_by = |wanted: fn(&(dyn std::error::Error + 'static)) -> bool| {
                std::iter::successors(Some(&*error as &(dyn std::error::Error + 'static)), |e| e.source())
                    .any(wanted)
            };
            return if caused_by(|e| e.is::<http_body_util::LengthLimitError>()) {
                refuse(StatusCode::PAYLOAD_TOO_LARGE, "payload over webhook.max_body_size")
            } else if caused_by(|e| e.is::<BodyTimeout>()) {
                refuse(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "payload not received within http.body_timeout ({})",
                        format_duration(config.http.body_timeout)
                    ),
                )
            } else {
                refuse(StatusCode::BAD_REQUEST, "cannot read the payload")
            };
        }
    };
    let taken = match app.inbox.take(config, &body) {
        Ok(taken) => taken,
        Err(PayloadError::Intake(error @ IntakeError::Malformed(_))) => {
            return refuse(StatusCode::BAD_REQUEST, error);
        }
        Err(PayloadError::Intake(error @ IntakeError::TooManyAlerts { .. })) => {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, error);
        }
        Err(PayloadError::Queue(error)) => return refuse(StatusCode::SERVICE_UNAVAILABLE, error),
    };
    (StatusCode::OK, Json(json!({ "accepted": taken.accepted, "ignored": taken.ignored }))).into_response()
}
