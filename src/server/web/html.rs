//! What every page shares: the escaper that every value on a page is written through, the
//! frame (`templates/page.html`) with its inline style and script, the error pages, and the
//! headers every page is sent with (a Content-Security-Policy that allows nothing external).

use std::sync::LazyLock;

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::config::{Config, Credentials};
use crate::server::api::ApiError;

/// The page's inline style and script, as the frame includes them (askama leaves out a
/// template file's last line break).
static STYLE: &str = include_str!("../../../templates/page.css");
static SCRIPT: &str = include_str!("../../../templates/page.js");

/// Only this page's own inline style and script, images from alertprof itself, and forms
/// that post back to it.
static POLICY: LazyLock<String> = LazyLock::new(|| {
    let hash = |file: &str| {
        let included = file.strip_suffix('\n').unwrap_or(file);
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(included))
    };
    format!(
        "default-src 'none'; img-src 'self'; style-src 'sha256-{}'; script-src 'sha256-{}'; \
         form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        hash(STYLE),
        hash(SCRIPT)
    )
});

/// What the frame around every page says: its title, and whether the header offers to
/// sign out.
pub struct Frame<'a> {
    pub title: &'a str,
    pub logout: bool,
}

impl<'a> Frame<'a> {
    /// The frame of a page behind the configured auth: only a bearer session can be ended
    /// from here.
    pub fn new(title: &'a str, config: &Config) -> Frame<'a> {
        let logout = matches!(config.auth.as_ref().map(|a| &a.credentials), Some(Credentials::Bearer(_)));
        Frame { title, logout }
    }
}

/// A page with its headers: HTML, the policy, never cached (it may be behind auth). A page
/// that cannot be rendered is a plain 500 and a log line.
pub fn respond(status: StatusCode, page: &impl Template) -> Response {
    let html = match page.render() {
        Ok(html) => html,
        Err(error) => return ApiError::internal("Rendering a page", error).into_response(),
    };
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_str(&POLICY).expect("ascii"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

/// Why a page shows nothing of what was asked for.
#[derive(Debug)]
pub enum PageError<'a> {
    /// The filter names a kind there is none of.
    UnknownKind(&'a str),
    /// No capture has this id (any more).
    NoCapture(&'a str),
    /// The page needs basic-auth credentials, which the browser asks for.
    SignInRequired,
}

impl PageError<'_> {
    fn status(&self) -> StatusCode {
        match self {
            PageError::UnknownKind(_) => StatusCode::BAD_REQUEST,
            PageError::NoCapture(_) => StatusCode::NOT_FOUND,
            PageError::SignInRequired => StatusCode::UNAUTHORIZED,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            PageError::UnknownKind(_) => "Unknown kind",
            PageError::NoCapture(_) => "Not found",
            PageError::SignInRequired => "Sign in",
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub frame: Frame<'a>,
    pub error: PageError<'a>,
}

/// The page that says `error`, with its status.
pub fn error_page(error: PageError, config: &Config) -> Response {
    let page = ErrorPage { frame: Frame::new(error.title(), config), error };
    respond(page.error.status(), &page)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy allows exactly the style and the script a rendered page carries.
    #[test]
    fn policy_hashes_what_the_page_carries() {
        let page = ErrorPage { frame: Frame { title: "t", logout: true }, error: PageError::SignInRequired };
        let html = page.render().unwrap();
        let between = |open: &str, close: &str| {
            let start = html.find(open).expect(open) + open.len();
            html[start..start + html[start..].find(close).expect(close)].to_string()
        };
        let hash = |text: String| base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text));
        let style = format!("style-src 'sha256-{}'", hash(between("<style>", "</style>")));
        let script = format!("script-src 'sha256-{}'", hash(between("<script>", "</script>")));
        assert!(POLICY.contains(&style) && POLICY.contains(&script), "{}", *POLICY);
        assert!(between("<style>", "</style>").starts_with("body {"));
        assert!(between("<script>", "</script>").contains("form.filter select"));
    }
}
