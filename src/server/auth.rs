//! Who may call what. With `auth` set, `/api/*`, the web page and `POST /-/reload` need the
//! bearer token or basic credentials (compared in constant time); `/metrics` and health
//! only where the config says so. A browser cannot send a bearer token on a page load, so
//! signing in with it sets a session cookie that stands for it, accepted for GET and HEAD
//! only: no other site can make a signed-in browser post an alert or a reload.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{Config, Credentials};
use crate::pipeline::App;

pub const SESSION_COOKIE: &str = "alertprof_session";

/// Which endpoints a request is for, as far as auth goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// `/api/*` and `POST /-/reload`: always behind `auth` when it is set.
    Api,
    Metrics,
    Health,
    /// The web page: behind `auth` like the API; `web` asks a browser to sign in.
    Page,
}

/// Middleware: asks API clients for the configured credentials where the config says so.
pub async fn require(State((app, area)): State<(Arc<App>, Area)>, request: Request, next: Next) -> Response {
    match refusal(&app.config(), area, request.method(), request.headers()) {
        None => next.run(request).await,
        Some(refusal) => refusal,
    }
}

/// The credentials a request for `area` lacks, if the config asks for them there and the
/// request carries neither them nor, to read, a session that stands for them.
pub fn missing<'a>(
    config: &'a Config,
    area: Area,
    method: &Method,
    headers: &HeaderMap,
) -> Option<&'a Credentials> {
    let auth = config.auth.as_ref()?;
    let needed = match area {
        Area::Api | Area::Page => true,
        Area::Metrics => auth.protect_metrics,
        Area::Health => auth.protect_health,
    };
    // A browser's session cookie reads, never writes: no other site can post through it.
    let reads = matches!(*method, Method::GET | Method::HEAD);
    let carried =
        authorized(&auth.credentials, headers) || (reads && has_session(&auth.credentials, headers));
    (needed && !carried).then_some(&auth.credentials)
}

/// The answer to an API client that lacks the credentials the config asks for, if it
/// does: a 401 with the challenge. (The pages answer with a sign-in page instead.)
pub fn refusal(config: &Config, area: Area, method: &Method, headers: &HeaderMap) -> Option<Response> {
    let expected = missing(config, area, method, headers)?;
    let challenge = [(header::WWW_AUTHENTICATE, challenge(expected))];
    Some((StatusCode::UNAUTHORIZED, challenge, "unauthorized\n").into_response())
}

/// The `WWW-Authenticate` challenge for the configured credentials.
pub fn challenge(credentials: &Credentials) -> &'static str {
    match credentials {
        Credentials::Bearer(_) => "Bearer realm=\"alertprof\"",
        Credentials::Basic { .. } => "Basic realm=\"alertprof\"",
    }
}

/// Whether the request carries the configured credentials in `Authorization`.
pub fn authorized(expected: &Credentials, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let (scheme, given) = value.split_once(' ').unwrap_or((value, ""));
    let given = given.trim();
    match expected {
        Credentials::Bearer(token) => scheme.eq_ignore_ascii_case("bearer") && same(given, token.expose()),
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
            // Both compared, whatever the first says: the time tells nothing.
            let user_ok = user.as_bytes().ct_eq(username.as_bytes());
            let pass_ok = pass.as_bytes().ct_eq(password.expose().as_bytes());
            bool::from(user_ok & pass_ok)
        }
    }
}

/// Compares a secret in constant time.
fn same(given: &str, secret: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(secret.as_bytes()))
}

/// The session cookie's value for a token: a hash, so the cookie never holds the token
/// itself, and a new token (on reload) signs every browser out.
fn session_value(token: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"alertprof session v1\0");
    hash.update(token.as_bytes());
    hex::encode(hash.finalize())
}

/// Whether the request carries the session cookie of the configured bearer token. Basic
/// auth has no sessions: the browser resends it.
fn has_session(expected: &Credentials, headers: &HeaderMap) -> bool {
    let Credentials::Bearer(token) = expected else { return false };
    let wanted = session_value(token.expose());
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == SESSION_COOKIE && same(value, &wanted))
}

/// Signing in with `given`: the `Set-Cookie` value for a session, if it is the configured
/// bearer token.
pub fn sign_in(expected: &Credentials, given: &str) -> Option<String> {
    let Credentials::Bearer(token) = expected else { return None };
    if !same(given.trim(), token.expose()) {
        tracing::warn!("Sign-in with a wrong token.");
        return None;
    }
    Some(format!("{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", session_value(token.expose())))
}

/// The `Set-Cookie` value that ends a session.
pub fn sign_out() -> String {
    format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}
