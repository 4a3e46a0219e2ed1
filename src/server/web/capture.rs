//! `GET /captures/{id}`: what a capture is, its error, the download, its target's signals
//! around it, top functions, what grew against a baseline, the flame graph, what set it
//! off, and the decisions that made it (`templates/capture.html`).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::chart::{Chart, Marks};
use super::decisions::DecisionTable;
use super::html::{self, Frame, PageError};
use super::links::{self, Api};
use super::recorded::Window;
use crate::analyze::{Measure, grown};
use crate::config::{Config, Credentials};
use crate::model::summary::unit_of;
use crate::model::text::{change, quantity, reading, time};
use crate::model::{Basis, CaptureId, CaptureMeta, Decision, Diff, TopFunction};
use crate::pipeline::App;
use crate::pyroscope::ViewLink;
use crate::server::api::{ApiError, from_store};

/// `GET /captures/{id}`.
pub async fn capture(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let config = app.config();
    let found = match CaptureId::parse(&id) {
        Some(wanted) => from_store(&app, move |store| Ok::<_, ApiError>(store.get(&wanted))).await,
        None => Ok(None),
    };
    let meta = match found {
        Ok(Some(meta)) => meta,
        Ok(None) => return html::error_page(PageError::NoCapture(&id), &config),
        Err(response) => return response,
    };
    let decisions: Vec<Decision> =
        app.decisions.recent(usize::MAX).into_iter().filter(|d| d.captures.contains(&meta.id)).collect();
    html::respond(StatusCode::OK, &CapturePage::new(&config, &meta, &decisions))
}

#[derive(Template)]
#[template(path = "capture.html")]
pub struct CapturePage<'a> {
    frame: Frame<'a>,
    meta: &'a CaptureMeta,
    status: &'static str,
    started: String,
    finished: String,
    /// The kept profile's size and how to download it, when one was kept.
    download: Option<Download<'a>>,
    signals: Option<Signals<'a>>,
    window: Option<Window>,
    top: Option<Top<'a>>,
    grew: Option<Grew<'a>>,
    /// Where its flame graph is drawn, for a kept profile.proto.
    flamegraph: Option<String>,
    /// Its view in Pyroscope or Grafana, once pushed and with `pyroscope.ui_url`.
    pyroscope: Option<ViewLink>,
    starts_at: Option<String>,
    readings: Vec<(&'a str, String)>,
    decisions: DecisionTable<'a>,
}

impl<'a> CapturePage<'a> {
    pub fn new(config: &'a Config, meta: &'a CaptureMeta, decisions: &'a [Decision]) -> CapturePage<'a> {
        CapturePage {
            frame: Frame::new(meta.id.as_str(), config),
            meta,
            status: if meta.is_ok() { "ok" } else { "failed" },
            started: time(&meta.started_at),
            finished: time(&meta.finished_at),
            download: meta.is_ok().then(|| Download::new(config, meta)),
            signals: Signals::of(meta),
            window: Window::of(meta),
            top: meta.summary.as_ref().map(|summary| {
                let unit = unit_of(&summary.sample_type);
                Top {
                    sample_type: &summary.sample_type,
                    total: quantity(summary.total, unit),
                    table: TopTable::new("top", summary.top.iter(), unit, false),
                }
            }),
            grew: meta.diff.as_ref().and_then(|diff| Grew::of(meta, diff)),
            flamegraph: meta.has_pprof().then(|| Api::relative().flamegraph(&meta.id)),
            pyroscope: config
                .pyroscope
                .as_ref()
                .and_then(|pyroscope| pyroscope.ui_url.as_ref())
                .and_then(|ui_url| ViewLink::of(meta, ui_url)),
            starts_at: meta.trigger.starts_at.as_ref().map(time),
            readings: meta
                .readings
                .iter()
                .map(|(signal, value)| (signal.as_str(), reading(signal.as_str(), *value)))
                .collect(),
            decisions: DecisionTable::new(
                decisions,
                "No decision in memory mentions this capture (decisions do not survive a restart).",
            ),
        }
    }
}

/// The download link and how to open the file.
struct Download<'a> {
    href: String,
    file: &'a str,
    size: String,
    /// What `curl` needs for the configured auth.
    auth: &'static str,
    url: String,
    open: String,
}

impl<'a> Download<'a> {
    fn new(config: &Config, meta: &'a CaptureMeta) -> Download<'a> {
        let file = meta.file_name();
        let auth = match config.auth.as_ref().map(|a| &a.credentials) {
            Some(Credentials::Bearer(_)) => " -H \"Authorization: Bearer $TOKEN\"",
            Some(Credentials::Basic { .. }) => " -u USER",
            None => "",
        };
        Download {
            href: Api::relative().profile(&meta.id),
            file,
            size: quantity(meta.bytes() as i64, "bytes"),
            auth,
            url: Api::under(&config.external_url).profile(&meta.id),
            open: meta.kind.open_command(file),
        }
    }
}

/// The target's signals over the minutes before the capture (as its metadata keeps them),
/// with when the condition began, when alertprof got it, and what the profile covers.
struct Signals<'a> {
    /// When the trigger started, if that was before the first reading shown.
    trigger_before: Option<String>,
    charts: Vec<Chart<'a>>,
    /// Signals with no limit to be a percent of, each said in a line instead of drawn.
    unlimited: Vec<String>,
}

