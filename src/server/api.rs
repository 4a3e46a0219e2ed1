//! The read-only endpoints: captures, their profiles, flame graphs and diffs, decisions and
//! metrics. Store calls run off the async threads. A client's mistake is a 4xx with the
//! reason; anything else is a plain 500 and a log line saying what failed, never internal
//! text (file paths) in the answer.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::analyze::stored::{self, AnalysisError};
use crate::analyze::{Budget, DIFF_KEPT};
use crate::model::{CaptureId, ProfileKind};
use crate::pipeline::App;
use crate::store::{CaptureFilter, ProfileStore, StoreError, StoredFile};

/// Most items a list answers with.
const MAX_LIMIT: usize = 1000;
/// Time an analysis asked for over HTTP may take (each of its walks): a flame graph or a
/// diff answers within seconds whatever the profile, said to be cut short if it was.
const ANALYSIS_TIME: Duration = Duration::from_secs(10);
/// Bytes read from a stored file at a time when it is streamed out.
const CHUNK: usize = 64 << 10;

/// Why a request was not answered with what it asked for.
#[derive(Debug)]
pub enum ApiError {
    NotFound(String),
    BadRequest(String),
    /// A fault of ours: logged with `what` failed, answered as a plain 500.
    Internal {
        what: &'static str,
        error: String,
    },
}

impl ApiError {
    fn no_capture(id: &str) -> ApiError {
        ApiError::NotFound(format!("no capture {id:?}"))
    }

    /// A capture id from a URL: one alertprof could have made, or 404.
    pub fn capture_id(text: &str) -> Result<CaptureId, ApiError> {
        CaptureId::parse(text).ok_or_else(|| ApiError::no_capture(text))
    }

    pub fn internal(what: &'static str, error: impl std::fmt::Display) -> ApiError {
        ApiError::Internal { what, error: error.to_string() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, message),
            ApiError::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            ApiError::Internal { what, error } => {
                tracing::error!(error = %error, "{what} failed.");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error; see alertprof's log".to_string())
            }
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::NotFound(id) => ApiError::no_capture(id.as_str()),
            error @ StoreError::NoProfile(_) => ApiError::NotFound(error.to_string()),
            error => ApiError::internal("Reading the store", error),
        }
    }
}

impl From<AnalysisError> for ApiError {
    fn from(error: AnalysisError) -> ApiError {
        match error {
            AnalysisError::NotFound(id) => ApiError::no_capture(id.as_str()),
            AnalysisError::NoBaseline(why) => ApiError::NotFound(why),
            AnalysisError::NotApplicable(why) => ApiError::BadRequest(why),
            error => ApiError::internal("Analysis", error),
        }
    }
}

/// Runs blocking work on the store off the async threads; a failure or a panic is a logged
/// plain 500.
pub async fn from_store<T, E>(
    app: &App,
    work: impl FnOnce(&ProfileStore) -> Result<T, E> + Send + 'static,
) -> Result<T, Response>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    let store = app.store.clone();
    match tokio::task::spawn_blocking(move || work(store.as_ref())).await {
        Ok(result) => result.map_err(|error| error.into().into_response()),
        Err(error) => Err(ApiError::internal("A store task", error).into_response()),
    }
}

/// Runs an analysis of stored captures within its budget; it stops when the client goes
/// away (this future is dropped with the handler's).
async fn analyze<T: Send + 'static>(
    app: &App,
    work: impl FnOnce(&ProfileStore, &Budget) -> Result<T, AnalysisError> + Send + 'static,
) -> Result<T, Response> {
    match app.analyses.run(ANALYSIS_TIME, work).await {
        Ok(result) => result.map_err(|error| ApiError::from(error).into_response()),
        Err(error) => Err(ApiError::internal("An analysis task", error).into_response()),
    }
}

