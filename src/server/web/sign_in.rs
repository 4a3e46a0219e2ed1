//! The sign-in pages. Basic auth is the browser's own prompt. A bearer token cannot ride on
//! a page navigation, so `POST /login` takes it once from a form; `auth` decides and makes
//! the session cookie.

use std::sync::Arc;

use axum::Form;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::html;
use crate::config::Credentials;
use crate::model::text::Esc;
use crate::pipeline::App;
use crate::server::auth;

/// What a page request without valid credentials gets: the browser's basic-auth prompt, or
/// the sign-in form for a bearer token.
pub fn unauthorized(expected: &Credentials) -> Response {
    match expected {
        Credentials::Basic { .. } => {
            let body = "<h2>Sign in required</h2><p>alertprof needs its basic-auth credentials.</p>";
            let mut response = html::respond(StatusCode::UNAUTHORIZED, html::page("Sign in", false, body));
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, auth::challenge(expected).parse().unwrap());
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

fn see_other(location: &'static str, cookie: Option<String>) -> Response {
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
    if let Some(cookie) = cookie.and_then(|cookie| cookie.parse().ok()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// `GET /login`: the form, where a bearer token is configured; else there is nothing to do.
pub async fn login_page(State(app): State<Arc<App>>) -> Response {
    match app.config().auth.as_ref().map(|auth| &auth.credentials) {
        Some(Credentials::Bearer(_)) => login_form(StatusCode::OK, None),
        _ => see_other("/", None),
    }
}

/// `POST /login` (form field `token`): the right token sets the session cookie and goes to
/// the captures; a wrong one gets the form again.
pub async fn login(State(app): State<Arc<App>>, Form(form): Form<LoginForm>) -> Response {
    let config = app.config();
    let Some(credentials @ Credentials::Bearer(_)) = config.auth.as_ref().map(|auth| &auth.credentials)
    else {
        return see_other("/", None);
    };
    match auth::sign_in(credentials, &form.token) {
        Some(cookie) => see_other("/", Some(cookie)),
        None => login_form(StatusCode::UNAUTHORIZED, Some("That token is not the one alertprof has.")),
    }
}

/// `POST /logout`: forgets the session cookie.
pub async fn logout() -> Response {
    see_other("/", Some(auth::sign_out()))
}
