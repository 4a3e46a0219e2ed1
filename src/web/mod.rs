//! The web page: captures newest first with filters, one page per capture (trigger,
//! readings, top functions, flame graph, download) and the decision log. Server-rendered
//! HTML with no external resources, behind the same auth as the API.

mod html;
mod session;

pub use session::{SESSION_COOKIE, session_authorized, unauthorized};

use std::fmt::Write;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;

use crate::analyze::Diff;
use crate::analyze::diff::Measure;
use crate::app::App;
use crate::capture::{BodyFormat, ProfileKind};
use crate::config::{Config, Credentials};
use crate::decision::Decision;
use crate::store::{CaptureFilter, CaptureMeta, is_valid_id};
use html::{Esc, amount, number, time};

/// Captures listed when the filter names no limit, and the most it may name.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Decisions shown under the captures.
const DECISIONS_SHOWN: usize = 50;
/// A sign-in form is small.
const MAX_LOGIN_BODY: usize = 4096;

/// The pages; `router` puts them behind `require_auth`.
pub fn pages() -> Router<Arc<App>> {
    Router::new().route("/", get(index)).route("/captures/{id}", get(capture))
}

/// Signing in and out: open, since they are how one gets credentials.
pub fn sign_in() -> Router<Arc<App>> {
    Router::new()
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
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
    fn filter(&self) -> CaptureFilter {
        let given = |value: &Option<String>| value.clone().filter(|v| !v.is_empty());
        let limit = self.limit.as_deref().and_then(|l| l.trim().parse().ok()).unwrap_or(DEFAULT_LIMIT);
        CaptureFilter {
            target: given(&self.target),
            rule: given(&self.rule),
            kind: given(&self.kind),
            limit: Some(limit.clamp(1, MAX_LIMIT)),
        }
    }
}

/// Whether the header offers to sign out: only a bearer session can be ended from here.
fn offers_sign_out(config: &Config) -> bool {
    matches!(config.auth.as_ref().map(|a| &a.credentials), Some(Credentials::Bearer(_)))
}

/// `GET /`: the captures, newest first, and the recent decisions.
pub async fn index(State(app): State<Arc<App>>, Query(query): Query<ListQuery>) -> Response {
    let config = app.config();
    let filter = query.filter();
    let captures = app.store.list(&filter);
    let decisions = app.decisions.recent(DECISIONS_SHOWN);
    let body = render_index(&config, &filter, &captures, &decisions);
    html::respond(StatusCode::OK, html::page("Captures", offers_sign_out(&config), &body))
}

/// `GET /captures/{id}`.
pub async fn capture(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let config = app.config();
    let logout = offers_sign_out(&config);
    let Some(meta) = is_valid_id(&id).then(|| app.store.get(&id)).flatten() else {
        let body = format!(
            "<h2>No such capture</h2><p>There is no capture <code>{}</code>; it may have been \
             deleted by retention.</p><p><a href=\"/\">All captures</a></p>",
            Esc(&id)
        );
        return html::respond(StatusCode::NOT_FOUND, html::page("Not found", logout, &body));
    };
    let decisions: Vec<Decision> =
        app.decisions.recent(usize::MAX).into_iter().filter(|d| d.captures.contains(&meta.id)).collect();
    let body = render_capture(&config, &meta, &decisions);
    html::respond(StatusCode::OK, html::page(&meta.id, logout, &body))
}

/// The mark of a baseline capture.
fn baseline_badge(meta: &CaptureMeta) -> &'static str {
    if meta.baseline { " <span class=\"badge\">baseline</span>" } else { "" }
}

/// `<select>` of `known` values plus "any", with `chosen` selected (kept even when unknown).
fn select(out: &mut String, name: &str, known: Vec<&str>, chosen: Option<&str>) {
    let mut values = known;
    if let Some(chosen) = chosen.filter(|c| !values.contains(c)) {
        values.push(chosen);
    }
    write!(out, "<label>{name}<select name=\"{name}\" id=\"filter-{name}\"><option value=\"\">any</option>")
        .unwrap();
    for value in values {
        let selected = if Some(value) == chosen { " selected" } else { "" };
        write!(out, "<option value=\"{0}\"{selected}>{0}</option>", Esc(value)).unwrap();
    }
    out.push_str("</select></label>");
}

