//! The pages' HTML: the captures list with its filter, a capture's page, and the decision
//! tables. Every string from an alert, a target or a profile is escaped.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{DEFAULT_LIMIT, MAX_LIMIT, chart};
use crate::analyze::{Measure, grown, short};
use crate::config::{Config, Credentials};
use crate::model::summary::unit_of;
use crate::model::text::{Esc, change, quantity, reading, time};
use crate::model::{CaptureLinks, CaptureMeta, Decision, Diff, ProfileKind, Series, Signal};
use crate::store::CaptureFilter;

/// The mark of a baseline capture.
fn baseline_badge(meta: &CaptureMeta) -> &'static str {
    if meta.is_baseline() { " <span class=\"badge\">baseline</span>" } else { "" }
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
pub(super) fn index(
    config: &Config,
    filter: &CaptureFilter,
    captures: &[CaptureMeta],
    decisions: &[Decision],
    recent: &BTreeMap<String, Series>,
    recorder: &[crate::recorder::Status],
) -> String {
    let mut out = String::new();
    out.push_str("<form class=\"filter\" method=\"get\" action=\"/\">");
    select(&mut out, "target", config.targets.iter().map(|t| &*t.name).collect(), filter.target.as_deref());
    select(&mut out, "rule", config.rules.iter().map(|r| &*r.name).collect(), filter.rule.as_deref());
    select(
        &mut out,
        "kind",
        ProfileKind::ALL.iter().map(|k| k.name()).collect(),
        filter.kind.map(ProfileKind::name),
    );
    writeln!(
        out,
        "<label>limit<input type=\"number\" name=\"limit\" min=\"1\" max=\"{MAX_LIMIT}\" value=\"{}\"></label>\
         <button type=\"submit\">Filter</button> <a href=\"/\">clear</a></form>",
        filter.limit.unwrap_or(DEFAULT_LIMIT)
    )
    .unwrap();

    render_timelines(&mut out, recent, captures);
    super::recorded::render_recorder(&mut out, recorder);

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
                id = Esc(meta.id.as_str()),
                time = time(&meta.started_at),
                target = Esc(&meta.target),
                rule = Esc(&meta.rule),
                kind = meta.kind,
                source = meta.trigger.source.name(),
                alertname = meta.trigger.alertname.as_deref().map(|a| format!(" / {}", Esc(a))).unwrap_or_default(),
                top = Esc(&top_cell(meta)),
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

/// The signal a target's timeline shows: CPU if it is read, else the first that is.
fn headline(series: &Series) -> Option<(&crate::model::SignalKey, &Vec<(i64, f64)>)> {
    let order = [Signal::CpuPercent, Signal::MemoryPercent, Signal::Goroutines].map(|s| s.key());
    order
        .iter()
        .find_map(|key| series.get_key_value(key))
        .or_else(|| series.iter().next())
        .filter(|(_, p)| !p.is_empty())
}

/// One small timeline per target: its recent readings of its headline signal, and the
/// captures listed here that fall in them, so a spike and its captures are seen together.
fn render_timelines(out: &mut String, recent: &BTreeMap<String, Series>, captures: &[CaptureMeta]) {
    let lines: Vec<_> =
        recent.iter().filter_map(|(target, series)| headline(series).map(|line| (target, line))).collect();
    if lines.is_empty() {
        return;
    }
    out.push_str("<h2 id=\"timelines\">Recent readings <span class=\"muted\">(▼ a capture)</span></h2>\n");
    for (target, (signal, points)) in lines {
        let marks = chart::Marks {
            captures: captures
                .iter()
                .filter(|meta| meta.target == **target)
                .map(|meta| (meta.started_at.timestamp_millis(), meta.id.as_str()))
                .collect(),
            ..Default::default()
        };
        // Up to the last reading, or to a capture made since.
        let last = marks.captures.iter().map(|(at, _)| *at).fold(points[points.len() - 1].0, i64::max);
        let range = (points[0].0, last);
        write!(
            out,
            "<div class=\"timeline\"><span class=\"mono\">{} {}</span><br>",
            Esc(target),
            Esc(signal.as_str())
        )
        .unwrap();
        chart::draw(out, &format!("timeline-{target}"), signal.as_str(), points, range, 56.0, &marks);
        out.push_str("</div>\n");
    }
}

/// The target's signals over the minutes before the capture (as its metadata keeps them),
/// with when the condition began, when alertprof got it, and what the profile covers.
fn render_signals(out: &mut String, meta: &CaptureMeta) {
    let Some(first) = meta.signals.values().filter_map(|points| points.first()).map(|(at, _)| *at).min()
    else {
        return;
    };
    let trigger = &meta.trigger;
    let starts = trigger.starts_at.map(|at| at.timestamp_millis());
    let window = match &meta.window {
        Some(window) => (window.from.timestamp_millis(), window.to.timestamp_millis()),
        None => (meta.started_at.timestamp_millis(), meta.finished_at.timestamp_millis()),
    };
    let last =
        meta.signals.values().filter_map(|points| points.last()).map(|(at, _)| *at).max().unwrap_or(first);
    let to = window.1.max(last);
    // The chart reaches back to the trigger's start, but not so far that the readings
    // shrink to a sliver: at most as far again as they go. An older start is said.
    let from = starts.map_or(first, |starts| starts.max(first - (to - first)).min(first));
    out.push_str(
        "<h2 id=\"signals\">Signals <span class=\"muted\">(blue: readings; dashed: the trigger's start; \
         red: when alertprof got it; shaded: what the profile covers)</span></h2>\n",
    );
    if let Some(starts) = trigger.starts_at.filter(|at| at.timestamp_millis() < from) {
        writeln!(
            out,
            "<p class=\"muted\" id=\"trigger-before\">The trigger started at {}, before these readings.</p>",
            time(&starts)
        )
        .unwrap();
    }
    let marks = chart::Marks {
        trigger_start: starts,
        received: trigger.received_at.map(|at| at.timestamp_millis()),
        window: Some(window),
        captures: Vec::new(),
    };
    for (signal, points) in meta.signals.iter().filter(|(_, points)| !points.is_empty()) {
        let latest = points.last().map(|(_, value)| reading(signal.as_str(), *value)).unwrap_or_default();
        write!(
            out,
            "<div class=\"signal\"><span class=\"mono\">{} {latest}</span><br>",
            Esc(signal.as_str())
        )
        .unwrap();
        chart::draw(out, &format!("chart-{signal}"), signal.as_str(), points, (from, to), 80.0, &marks);
        out.push_str("</div>\n");
    }
}

/// The top function of a capture, as its summary ranks it, or that it had no samples.
fn top_cell(meta: &CaptureMeta) -> String {
    let Some(summary) = &meta.summary else { return String::new() };
    match summary.top.first() {
        Some(top) if summary.total != 0 => short(top, Measure::for_kind(meta.kind)),
        _ => "no samples".to_string(),
    }
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
            .map(|id| format!("<a href=\"/captures/{0}\">{0}</a>", Esc(id.as_str())))
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

/// A capture's page: what it is, its error, the download, top functions, what grew against
/// a baseline, the flame graph, what set it off, and the decisions that made it.
pub(super) fn capture(config: &Config, meta: &CaptureMeta, decisions: &[Decision]) -> String {
    let mut out = String::new();
    let id = Esc(meta.id.as_str());
    let status = if meta.is_ok() { "ok" } else { "failed" };
    let baseline = baseline_badge(meta);
    write!(out, "<h2 id=\"capture-id\">{id}{baseline}</h2>\n<dl id=\"capture\">").unwrap();
    let mut row = |name: &str, value: String| {
        write!(out, "<dt>{name}</dt><dd id=\"capture-{name}\">{value}</dd>").unwrap();
    };
    row("target", Esc(&meta.target).to_string());
    row("rule", Esc(&meta.rule).to_string());
    row("kind", meta.kind.to_string());
    row("status", format!("<span class=\"{status}\">{status}</span>"));
    row("started", time(&meta.started_at));
    row("finished", time(&meta.finished_at));
    if let Some(seconds) = meta.seconds {
        row("seconds", seconds.to_string());
    }
    row("url", format!("<code>{}</code>", Esc(&meta.url)));
    if meta.is_ok() {
        row("size", quantity(meta.bytes() as i64, "bytes"));
    }
    if let Some(sha256) = meta.sha256() {
        row("sha256", format!("<code>{}</code>", Esc(sha256)));
    }
    out.push_str("</dl>\n");

    if let Some(error) = meta.error() {
        writeln!(out, "<h2>Error</h2><pre class=\"error\" id=\"capture-error\">{}</pre>", Esc(error))
            .unwrap();
    }

    if meta.is_ok() {
        render_download(&mut out, config, meta);
    }

    render_signals(&mut out, meta);
    super::recorded::render_window(&mut out, meta);

    if let Some(summary) = &meta.summary {
        let unit = unit_of(&summary.sample_type);
        write!(
            out,
            "<h2>Top functions <span class=\"muted\">({}, total {})</span></h2>",
            Esc(&summary.sample_type),
            quantity(summary.total, unit)
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

    if meta.has_pprof() {
        write!(
            out,
            "<h2>Flame graph <span class=\"muted\">(<a href=\"{graph}\" \
             id=\"flamegraph-link\">open on its own</a>)</span></h2>\n\
             <img class=\"flame\" id=\"flamegraph\" src=\"{graph}\" alt=\"flame graph of {id}\">\n",
            graph = Esc(&CaptureLinks::relative().flamegraph(&meta.id)),
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
            write!(
                out,
                "<tr><td>{}</td><td class=\"num\">{}</td></tr>",
                Esc(signal.as_str()),
                reading(signal.as_str(), *value)
            )
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
    let value = |value: i64| match changes {
        true => change(value, unit),
        false => quantity(value, unit),
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
    let file = meta.file_name();
    let auth = match config.auth.as_ref().map(|a| &a.credentials) {
        Some(Credentials::Bearer(_)) => " -H \"Authorization: Bearer $TOKEN\"",
        Some(Credentials::Basic { .. }) => " -u USER",
        None => "",
    };
    write!(
        out,
        "<h2>Profile</h2><p><a id=\"download\" href=\"{href}\" download=\"{file}\">\
         Download {file}</a> ({size})</p>\n<pre id=\"open-command\">curl -fo {file}{auth} {url}\n{open}</pre>\n",
        href = Esc(&CaptureLinks::relative().profile(&meta.id)),
        file = Esc(file),
        size = quantity(meta.bytes() as i64, "bytes"),
        url = Esc(&CaptureLinks::under(&config.external_url).profile(&meta.id)),
        auth = Esc(auth),
        open = Esc(&meta.kind.open_command(file)),
    )
    .unwrap();
}

/// What grew against the baseline the capture was compared with, as the decision and the
/// annotation name it (by flat; by cum in goroutine and threadcreate profiles), with links
/// to the baseline and the full diff.
fn render_diff(out: &mut String, meta: &CaptureMeta, diff: &Diff) {
    let unit = unit_of(&diff.sample_type);
    let links = CaptureLinks::relative();
    let against = if diff.before_window { "since before the window," } else { "vs baseline" };
    writeln!(
        out,
        "<h2 id=\"diff\">Grew {against} <a href=\"{page}\">{base}</a> \
         <span class=\"muted\">({sample_type}; total {then} then, {now} now; \
         <a href=\"{full}\" id=\"diff-link\">full diff</a>)</span></h2>",
        page = Esc(&links.page(&diff.base)),
        base = Esc(diff.base.as_str()),
        sample_type = Esc(&diff.sample_type),
        then = quantity(diff.base_total, unit),
        now = quantity(diff.total, unit),
        full = Esc(&links.diff(&meta.id, &diff.base)),
    )
    .unwrap();
    let grown = grown(diff, Measure::for_kind(meta.kind));
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
        let plain = capture(&config(), &meta, &[]);
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
        let page = capture(&config(), &meta, &[]);
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
    }

    /// A baseline is marked the capture on its page (and, the same way, in
    /// the list).
    #[test]
    fn baseline_marker() {
        let mut meta = meta();
        assert!(!capture(&config(), &meta, &[]).contains("badge"));
        meta.role = crate::model::CaptureRole::Baseline;
        let page = capture(&config(), &meta, &[]);
        assert!(page.contains("<span class=\"badge\">baseline</span>"), "{page}");
    }

    /// The page and the Grafana annotation of one capture say its figures the same way,
    /// escape the same way (quotes too), and agree on when there is a flame graph: for every
    /// kept profile.proto, summarized or not, and for nothing else.
    #[test]
    fn page_and_annotation_agree() {
        crate::init();
        use crate::annotate::GrafanaClient;
        use crate::config::GrafanaConfig;
        use crate::model::{TopFunction, Trigger, TriggerSource};

        let config = config();
        let grafana = GrafanaClient::new(
            &GrafanaConfig {
                url: "http://127.0.0.1:3000".parse().unwrap(),
                token: None,
                dashboard_uid: None,
                tags: vec!["alertprof".into()],
                max_attempts: 1,
                retry_backoff: std::time::Duration::from_secs(1),
            },
            &config.external_url,
        );
        let mut meta = meta();
        meta.kind = ProfileKind::Heap;
        meta.trigger = Trigger {
            alertname: Some("It's <b>".into()),
            ..Trigger::local(TriggerSource::Alertmanager, None)
        };
        meta.diff = Some(Diff {
            base: crate::model::CaptureId::parse("20261120T090000.000Z-cpu-spike-heap").unwrap(),
            sample_type: "inuse_space/bytes".into(),
            base_total: 5 << 20,
            total: 17 << 20,
            functions: vec![TopFunction {
                function: "main.leak".into(),
                flat: 12 << 20,
                flat_percent: 240.0,
                cum: 12 << 20,
                cum_percent: 240.0,
            }],
            cut_short: None,
            before_window: false,
        });
        let page = capture(&config, &meta, &[]);
        let annotation = grafana.annotation(&meta, &[]).text;
        for both in ["+12.00MiB", "It&#39;s &lt;b&gt;", "flamegraph.svg"] {
            assert!(page.contains(both), "{both} not on the page:\n{page}");
            assert!(annotation.contains(both), "{both} not in the annotation:\n{annotation}");
        }
        meta.kind = ProfileKind::GoroutineText;
        meta.diff = None;
        let page = capture(&config, &meta, &[]);
        assert!(
            !page.contains("flamegraph.svg")
                && !grafana.annotation(&meta, &[]).text.contains("flamegraph.svg")
        );
    }
}
