//! The read-only endpoints: captures, their profiles, decisions, metrics; and the auth check.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::analyze::stored::{self, AnalysisError};
use crate::app::App;
use crate::config::Credentials;
use crate::store::{CaptureFilter, ProfileStore, StoreError, is_valid_id};

/// Most items a list answers with.
const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize)]
pub struct CaptureQuery {
    target: Option<String>,
    rule: Option<String>,
    kind: Option<String>,
    limit: Option<usize>,
}

fn not_found(what: impl std::fmt::Display) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "error": what.to_string() }))).into_response()
}

/// `GET /api/v1/captures?target=&rule=&kind=&limit=`, newest first.
pub async fn list_captures(State(app): State<Arc<App>>, Query(query): Query<CaptureQuery>) -> Response {
    let filter = CaptureFilter {
        target: query.target,
        rule: query.rule,
        kind: query.kind,
        limit: Some(query.limit.unwrap_or(100).min(MAX_LIMIT)),
    };
    Json(app.store.list(&filter)).into_response()
}

/// `GET /api/v1/captures/{id}`.
pub async fn get_capture(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match is_valid_id(&id).then(|| app.store.get(&id)).flatten() {
        Some(meta) => Json(meta).into_response(),
        None => not_found(format!("no capture {id:?}")),
    }
}

/// `GET /api/v1/captures/{id}/profile`: the stored file, streamed.
pub async fn get_profile(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    if !is_valid_id(&id) {
        return not_found(format!("no capture {id:?}"));
    }
    let store = app.store.clone();
    let opened = tokio::task::spawn_blocking(move || store.open_profile(&id)).await;
    match opened {
        Ok(Ok(profile)) => {
            let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(profile.file));
            (
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                    (header::CONTENT_LENGTH, profile.len.to_string()),
                    (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{}\"", profile.file_name)),
                ],
                Body::from_stream(stream),
            )
                .into_response()
        }
        Ok(Err(error @ (StoreError::NotFound(_) | StoreError::NoProfile(_)))) => not_found(error),
        Ok(Err(error)) => {
            tracing::error!(error = %error, "Cannot open a stored profile.");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The answer for an analysis that could not be made.
fn analysis_error(error: AnalysisError) -> Response {
    match error {
        AnalysisError::NotFound(id) => not_found(format!("no capture {id:?}")),
        AnalysisError::NoBaseline(why) => not_found(why),
        AnalysisError::NotApplicable(why) => {
            (StatusCode::BAD_REQUEST, Json(json!({ "error": why }))).into_response()
        }
        error => {
            tracing::error!(error = %error, "Analysis failed.");
            (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": error.to_string() }))).into_response()
        }
    }
}

/// Runs a blocking analysis of stored captures off the async threads.
async fn analysis<T: Send + 'static>(
    app: &App,
    work: impl FnOnce(&dyn ProfileStore) -> Result<T, AnalysisError> + Send + 'static,
) -> Result<T, Response> {
    let store = app.store.clone();
    match tokio::task::spawn_blocking(move || work(store.as_ref())).await {
        Ok(result) => result.map_err(analysis_error),
        Err(_) => Err(StatusCode::INTERNAL_SERVER_ERROR.into_response()),
    }
}

/// `GET /api/v1/captures/{id}/flamegraph.svg`: drawn on first request, then kept.
pub async fn get_flamegraph(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    if !is_valid_id(&id) {
        return not_found(format!("no capture {id:?}"));
    }
    match analysis(&app, move |store| stored::flamegraph(store, &id)).await {
        Ok(svg) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                // The graph's own script and styles run; nothing else may load.
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
                ),
            ],
            svg,
        )
            .into_response(),
        Err(response) => response,
    }
}

#[derive(Debug, Deserialize)]
pub struct DiffQuery {
    base: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/captures/{id}/diff?base=ID&limit=`: what changed against a baseline, as
/// `go tool pprof -diff_base=BASE -top` shows it. Without `base`, the baseline the capture
/// was compared with when taken, else the latest baseline of its target and kind.
pub async fn get_diff(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(query): Query<DiffQuery>,
) -> Response {
    if !is_valid_id(&id) {
        return not_found(format!("no capture {id:?}"));
    }
    if let Some(base) = query.base.as_ref().filter(|base| !is_valid_id(base)) {
        return not_found(format!("no capture {base:?}"));
    }
    let limit = query.limit.unwrap_or(stored::DIFF_KEPT).min(MAX_LIMIT);
    let diffed = analysis(&app, move |store| {
        let meta = store.get(&id).ok_or_else(|| AnalysisError::NotFound(id.clone()))?;
        let base = query
            .base
            .or_else(|| meta.diff.as_ref().map(|diff| diff.base.clone()))
            .or_else(|| stored::latest_baseline(store, &meta).map(|base| base.id))
            .ok_or_else(|| {
                AnalysisError::NoBaseline(format!(
                    "no baseline capture of {} {} to compare {id} with; give ?base=ID",
                    meta.target, meta.kind
                ))
            })?;
        stored::diff_captures(store, &id, &base, limit)
    })
    .await;
    match diffed {
        Ok(diff) => Json(diff).into_response(),
        Err(response) => response,
    }
}

#[derive(Debug, Deserialize)]
pub struct LimitQuery {
    limit: Option<usize>,
}

/// `GET /api/v1/decisions?limit=`, newest first.
pub async fn list_decisions(State(app): State<Arc<App>>, Query(query): Query<LimitQuery>) -> Response {
    Json(app.decisions.recent(query.limit.unwrap_or(100).min(MAX_LIMIT))).into_response()
}

/// `GET /metrics`.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    app.sync_queue_depth();
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        app.metrics.render(),
    )
        .into_response()
}

/// Whether the request carries the configured credentials. Secrets are compared in
/// constant time.
pub fn authorized(expected: &Credentials, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let (scheme, given) = value.split_once(' ').unwrap_or((value, ""));
    let given = given.trim();
    match expected {
        Credentials::Bearer(token) => {
            scheme.eq_ignore_ascii_case("bearer")
                && bool::from(given.as_bytes().ct_eq(token.expose().as_bytes()))
        }
        Credentials::Basic { username, password } => {
            if !scheme.eq_ignore_ascii_case("basic") {
                return false;
            }
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(given) else {
                return false;
            };
            let Some((user, pass)) = std::str::from_utf8(&decoded).ok().and_then(|s| s.split_once(':'))
            else {
                return false;
            };
            let user_ok = user.as_bytes().ct_eq(username.as_bytes());
            let pass_ok = pass.as_bytes().ct_eq(password.expose().as_bytes());
            bool::from(user_ok & pass_ok)
        }
    }
}