/// The filter form, the captures and the recent decisions.
fn render_index(
    config: &Config,
    filter: &CaptureFilter,
    captures: &[CaptureMeta],
    decisions: &[Decision],
) -> String {
    let mut out = String::new();
    out.push_str("<form class=\"filter\" method=\"get\" action=\"/\">");
    select(&mut out, "target", config.targets.iter().map(|t| &*t.name).collect(), filter.target.as_deref());
    select(&mut out, "rule", config.rules.iter().map(|r| &*r.name).collect(), filter.rule.as_deref());
    select(&mut out, "kind", ProfileKind::ALL.iter().map(|k| k.name()).collect(), filter.kind.as_deref());
    writeln!(
        out,
        "<label>limit<input type=\"number\" name=\"limit\" min=\"1\" max=\"{MAX_LIMIT}\" value=\"{}\"></label>\
         <button type=\"submit\">Filter</button> <a href=\"/\">clear</a></form>",
        filter.limit.unwrap_or(DEFAULT_LIMIT)
    )
    .unwrap();

    writeln!(out, "<h2>Captures <span class=\"muted\">({} shown)</span></h2>", captures.len()).unwrap();
    if captures.is_empty() {
        out.push_str("<p class=\"muted\" id=\"no-captures\">No captures yet.</p>\n");
    } else {
        out.push_str(
            "<table id=\"captures\"><thead><tr><th>time</th><th>target</th><th>rule</th><th>kind</th>\
             <th>status</th><th>trigger</th><th>top function</th></tr></thead><tbody>\n",
        );
        for meta in captures {
            let baseline = baseline_badge(meta);
            let status = if meta.is_ok() { "ok" } else { "failed" };
            writeln!(
                out,
                "<tr><td><a class=\"capture\" href=\"/captures/{id}\">{time}</a>{baseline}</td><td>{target}</td>\
                 <td>{rule}</td><td>{kind}</td><td class=\"{status}\">{status}</td><td>{source}{alertname}</td>\
                 <td class=\"mono\">{top}</td></tr>",
                id = Esc(&meta.id),
                time = time(&meta.started_at),
                target = Esc(&meta.target),
                rule = Esc(&meta.rule),
                kind = Esc(&meta.kind),
                source = meta.trigger.source.name(),
                alertname = meta.trigger.alertname.as_deref().map(|a| format!(" / {}", Esc(a))).unwrap_or_default(),
                top = meta
                    .summary
                    .as_ref()
                    .and_then(|s| s.top.first())
                    .map(|t| Esc(&t.short()).to_string())
                    .unwrap_or_default(),
            )
            .unwrap();
        }
        out.push_str("</tbody></table>\n");
    }

    out.push_str(
        "<h2 id=\"decisions\">Recent decisions <span class=\"muted\">(<a href=\"/api/v1/decisions\">JSON</a>)</span></h2>\n",
    );
    render_decisions(&mut out, decisions, "No decisions since alertprof started.");
    out
}

/// Decisions newest first, each linking the captures it made.
fn render_decisions(out: &mut String, decisions: &[Decision], none: &str) {
    if decisions.is_empty() {
        writeln!(out, "<p class=\"muted\">{}</p>", Esc(none)).unwrap();
        return;
    }
    out.push_str(
        "<table class=\"decisions\"><thead><tr><th>time</th><th>outcome</th><th>source</th><th>rule</th>\
         <th>target</th><th>alert</th><th>reason</th><th>captures</th></tr></thead><tbody>\n",
    );
    for decision in decisions {
        let opt = |value: Option<&str>| Esc(value.unwrap_or("")).to_string();
        let captures: Vec<String> = decision
            .captures
            .iter()
            .map(|id| format!("<a href=\"/captures/{0}\">{0}</a>", Esc(id)))
            .collect();
        writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(&decision.at),
            decision.outcome.name(),
            decision.source.name(),
            opt(decision.rule.as_deref()),
            opt(decision.target.as_deref()),
            opt(decision.alertname.as_deref()),
            Esc(&decision.reason.to_string()),
            captures.join("<br>"),
        )
        .unwrap();
    }
    out.push_str("</tbody></table>\n");
}

