//! Signing in from a browser. Basic auth is the browser's own prompt. A bearer token cannot
//! ride on a page navigation, so `POST /login` takes it once from a form and sets a session
//! cookie that stands for it; `require_auth` accepts that cookie on GET and HEAD only, so
//! no other site can make a signed-in browser post an alert or a reload.

use std::sync::Arc;

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::html::{self, Esc};
use crate::app::App;
use crate::config::Credentials;

pub const SESSION_COOKIE: &str = "alertprof_session";

/// The cookie's value for a token: a hash, so the cookie never holds the token itself, and
/// a new token (on reload) signs every browser out.
fn session_value(token: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"alertprof session v1\0");
    hash.update(token.as_bytes());
    hex::encode(hash.finalize())
}

/// Whether the request carries the session cookie for the configured bearer token
/// (compared in constant time). Basic auth has no sessions: the browser resends it.
pub fn session_authorized(expected: &Credentials, headers: &HeaderMap) -> bool {
    let Credentials::Bearer(token) = expected else { return false };
    let wanted = session_value(token.expose());
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == SESSION_COOKIE && bool::from(value.as_bytes().ct_eq(wanted.as_bytes())))
}

/// What a page request without valid credentials gets: the browser's basic-auth prompt, or
/// the sign-in form for a bearer token.
pub fn unauthorized(expected: &Credentials) -> Response {
    match expected {
        Credentials::Basic { .. } => {
            let body = "<h2>Sign in required</h2><p>alertprof needs its basic-auth credentials.</p>";
            let mut response = html::respond(StatusCode::UNAUTHORIZED, html::page("Sign in", false, body));
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Basic realm=\"alertprof\"".parse().unwrap());
            response
        }
        Credentials::Bearer(_) => login_form(StatusCode::UNAUTHORIZED, None),
    }
}

fn login_form(status: StatusCode, message: Option<&str>) -> Response {
    let mut body = String::from("<h2>Sign in</h2>");
    if let Some(message) = message {
        body.push_str(&format!("<p class=\"error\" id=\"login-error\">{}</p>", Esc(message)));
    }
    body.push_str(
        "<form method=\"post\" action=\"/login\" id=\"login\">\
         <label>Bearer token (<code>auth.bearer_token_file</code>) \
         <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"current-password\" required autofocus>\
         </label> <button type=\"submit\">Sign in</button></form>",
    );
    let mut response = html::respond(status, html::page("Sign in", false, &body));
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, "Bearer realm=\"alertprof\"".parse().unwrap());
    }
    response
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
}

fn see_other(location: &'static str, cookie: String) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, location.to_string()), (header::SET_COOKIE, cookie)])
        .into_response()
}

/// `GET /login`: the form, where a bearer token is configured; else there is nothing to do.
pub async fn login_page(State(app): State<Arc<App>>) -> Response {
    match app.config().auth.as_ref().map(|auth| &auth.credentials) {
        Some(Credentials::Bearer(_)) => login_form(StatusCode::OK, None),
        _ => (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response(),
    }
}

/// `POST /login` (form field `token`): the right token sets the session cookie and goes to
/// the captures; a wrong one gets the form again.
pub async fn login(State(app): State<Arc<App>>, Form(form): Form<LoginForm>) -> Response {
    let config = app.config();
    let Some(Credentials::Bearer(token)) = config.auth.as_ref().map(|auth| &auth.credentials) else {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    };
    if !bool::from(form.token.trim().as_bytes().ct_eq(token.expose().as_bytes())) {
        tracing::warn!("Sign-in with a wrong token.");
        return login_form(StatusCode::UNAUTHORIZED, Some("That token is not the one alertprof has."));
    }
    let value = session_value(token.expose());
    see_other("/", format!("{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/"))
}

/// `POST /logout`: forgets the session cookie.
pub async fn logout() -> Response {
    see_other("/", format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"))
}