#[derive(Debug, Deserialize)]
pub struct CaptureQuery {
    target: Option<String>,
    rule: Option<String>,
    kind: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/captures?target=&rule=&kind=&limit=`, newest first.
pub async fn list_captures(State(app): State<Arc<App>>, Query(query): Query<CaptureQuery>) -> Response {
    let kind = match query.kind.as_deref().filter(|kind| !kind.is_empty()) {
        None => None,
        Some(name) => match ProfileKind::parse(name) {
            Some(kind) => Some(kind),
            None => return ApiError::BadRequest(format!("unknown kind {name:?}")).into_response(),
        },
    };
    let filter = CaptureFilter {
        target: query.target,
        rule: query.rule,
        kind,
        limit: Some(query.limit.unwrap_or(100).min(MAX_LIMIT)),
    };
    match from_store(&app, move |store| Ok::<_, ApiError>(store.list(&filter))).await {
        Ok(captures) => Json(captures).into_response(),
        Err(response) => response,
    }
}

/// `GET /api/v1/captures/{id}`.
pub async fn get_capture(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let id = match ApiError::capture_id(&id) {
        Ok(id) => id,
        Err(error) => return error.into_response(),
    };
    match from_store(&app, move |store| store.get(&id).ok_or_else(|| ApiError::no_capture(id.as_str()))).await
    {
        Ok(meta) => Json(meta).into_response(),
        Err(response) => response,
    }
}

/// `GET /api/v1/captures/{id}/profile`: the stored file, streamed.
pub async fn get_profile(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let id = match ApiError::capture_id(&id) {
        Ok(id) => id,
        Err(error) => return error.into_response(),
    };
    match from_store(&app, move |store| store.open_profile(&id)).await {
        Ok(file) => {
            let headers = [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (header::CONTENT_LENGTH, file.len.to_string()),
                (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{}\"", file.name)),
            ];
            (headers, Body::from_stream(stream(file))).into_response()
        }
        Err(response) => response,
    }
}

/// A stored file read off the async threads, chunk by chunk, as the client takes them.
fn stream(file: StoredFile) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> {
    let (chunks_tx, chunks_rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(2);
    tokio::task::spawn_blocking(move || {
        let mut reader = file.reader;
        loop {
            let mut chunk = vec![0; CHUNK];
            let read = match reader.read(&mut chunk) {
                Ok(0) => return,
                Ok(read) => read,
                Err(error) => {
                    tracing::error!(error = %error, name = %file.name, "Reading a stored profile failed.");
                    chunks_tx.blocking_send(Err(error)).ok();
                    return;
                }
            };
            chunk.truncate(read);
            // The client went away: stop reading.
            if chunks_tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                return;
            }
        }
    });
    futures_util::stream::unfold(chunks_rx, |mut chunks_rx| async move {
        chunks_rx.recv().await.map(|chunk| (chunk, chunks_rx))
    })
}

/// `GET /api/v1/captures/{id}/flamegraph.svg`: drawn on first request, then kept.
pub async fn get_flamegraph(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let id = match ApiError::capture_id(&id) {
        Ok(id) => id,
        Err(error) => return error.into_response(),
    };
    match analyze(&app, move |store, budget| stored::flamegraph(store, &id, budget)).await {
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
    let id = match ApiError::capture_id(&id) {
        Ok(id) => id,
        Err(error) => return error.into_response(),
    };
    let asked_base = match query.base.as_deref().map(ApiError::capture_id).transpose() {
        Ok(base) => base,
        Err(error) => return error.into_response(),
    };
    let limit = query.limit.unwrap_or(DIFF_KEPT).min(MAX_LIMIT);
    let diffed = analyze(&app, move |store, budget| {
        let meta = store.get(&id).ok_or_else(|| AnalysisError::NotFound(id.clone()))?;
        let base = asked_base
            .or_else(|| meta.diff.as_ref().map(|diff| diff.base.clone()))
            .or_else(|| stored::latest_baseline(store, &meta).map(|base| base.id))
            .ok_or_else(|| {
                AnalysisError::NoBaseline(format!(
                    "no baseline capture of {} {} to compare {id} with; give ?base=ID",
                    meta.target, meta.kind
                ))
            })?;
        stored::diff_captures(store, &id, &base, limit, budget)
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

/// `GET /api/v1/recorder`: each recorded target's recording, by target name.
pub async fn recorder(State(app): State<Arc<App>>) -> Response {
    Json(app.recorder.statuses()).into_response()
}

/// `GET /metrics`.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    app.inbox.queue.sync_depth();
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        app.metrics.render(),
    )
        .into_response()
}