/// Whether the capture is profile.proto, which the flame graph and `go tool pprof` read.
fn is_pprof(meta: &CaptureMeta) -> bool {
    meta.summary.is_some() || ProfileKind::parse(&meta.kind).is_some_and(|k| k.format() == BodyFormat::Pprof)
}

/// A capture's page: what it is, its error, the download, top functions, what grew against
/// a baseline, the flame graph, what set it off, and the decisions that made it.
fn render_capture(config: &Config, meta: &CaptureMeta, decisions: &[Decision]) -> String {
    let mut out = String::new();
    let id = Esc(&meta.id);
    let status = if meta.is_ok() { "ok" } else { "failed" };
    let baseline = baseline_badge(meta);
    write!(out, "<h2 id=\"capture-id\">{id}{baseline}</h2>\n<dl id=\"capture\">").unwrap();
    let mut row = |name: &str, value: String| {
        write!(out, "<dt>{name}</dt><dd id=\"capture-{name}\">{value}</dd>").unwrap();
    };
    row("target", Esc(&meta.target).to_string());
    row("rule", Esc(&meta.rule).to_string());
    row("kind", Esc(&meta.kind).to_string());
    row("status", format!("<span class=\"{status}\">{status}</span>"));
    row("started", time(&meta.started_at));
    row("finished", time(&meta.finished_at));
    if let Some(seconds) = meta.seconds {
        row("seconds", seconds.to_string());
    }
    row("url", format!("<code>{}</code>", Esc(&meta.url)));
    if meta.is_ok() {
        row("size", amount(meta.bytes as i64, "bytes"));
    }
    if let Some(sha256) = &meta.sha256 {
        row("sha256", format!("<code>{}</code>", Esc(sha256)));
    }
    out.push_str("</dl>\n");

    if let Some(error) = &meta.error {
        writeln!(out, "<h2>Error</h2><pre class=\"error\" id=\"capture-error\">{}</pre>", Esc(error))
            .unwrap();
    }

    if meta.is_ok() {
        render_download(&mut out, config, meta);
    }

    if let Some(summary) = &meta.summary {
        let unit = summary.sample_type.split_once('/').map_or("", |(_, unit)| unit);
        write!(
            out,
            "<h2>Top functions <span class=\"muted\">({}, total {})</span></h2>",
            Esc(&summary.sample_type),
            amount(summary.total, unit)
        )
        .unwrap();
        top_table(
            &mut out,
            "top",
            summary.top.iter().map(|t| (t.function.as_str(), t.flat, t.flat_percent, t.cum, t.cum_percent)),
            unit,
            false,
        );
    }

    if let Some(diff) = &meta.diff {
        render_diff(&mut out, meta, diff);
    }

    if meta.is_ok() && is_pprof(meta) {
        write!(
            out,
            "<h2>Flame graph <span class=\"muted\">(<a href=\"/api/v1/captures/{id}/flamegraph.svg\" \
             id=\"flamegraph-link\">open on its own</a>)</span></h2>\n\
             <img class=\"flame\" id=\"flamegraph\" src=\"/api/v1/captures/{id}/flamegraph.svg\" \
             alt=\"flame graph of {id}\">\n"
        )
        .unwrap();
    }

    render_trigger(&mut out, meta);

    out.push_str("<h2>Decisions</h2>");
    render_decisions(
        &mut out,
        decisions,
        "No decision in memory mentions this capture (decisions do not survive a restart).",
    );
    out
}

