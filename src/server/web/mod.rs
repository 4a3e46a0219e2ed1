//! The web page: captures newest first with filters, one page per capture (trigger,
//! readings, top functions, flame graph, download) and the decision log. Server-rendered
//! HTML with no external resources, behind the same auth as the API.

mod chart;
mod html;
mod pages;
mod recorded;
pub mod sign_in;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;

use super::api::from_store;
use crate::config::{Config, Credentials};
use crate::model::text::Esc;
use crate::model::{CaptureId, Decision, ProfileKind};
use crate::pipeline::App;
use crate::store::CaptureFilter;

/// Captures listed when the filter names no limit, and the most it may name.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Decisions shown under the captures.
const DECISIONS_SHOWN: usize = 50;
/// A sign-in form is small.
const MAX_LOGIN_BODY: usize = 4096;

/// The pages; `router` puts them behind auth.
pub fn pages() -> Router<Arc<App>> {
    Router::new().route("/", get(index)).route("/captures/{id}", get(capture))
}

/// Signing in and out: open, since they are how one gets credentials.
pub fn sign_in() -> Router<Arc<App>> {
    Router::new()
        .route("/login", get(sign_in::login_page).post(sign_in::login))
        .route("/logout", post(sign_in::logout))
        .layer(DefaultBodyLimit::max(MAX_LOGIN_BODY))
}

/// The filter as typed into the form: empty means any, a bad limit means the default.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    target: Option<String>,
    rule: Option<String>,
    kind: Option<String>,
    limit: Option<String>,
}

impl ListQuery {
    /// The filter, or the kind it names that is none.
    fn filter(&self) -> Result<CaptureFilter, String> {
        let given = |value: &Option<String>| value.clone().filter(|v| !v.is_empty());
        let limit = self.limit.as_deref().and_then(|l| l.trim().parse().ok()).unwrap_or(DEFAULT_LIMIT);
        let kind = match given(&self.kind) {
            None => None,
            Some(name) => Some(ProfileKind::parse(&name).ok_or(name)?),
        };
        Ok(CaptureFilter {
            target: given(&self.target),
            rule: given(&self.rule),
            kind,
            limit: Some(limit.clamp(1, MAX_LIMIT)),
        })
    }
}

/// Whether the header offers to sign out: only a bearer session can be ended from here.
fn offers_sign_out(config: &Config) -> bool {
    matches!(config.auth.as_ref().map(|a| &a.credentials), Some(Credentials::Bearer(_)))
}

/// `GET /`: the captures, newest first, and the recent decisions.
pub async fn index(State(app): State<Arc<App>>, Query(query): Query<ListQuery>) -> Response {
    let config = app.config();
    let logout = offers_sign_out(&config);
    let filter = match query.filter() {
        Ok(filter) => filter,
        Err(kind) => {
            let body = format!(
                "<h2>Unknown kind</h2><p>There is no profile kind <code>{}</code>.</p>                 <p><a href=\"/\">All captures</a></p>",
                Esc(&kind)
            );
            return html::respond(StatusCode::BAD_REQUEST, html::page("Unknown kind", logout, &body));
        }
    };
    let listed = filter.clone();
    let captures =
        match from_store(&app, move |store| Ok::<_, super::api::ApiError>(store.list(&listed))).await {
            Ok(captures) => captures,
            Err(response) => return response,
        };
    let decisions = app.decisions.recent(DECISIONS_SHOWN);
    let recent = config.targets.iter().map(|t| (t.name.to_string(), app.verifier.series(&t.name))).collect();
    let mut body = String::new();
    if let Some(trouble) = app.store.trouble() {
        body = format!(
            "<p class=\"error\" id=\"store-trouble\">The object store cannot be listed: {}. Captures of \
             other instances may be missing here, and captures fail until it can be reached.</p>\n",
            Esc(&trouble)
        );
    }
    body.push_str(&pages::index(&config, &filter, &captures, &decisions, &recent, &app.recorder.statuses()));
    html::respond(StatusCode::OK, html::page("Captures", logout, &body))
}

/// `GET /captures/{id}`.
pub async fn capture(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let config = app.config();
    let logout = offers_sign_out(&config);
    let found = match CaptureId::parse(&id) {
        Some(wanted) => {
            from_store(&app, move |store| Ok::<_, super::api::ApiError>(store.get(&wanted))).await
        }
        None => Ok(None),
    };
    let found = match found {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Some(meta) = found else {
        let body = format!(
            "<h2>No such capture</h2><p>There is no capture <code>{}</code>; it may have been \
             deleted by retention.</p><p><a href=\"/\">All captures</a></p>",
            Esc(&id)
        );
        return html::respond(StatusCode::NOT_FOUND, html::page("Not found", logout, &body));
    };
    let decisions: Vec<Decision> =
        app.decisions.recent(usize::MAX).into_iter().filter(|d| d.captures.contains(&meta.id)).collect();
    let body = pages::capture(&config, &meta, &decisions);
    html::respond(StatusCode::OK, html::page(meta.id.as_str(), logout, &body))
}
