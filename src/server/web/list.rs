//! `GET /`: the captures newest first with their filter, each target's recent readings with
//! its captures on them, the recorder, and the recent decisions (`templates/captures.html`).

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::chart::{Chart, Marks};
use super::decisions::DecisionTable;
use super::html::{self, Frame, PageError};
use super::links;
use super::recorded::{self, RecorderRow};
use crate::analyze::{Measure, short};
use crate::config::Config;
use crate::model::text::time;
use crate::model::{CaptureMeta, Decision, ProfileKind, Series, Signal, UnknownKind};
use crate::pipeline::App;
use crate::recorder::Status;
use crate::server::api::{ApiError, from_store};
use crate::store::CaptureFilter;

/// Captures listed when the filter names no limit, and the most it may name.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Decisions shown under the captures.
const DECISIONS_SHOWN: usize = 50;

/// The filter as typed into the form: empty means any, a bad limit means the default.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    target: Option<String>,
    rule: Option<String>,
    kind: Option<String>,
    limit: Option<String>,
}

impl ListQuery {
    /// The filter, or the kind it names that is none.
    fn filter(&self) -> Result<CaptureFilter, UnknownKind> {
        let given = |value: &Option<String>| value.clone().filter(|v| !v.is_empty());
        let limit = self.limit.as_deref().and_then(|l| l.trim().parse().ok()).unwrap_or(DEFAULT_LIMIT);
        let kind = match given(&self.kind) {
            None => None,
            Some(name) => Some(name.parse::<ProfileKind>()?),
        };
        Ok(CaptureFilter {
            target: given(&self.target),
            rule: given(&self.rule),
            kind,
            limit: Some(limit.clamp(1, MAX_LIMIT)),
        })
    }
}

/// `GET /`.
pub async fn index(State(app): State<Arc<App>>, Query(query): Query<ListQuery>) -> Response {
    let config = app.config();
    let filter = match query.filter() {
        Ok(filter) => filter,
        Err(UnknownKind(kind)) => return html::error_page(PageError::UnknownKind(&kind), &config),
    };
    let listed = filter.clone();
    let captures = match from_store(&app, move |store| Ok::<_, ApiError>(store.list(&listed))).await {
        Ok(captures) => captures,
        Err(response) => return response,
    };
    let recent = config.targets.iter().map(|t| (t.name.to_string(), app.verifier.series(&t.name))).collect();
    let listing = Listing {
        config: &config,
        filter: &filter,
        trouble: app.store.trouble(),
        captures: &captures,
        recent: &recent,
        recorder: &app.recorder.statuses(),
        decisions: &app.decisions.recent(DECISIONS_SHOWN),
    };
    html::respond(StatusCode::OK, &CapturesPage::new(&listing))
}

/// What the list page shows, as read for one request.
pub struct Listing<'a> {
    pub config: &'a Config,
    pub filter: &'a CaptureFilter,
    /// Why the object store cannot be listed, if it cannot.
    pub trouble: Option<String>,
    pub captures: &'a [CaptureMeta],
    /// Each target's recent readings, by target.
    pub recent: &'a BTreeMap<String, Series>,
    pub recorder: &'a [Status],
    pub decisions: &'a [Decision],
}

#[derive(Template)]
#[template(path = "captures.html")]
pub struct CapturesPage<'a> {
    frame: Frame<'a>,
    trouble: Option<&'a str>,
    selects: [Select<'a>; 3],
    limit: usize,
    max_limit: usize,
    timelines: Vec<Chart<'a>>,
    recorder: Vec<RecorderRow<'a>>,
    captures: Vec<CaptureRow<'a>>,
    decisions: DecisionTable<'a>,
}

impl<'a> CapturesPage<'a> {
    pub fn new(listing: &'a Listing<'a>) -> CapturesPage<'a> {
        let (config, filter) = (listing.config, listing.filter);
        let selects = [
            Select::new(
                "target",
                config.targets.iter().map(|t| &*t.name).collect(),
                filter.target.as_deref(),
            ),
            Select::new("rule", config.rules.iter().map(|r| &*r.name).collect(), filter.rule.as_deref()),
            Select::new(
                "kind",
                ProfileKind::ALL.iter().map(|k| k.name()).collect(),
                filter.kind.map(ProfileKind::name),
            ),
        ];
        CapturesPage {
            frame: Frame::new("Captures", config),
            trouble: listing.trouble.as_deref(),
            selects,
            limit: filter.limit.unwrap_or(DEFAULT_LIMIT),
            max_limit: MAX_LIMIT,
            timelines: timelines(listing.recent, listing.captures),
            recorder: recorded::rows(listing.recorder),
            captures: listing.captures.iter().map(CaptureRow::new).collect(),
            decisions: DecisionTable::new(listing.decisions, "No decisions since alertprof started."),
        }
    }
}

/// A `<select>` of the filter: the known values plus "any", the chosen one selected (kept
/// even when it is not known).
struct Select<'a> {
    name: &'static str,
    options: Vec<Choice<'a>>,
}

struct Choice<'a> {
    value: &'a str,
    selected: bool,
}

impl<'a> Select<'a> {
    fn new(name: &'static str, mut known: Vec<&'a str>, chosen: Option<&'a str>) -> Select<'a> {
        if let Some(chosen) = chosen.filter(|c| !known.contains(c)) {
            known.push(chosen);
        }
        let options =
            known.into_iter().map(|value| Choice { value, selected: Some(value) == chosen }).collect();
        Select { name, options }
    }
}

/// One capture in the list.
struct CaptureRow<'a> {
    meta: &'a CaptureMeta,
    href: String,
    time: String,
    status: &'static str,
    /// The top function, as its summary ranks it, or that it had no samples.
    top: String,
}

impl<'a> CaptureRow<'a> {
    fn new(meta: &'a CaptureMeta) -> CaptureRow<'a> {
        let top = match &meta.summary {
            None => String::new(),
            Some(summary) => match summary.top.first() {
                Some(top) if summary.total != 0 => short(top, Measure::for_kind(meta.kind)),
                _ => "no samples".to_string(),
            },
        };
        CaptureRow {
            meta,
            href: links::page(&meta.id),
            time: time(&meta.started_at),
            status: if meta.is_ok() { "ok" } else { "failed" },
            top,
        }
    }
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
fn timelines<'a>(recent: &'a BTreeMap<String, Series>, captures: &'a [CaptureMeta]) -> Vec<Chart<'a>> {
    let lines = recent.iter().filter_map(|(target, series)| headline(series).map(|line| (target, line)));
    lines
        .map(|(target, (signal, points))| {
            let marks = Marks {
                captures: captures
                    .iter()
                    .filter(|meta| meta.target == **target)
                    .map(|meta| (meta.started_at.timestamp_millis(), &meta.id))
                    .collect(),
                ..Default::default()
            };
            // Up to the last reading, or to a capture made since.
            let last = marks.captures.iter().map(|(at, _)| *at).fold(points[points.len() - 1].0, i64::max);
            let range = (points[0].0, last);
            let caption = format!("{target} {signal}");
            Chart::new(caption, format!("timeline-{target}"), signal.as_str(), points, range, 56.0, &marks)
        })
        .collect()
}