/// What set the capture off: the alert (or watch rule), its labels, the local readings.
fn render_trigger(out: &mut String, meta: &CaptureMeta) {
    let trigger = &meta.trigger;
    out.push_str("<h2>Trigger</h2><dl id=\"trigger\">");
    write!(out, "<dt>source</dt><dd>{}</dd>", trigger.source.name()).unwrap();
    let fields =
        [("alertname", trigger.alertname.as_deref()), ("fingerprint", trigger.fingerprint.as_deref())];
    for (name, value) in fields {
        if let Some(value) = value {
            write!(out, "<dt>{name}</dt><dd>{}</dd>", Esc(value)).unwrap();
        }
    }
    if let Some(starts_at) = &trigger.starts_at {
        write!(out, "<dt>starts at</dt><dd>{}</dd>", time(starts_at)).unwrap();
    }
    out.push_str("</dl>\n");
    if !trigger.labels.is_empty() {
        out.push_str("<table id=\"labels\"><thead><tr><th>label</th><th>value</th></tr></thead><tbody>");
        for (name, value) in trigger.labels.iter() {
            write!(out, "<tr><td>{}</td><td>{}</td></tr>", Esc(name), Esc(value)).unwrap();
        }
        out.push_str("</tbody></table>\n");
    }

    out.push_str("<h2>Readings</h2>");
    if meta.readings.is_empty() {
        out.push_str("<p class=\"muted\">No readings were taken for this capture.</p>\n");
    } else {
        out.push_str("<table id=\"readings\"><thead><tr><th>signal</th><th class=\"num\">value</th></tr></thead><tbody>");
        for (signal, value) in &meta.readings {
            write!(out, "<tr><td>{}</td><td class=\"num\">{}</td></tr>", Esc(signal), number(*value))
                .unwrap();
        }
        out.push_str("</tbody></table>\n");
    }
}

/// The table of top functions: `rows` as (function, flat, flat%, cum, cum%); `changes`
/// when the values are differences, shown with their sign.
fn top_table<'a>(
    out: &mut String,
    id: &str,
    rows: impl Iterator<Item = (&'a str, i64, f64, i64, f64)>,
    unit: &str,
    changes: bool,
) {
    let value = |value: i64| match changes && value >= 0 {
        true => format!("+{}", amount(value, unit)),
        false => amount(value, unit),
    };
    let percent = |percent: f64| match changes {
        true => format!("{percent:+.2}%"),
        false => format!("{percent:.2}%"),
    };
    writeln!(
        out,
        "<table id=\"{id}\"><thead><tr><th class=\"num\">flat</th><th class=\"num\">flat%</th>\
         <th class=\"num\">cum</th><th class=\"num\">cum%</th><th>function</th></tr></thead><tbody>"
    )
    .unwrap();
    for (function, flat, flat_percent, cum, cum_percent) in rows {
        writeln!(
            out,
            "<tr><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"mono\">{}</td></tr>",
            value(flat),
            percent(flat_percent),
            value(cum),
            percent(cum_percent),
            Esc(function)
        )
        .unwrap();
    }
    out.push_str("</tbody></table>\n");
}

/// The download link and how to open the file.
fn render_download(out: &mut String, config: &Config, meta: &CaptureMeta) {
    let id = Esc(&meta.id);
    let file = meta.file.as_deref().unwrap_or("profile");
    let base = config.external_url.as_str().trim_end_matches('/');
    let auth = match config.auth.as_ref().map(|a| &a.credentials) {
        Some(Credentials::Bearer(_)) => " -H \"Authorization: Bearer $TOKEN\"",
        Some(Credentials::Basic { .. }) => " -u USER",
        None => "",
    };
    let open = match ProfileKind::parse(&meta.kind).map(ProfileKind::format) {
        Some(BodyFormat::Trace) => format!("go tool trace {file}"),
        Some(BodyFormat::GoroutineText) => format!("less {file}"),
        _ => format!("go tool pprof -http=: {file}"),
    };
    write!(
        out,
        "<h2>Profile</h2><p><a id=\"download\" href=\"/api/v1/captures/{id}/profile\" download=\"{file}\">\
         Download {file}</a> ({size})</p>\n<pre id=\"open-command\">curl -fo {file}{auth} {base}/api/v1/captures/{id}/profile\n{open}</pre>\n",
        file = Esc(file),
        size = amount(meta.bytes as i64, "bytes"),
        base = Esc(base),
        auth = Esc(auth),
        open = Esc(&open),
    )
    .unwrap();
}

