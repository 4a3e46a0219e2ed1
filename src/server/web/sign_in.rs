//! Signing in to the pages. Basic auth is the browser's own prompt. A bearer token cannot
//! ride on a page navigation, so `POST /login` takes it once from a form
//! (`templates/sign_in.html`); `auth` decides and makes the session cookie.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::html::{self, Frame, PageError};
use crate::config::{Config, Credentials};
use crate::pipeline::App;
use crate::server::auth::{self, Area};

/// Middleware: a page request without the configured credentials gets the browser's
/// basic-auth prompt, or the sign-in form for a bearer token.
pub async fn require(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let config = app.config();
    let Some(expected) = auth::missing(&config, Area::Page, request.method(), request.headers()) else {
        return next.run(request).await;
    };
    match expected {
        Credentials::Basic { .. } => asking(html::error_page(PageError::SignInRequired, &config), expected),
        Credentials::Bearer(_) => asking(sign_in_form(StatusCode::UNAUTHORIZED, None), expected),
    }
}

/// A 401 `page` that asks for `expected`.
fn asking(mut page: Response, expected: &Credentials) -> Response {
    page.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(auth::challenge(expected)));
    page
}

#[derive(Template)]
#[template(path = "sign_in.html")]
pub struct SignInPage<'a> {
    pub frame: Frame<'a>,
    /// Why the last try did not sign in.
    pub message: Option<&'a str>,
}

fn sign_in_form(status: StatusCode, message: Option<&str>) -> Response {
    html::respond(status, &SignInPage { frame: Frame { title: "Sign in", logout: false }, message })
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
}

fn see_other(location: &'static str, cookie: Option<String>) -> Response {
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
    if let Some(cookie) = cookie.and_then(|cookie| cookie.parse().ok()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// The bearer token's credentials, where one is configured: else there is nothing to sign
/// in to here.
fn bearer(config: &Config) -> Option<&Credentials> {
    config.auth.as_ref().map(|auth| &auth.credentials).filter(|c| matches!(c, Credentials::Bearer(_)))
}

/// `GET /login`: the form, where a bearer token is configured.
pub async fn login_page(State(app): State<Arc<App>>) -> Response {
    match bearer(&app.config()) {
        Some(_) => sign_in_form(StatusCode::OK, None),
        None => see_other("/", None),
    }
}

/// `POST /login` (form field `token`): the right token sets the session cookie and goes to
/// the captures; a wrong one gets the form again.
pub async fn login(State(app): State<Arc<App>>, Form(form): Form<LoginForm>) -> Response {
    let config = app.config();
    let Some(expected) = bearer(&config) else { return see_other("/", None) };
    match auth::sign_in(expected, &form.token) {
        Some(cookie) => see_other("/", Some(cookie)),
        None => {
            let wrong = Some("That token is not the one alertprof has.");
            asking(sign_in_form(StatusCode::UNAUTHORIZED, wrong), expected)
        }
    }
}

/// `POST /logout`: forgets the session cookie.
pub async fn logout() -> Response {
    see_other("/", Some(auth::sign_out()))
}
