//! The web page: captures newest first with filters, one page per capture (trigger,
//! readings, top functions, flame graph, download) and the decision log. Server-rendered
//! from the askama templates in `templates/`, with no external resources, behind the same
//! auth as the API.
//!
//! One file per page (`list`, `capture`, `sign_in`), and the parts they share: `html` (the
//! frame, the escaper, the headers, the error pages), `chart`, `decisions`, `recorded` and
//! `links`. They use each other downwards only; none uses this file.

mod capture;
mod chart;
mod decisions;
mod html;
mod links;
mod list;
mod recorded;
mod sign_in;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};

use crate::pipeline::App;

/// A sign-in form is small.
const MAX_LOGIN_BODY: usize = 4096;

/// The pages, behind the configured auth: a browser without credentials is asked to sign in.
pub fn pages(app: Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route("/", get(list::index))
        .route("/captures/{id}", get(capture::capture))
        .route_layer(middleware::from_fn_with_state(app, sign_in::require))
}

/// Signing in and out: open, since they are how one gets credentials.
pub fn sign_in() -> Router<Arc<App>> {
    Router::new()
        .route("/login", get(sign_in::login_page).post(sign_in::login))
        .route("/logout", post(sign_in::logout))
        .layer(DefaultBodyLimit::max(MAX_LOGIN_BODY))
}