/// What grew against the baseline the capture was compared with, as the decision and the
/// annotation name it (by flat; by cum in goroutine and threadcreate profiles), with links
/// to the baseline and the full diff.
fn render_diff(out: &mut String, meta: &CaptureMeta, diff: &Diff) {
    if !is_valid_id(&diff.base) {
        return;
    }
    let unit = diff.sample_type.split_once('/').map_or("", |(_, unit)| unit);
    writeln!(
        out,
        "<h2 id=\"diff\">Grew vs baseline <a href=\"/captures/{base}\">{base}</a> \
         <span class=\"muted\">({sample_type}; total {then} then, {now} now; \
         <a href=\"/api/v1/captures/{id}/diff?base={base}\" id=\"diff-link\">full diff</a>)</span></h2>",
        base = Esc(&diff.base),
        sample_type = Esc(&diff.sample_type),
        then = amount(diff.base_total, unit),
        now = amount(diff.total, unit),
        id = Esc(&meta.id),
    )
    .unwrap();
    let grown = diff.grown(Measure::for_kind(&meta.kind));
    if grown.is_empty() {
        out.push_str("<p class=\"muted\">Nothing grew.</p>\n");
        return;
    }
    let rows = grown.into_iter().map(|t| (t.function.as_str(), t.flat, t.flat_percent, t.cum, t.cum_percent));
    top_table(out, "diff-grown", rows, unit, true);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let yaml = "targets: [{name: checkout, pprof_url: \"http://127.0.0.1:9\"}]\n\
                    rules: [{name: cpu-spike, alert_labels: {alertname: HighCPU}, capture: [cpu]}]\n";
        Config::parse(yaml, std::path::Path::new("/nonexistent")).unwrap()
    }

    fn meta() -> CaptureMeta {
        serde_json::from_value(serde_json::json!({
            "id": "20261121T100000.000Z-cpu-spike-cpu", "target": "checkout", "rule": "cpu-spike",
            "kind": "cpu", "status": "ok", "trigger": {"source": "watch"}, "url": "http://x/debug/pprof/profile",
            "started_at": "2026-11-21T10:00:00Z", "finished_at": "2026-11-21T10:00:10Z", "bytes": 10,
            "file": "20261121T100000.000Z-cpu-spike-cpu.pb.gz",
        }))
        .unwrap()
    }

    /// A capture compared with a baseline shows what grew, links the baseline and the diff
    /// profile, and escapes function names; without `diff` none of that appears.
    #[test]
    fn diff_against_baseline_when_present() {
        let mut meta = meta();
        let plain = render_capture(&config(), &meta, &[]);
        assert!(!plain.contains("Grew vs baseline"), "{plain}");
        let diff = serde_json::json!({
            "base": "20261120T090000.000Z-cpu-spike-cpu",
            "sample_type": "cpu/nanoseconds",
            "base_total": 5_000_000_000i64,
            "total": 7_000_000_000i64,
            "functions": [
                {"function": "main.<hot>", "flat": 2_000_000_000i64, "flat_percent": 40.0,
                 "cum": 3_000_000_000i64, "cum_percent": 60.0},
                {"function": "main.idle", "flat": -1_000_000_000i64, "flat_percent": -20.0,
                 "cum": -1_000_000_000i64, "cum_percent": -20.0},
            ],
        });
        meta.diff = Some(serde_json::from_value(diff).unwrap());
        let page = render_capture(&config(), &meta, &[]);
        assert!(
            page.contains("Grew vs baseline <a href=\"/captures/20261120T090000.000Z-cpu-spike-cpu\">"),
            "{page}"
        );
        assert!(page.contains(
            "href=\"/api/v1/captures/20261121T100000.000Z-cpu-spike-cpu/diff?base=20261120T090000.000Z-cpu-spike-cpu\""
        ));
        assert!(page.contains("(cpu/nanoseconds; total 5.00s then, 7.00s now; "), "{page}");
        assert!(page.contains("<td class=\"num\">+2.00s</td><td class=\"num\">+40.00%</td>"), "{page}");
        assert!(!page.contains("main.idle"), "only what grew: {page}");
        assert!(page.contains("main.&lt;hot&gt;") && !page.contains("main.<hot>"));

        // A base that is not an id is not linked at all.
        meta.diff.as_mut().unwrap().base = "../../etc/passwd".to_string();
        assert!(!render_capture(&config(), &meta, &[]).contains("Grew vs baseline"));
    }

    /// A baseline is marked the capture on its page (and, the same way, in
    /// the list).
    #[test]
    fn baseline_marker() {
        let mut meta = meta();
        assert!(!render_capture(&config(), &meta, &[]).contains("badge"));
        meta.baseline = true;
        let page = render_capture(&config(), &meta, &[]);
        assert!(page.contains("<span class=\"badge\">baseline</span>"), "{page}");
    }
}