impl<'a> Signals<'a> {
    fn of(meta: &'a CaptureMeta) -> Option<Signals<'a>> {
        let first = meta.signals.values().filter_map(|points| points.first()).map(|(at, _)| *at).min()?;
        let trigger = &meta.trigger;
        let starts = trigger.starts_at.map(|at| at.timestamp_millis());
        let window = match &meta.window {
            Some(window) => (window.from.timestamp_millis(), window.to.timestamp_millis()),
            None => (meta.started_at.timestamp_millis(), meta.finished_at.timestamp_millis()),
        };
        let last = meta
            .signals
            .values()
            .filter_map(|points| points.last())
            .map(|(at, _)| *at)
            .max()
            .unwrap_or(first);
        let to = window.1.max(last);
        // The chart reaches back to the trigger's start, but not so far that the readings
        // shrink to a sliver: at most as far again as they go. An older start is said.
        let from = starts.map_or(first, |starts| starts.max(first - (to - first)).min(first));
        let marks = Marks {
            trigger_start: starts,
            received: trigger.received_at.map(|at| at.timestamp_millis()),
            window: Some(window),
            captures: Vec::new(),
        };
        // A percent of nothing of its own (memory with no limit: of the host's memory) is
        // said, not drawn: its line would lie flat at 0%.
        let (charted, unlimited): (Vec<_>, Vec<_>) = meta
            .signals
            .iter()
            .filter(|(_, points)| !points.is_empty())
            .partition(|(signal, _)| meta.bases.get(*signal).is_none_or(Basis::is_limit));
        let charts = charted.into_iter().map(|(signal, points)| {
            let latest = points.last().map(|(_, value)| reading(signal.as_str(), *value)).unwrap_or_default();
            let caption = match meta.bases.get(signal) {
                Some(basis) => format!("{signal} {latest} ({basis})"),
                None => format!("{signal} {latest}"),
            };
            Chart::new(caption, format!("chart-{signal}"), signal.as_str(), points, (from, to), 80.0, &marks)
        });
        let unlimited =
            unlimited.into_iter().map(|(signal, _)| format!("{signal}: no limit ({})", meta.bases[signal]));
        Some(Signals {
            trigger_before: trigger.starts_at.filter(|at| at.timestamp_millis() < from).as_ref().map(time),
            charts: charts.collect(),
            unlimited: unlimited.collect(),
        })
    }
}

/// The top functions of the profile's summary.
struct Top<'a> {
    sample_type: &'a str,
    total: String,
    table: TopTable<'a>,
}

/// A table of top functions (`templates/top.html`), of a profile or of a diff.
struct TopTable<'a> {
    id: &'static str,
    rows: Vec<TopRow<'a>>,
}

struct TopRow<'a> {
    flat: String,
    flat_percent: String,
    cum: String,
    cum_percent: String,
    function: &'a str,
}

impl<'a> TopTable<'a> {
    /// `changes` when the values are differences, shown with their sign.
    fn new(
        id: &'static str,
        rows: impl Iterator<Item = &'a TopFunction>,
        unit: &str,
        changes: bool,
    ) -> TopTable<'a> {
        let value = |value: i64| match changes {
            true => change(value, unit),
            false => quantity(value, unit),
        };
        let percent = |percent: f64| match changes {
            true => format!("{percent:+.2}%"),
            false => format!("{percent:.2}%"),
        };
        let rows = rows
            .map(|row| TopRow {
                flat: value(row.flat),
                flat_percent: percent(row.flat_percent),
                cum: value(row.cum),
                cum_percent: percent(row.cum_percent),
                function: &row.function,
            })
            .collect();
        TopTable { id, rows }
    }
}

/// What grew against the baseline the capture was compared with, as the decision and the
/// annotation name it (by flat; by cum in goroutine and threadcreate profiles), with links
/// to the baseline and the full diff.
struct Grew<'a> {
    against: &'static str,
    page: String,
    base: &'a str,
    sample_type: &'a str,
    then: String,
    now: String,
    full: String,
    /// What grew; none when nothing did.
    table: Option<TopTable<'a>>,
}

impl<'a> Grew<'a> {
    fn of(meta: &CaptureMeta, diff: &'a Diff) -> Option<Grew<'a>> {
        let unit = unit_of(&diff.sample_type);
        let grown = grown(diff, Measure::for_kind(meta.kind));
        Some(Grew {
            against: if diff.before_window { "since before the window," } else { "vs baseline" },
            page: links::page(&diff.base),
            base: diff.base.as_str(),
            sample_type: &diff.sample_type,
            then: quantity(diff.base_total, unit),
            now: quantity(diff.total, unit),
            full: Api::relative().diff(&meta.id, &diff.base),
            table: (!grown.is_empty()).then(|| TopTable::new("diff-grown", grown.into_iter(), unit, true)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ProfileKind;

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

    fn capture(config: &Config, meta: &CaptureMeta, decisions: &[Decision]) -> String {
        CapturePage::new(config, meta, decisions).render().unwrap()
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
        assert!(!capture(&config(), &meta, &[]).contains("class=\"badge\""));
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
            base: CaptureId::parse("20261120T090000.000Z-cpu-spike-heap").unwrap(),
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
