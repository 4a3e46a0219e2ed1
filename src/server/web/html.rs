//! The page frame with its inline style and script, and the headers every page is sent
//! with (a Content-Security-Policy that allows nothing external). Text goes through
//! `model::text`, as everywhere else.

use std::fmt::Write;
use std::sync::LazyLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::model::text::Esc;

const STYLE: &str = "
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 1.5rem 2rem; color: #1d1d1f; }
header { display: flex; align-items: baseline; gap: 1rem; border-bottom: 1px solid #ddd; }
header h1 { font-size: 1.3rem; margin: .6rem 0; }
header h1 a { color: inherit; text-decoration: none; }
header form { margin-left: auto; }
h2 { font-size: 1.1rem; margin-top: 1.6rem; }
table { border-collapse: collapse; margin: .4rem 0; }
th, td { text-align: left; padding: .2rem .6rem; border-bottom: 1px solid #eee; vertical-align: top; }
th { background: #f5f5f7; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code, pre, .mono { font-family: ui-monospace, monospace; font-size: 13px; }
pre { background: #f5f5f7; padding: .5rem .8rem; white-space: pre-wrap; overflow-wrap: anywhere; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2rem 1rem; }
dt { color: #666; }
dd { margin: 0; }
form.filter { display: flex; flex-wrap: wrap; gap: .8rem; align-items: end; margin: 1rem 0; }
form.filter label { display: flex; flex-direction: column; font-size: 12px; color: #666; }
.ok { color: #1a7f37; }
.failed, .error { color: #b42318; }
.badge { font-size: 11px; background: #e8e0ff; color: #4b2aa8; padding: 0 .4rem; border-radius: 3px; }
.flame { max-width: 100%; border: 1px solid #ddd; }
.muted { color: #666; }
";

/// Submits the filter form when a select changes; the form works without it.
const SCRIPT: &str = "
document.querySelectorAll('form.filter select').forEach(function (select) {
  select.addEventListener('change', function () { select.form.submit(); });
});
";

/// Only this page's own inline style and script, images from alertprof itself, and forms
/// that post back to it.
static POLICY: LazyLock<String> = LazyLock::new(|| {
    let hash = |text: &str| base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text));
    format!(
        "default-src 'none'; img-src 'self'; style-src 'sha256-{}'; script-src 'sha256-{}'; \
         form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        hash(STYLE),
        hash(SCRIPT)
    )
});

/// A whole page: title, header (with a sign-out button when `logout`), body.
pub fn page(title: &str, logout: bool, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 3000);
    write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · alertprof</title><style>{STYLE}</style></head>\n<body><header>\
         <h1><a href=\"/\">alertprof</a></h1><span class=\"muted\">profiles caught when alerts fire</span>",
        Esc(title)
    )
    .unwrap();
    if logout {
        out.push_str(
            "<form method=\"post\" action=\"/logout\"><button type=\"submit\">Sign out</button></form>",
        );
    }
    out.push_str("</header>\n<main>\n");
    out.push_str(body);
    write!(out, "</main>\n<script>{SCRIPT}</script>\n</body></html>\n").unwrap();
    out
}

/// A page with its headers: HTML, the policy, never cached (it may be behind auth).
pub fn respond(status: StatusCode, html: String) -> Response {
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_str(&POLICY).expect("ascii"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}
