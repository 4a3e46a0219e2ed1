//! One kind from one target, in two steps. `fetch`: wait for a place in flight (and the
//! target's CPU profiler or tracer), download to staging and validate. `keep`: analyze,
//! within a budget and off the capture's places, and hand to the store, kept or failed.

use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::task::spawn_blocking;

use super::App;
use super::insight::{self, AnalysisError};
use crate::analyze::{DIFF_KEPT, FunctionTable, Measure, TOP_KEPT, diff, top_line};
use crate::capture::PprofClient;
use crate::model::{CaptureMeta, CaptureStatus, Diff, ProfileKind, Readings, Summary};
use crate::rules::Job;
use crate::store::StagedFile;

/// Time the samples of a new capture may take to analyze (each of its walks); past it the
/// figures cover the samples read, and say so.
pub(super) const ANALYSIS_TIME: Duration = Duration::from_secs(20);

/// A capture downloaded (or failed), not yet analyzed and kept.
pub(super) struct Fetched {
    pub(super) meta: CaptureMeta,
    /// The validated body, for a capture that is ok.
    pub(super) staged: Option<StagedFile>,
    /// Since the first request, for `alertprof_capture_duration_seconds`.
    pub(super) clock: Instant,
    /// The capture to compare with instead of the latest baseline: the recorder's snapshot
    /// from before the window.
    pub(super) compare_with: Option<String>,
}

impl Fetched {
    /// A capture the store could not name (`meta.error` says why): nothing was requested.
    pub(super) fn unnamed(meta: CaptureMeta, clock: Instant) -> Fetched {
        Fetched { meta, staged: None, clock, compare_with: None }
    }

    /// A capture that failed before anything was kept.
    pub(super) fn failed(mut meta: CaptureMeta, error: String, clock: Instant) -> Fetched {
        meta.error = Some(error);
        Fetched::unnamed(meta, clock)
    }
}

/// The metadata of a capture of `kind` for `job`, named by the store: failed until kept.
pub(super) async fn pending(
    app: &App,
    job: &Job,
    kind: ProfileKind,
    readings: &Readings,
    url: String,
    id_rule: String,
) -> Result<CaptureMeta, CaptureMeta> {
    let (rule, target) = (job.rule(), job.target());
    let mut meta = CaptureMeta::pending(&target.name, &rule.name, kind, job.trigger.clone(), url, Utc::now());
    meta.readings = readings.clone();
    // A templated target is not sampled: it has no readings over time.
    if !job.endpoint.templated {
        meta.signals = app.verifier.series(&target.name);
    }
    meta.seconds = kind.is_timed().then_some(rule.seconds);
    meta.baseline = job.baseline;
    name(app, meta, id_rule).await
}

/// Gives `meta` an id from the store; without one there is nothing to keep.
pub(super) async fn name(
    app: &App,
    mut meta: CaptureMeta,
    id_rule: String,
) -> Result<CaptureMeta, CaptureMeta> {
    let (store, kind) = (app.store.clone(), meta.kind);
    match spawn_blocking(move || store.new_id(&id_rule, kind)).await {
        Ok(id) => {
            meta.id = id;
            Ok(meta)
        }
        Err(error) => {
            meta.error = Some(format!("cannot name the capture: {error}"));
            Err(meta)
        }
    }
}

/// The name a job's captures take in their ids: the rule's, `<rule>-baseline` for
/// baselines (`…-cpu-spike-baseline-cpu`), `<rule>-before` for the recorder's snapshot
/// from before the window.
pub(super) fn id_rule(job: &Job, before_window: bool) -> String {
    match (job.baseline, before_window) {
        (true, _) => format!("{}-baseline", job.rule().name),
        (false, true) => format!("{}-before", job.rule().name),
        (false, false) => job.rule().name.to_string(),
    }
}

/// Downloads `kind` for `job` while holding its places: one among the captures in flight,
/// and the target's CPU profiler or tracer for those kinds.
pub(super) async fn fetch(
    app: &App,
    job: &Job,
    kind: ProfileKind,
    readings: &Readings,
    client: &PprofClient,
) -> Fetched {
    let (rule, target) = (job.rule(), job.target());
    let _slot = match kind.is_exclusive() {
        true => Some(app.gate.exclusive(&job.endpoint.slot_key(&target.name), kind).await),
        false => None,
    };
    let _permit = app.gate.in_flight().await;
    let url = PprofClient::profile_url(&job.endpoint.pprof_url, kind, rule.seconds);
    let clock = Instant::now();
    let mut meta = match pending(app, job, kind, readings, url.to_string(), id_rule(job, false)).await {
        Ok(meta) => meta,
        // Nothing was requested; without an id there is nothing to keep either.
        Err(meta) => return Fetched::unnamed(meta, clock),
    };
    app.metrics.captures_in_flight.inc();
    meta.started_at = Utc::now();
    tracing::info!(id = %meta.id, url = %url, "Capture started.");
    let staged = app.staging.file(&meta.id);
    let fetched =
        client.fetch(&job.endpoint.pprof_url, kind, rule.seconds, staged.path(), None, &app.abort).await;
    meta.finished_at = Utc::now();
    app.metrics.captures_in_flight.dec();
    match fetched {
        Ok(fetched) => {
            meta.status = CaptureStatus::Ok;
            meta.bytes = fetched.bytes;
            meta.sha256 = Some(fetched.sha256);
            Fetched { meta, staged: Some(staged), clock, compare_with: None }
        }
        Err(error) => Fetched::failed(meta, error.to_string(), clock),
    }
}

/// Analyzes a fetched profile (profile.proto kinds) and keeps the capture. Always returns
/// its metadata, kept or failed.
pub(super) async fn keep(app: &App, fetched: Fetched) -> CaptureMeta {
    let Fetched { mut meta, staged, clock, compare_with } = fetched;
    if let Some(staged) = staged.as_ref().filter(|_| meta.has_pprof()) {
        (meta.summary, meta.diff) = analyze_staged(app, &meta, staged, compare_with).await;
    }
    let kind = meta.kind;
    let meta = if meta.id.is_empty() {
        meta
    } else {
        let store = app.store.clone();
        let pending = meta.clone();
        match spawn_blocking(move || store.keep(pending, staged)).await {
            Ok(Ok(kept)) => kept,
            Ok(Err(error)) => failed(meta, format!("cannot store the profile: {error}")),
            Err(error) => failed(meta, format!("cannot store the profile: {error}")),
        }
    };
    app.metrics.capture(kind, meta.is_ok(), clock.elapsed().as_secs_f64(), meta.bytes);
    if meta.is_ok() {
        let top = meta.summary.as_ref().map(|summary| top_line(summary, kind)).unwrap_or_default();
        tracing::info!(id = %meta.id, target = %meta.target, bytes = meta.bytes, top = %top, "Profile stored.");
    } else {
        tracing::warn!(id = %meta.id, target = %meta.target, error = meta.error.as_deref().unwrap_or(""), "Capture failed.");
    }
    meta
}

/// The top functions of a validated, staged profile and, for a spike, what grew against
/// `compare_with` or else the latest baseline of its target and kind: at most a few at a
/// time, each within its budget, stopped by shutdown. `None`s (and a log line) if that
/// fails: the capture is kept regardless.
async fn analyze_staged(
    app: &App,
    meta: &CaptureMeta,
    staged: &StagedFile,
    compare_with: Option<String>,
) -> (Option<Summary>, Option<Diff>) {
    let (meta, path) = (meta.clone(), staged.path().to_path_buf());
    let analyzed = app.analyze(ANALYSIS_TIME, move |store, budget| {
        let table = match FunctionTable::read(|| std::fs::File::open(&path), budget) {
            Ok(table) => table,
            Err(error) => {
                tracing::warn!(id = %meta.id, error = %error, "Cannot summarize the profile.");
                return (None, None);
            }
        };
        if let Some(why) = &table.cut_short {
            tracing::warn!(id = %meta.id, why = %why, "Analysis cut short.");
        }
        let measure = Measure::for_kind(meta.kind);
        let summary = Some(table.summary(TOP_KEPT, measure));
        let before_window = compare_with.is_some();
        let base = match compare_with {
            Some(base) => base,
            None => match insight::latest_baseline(store, &meta).filter(|_| !meta.baseline && !meta.before_window) {
                Some(base) => base.id,
                None => return (summary, None),
            },
        };
        let diff = insight::function_table(store, &base, budget)
            .and_then(|base_table| {
                diff(&table, &base_table, &base, DIFF_KEPT, measure)
                    .map(|diff| Diff { before_window, ..diff })
                    .map_err(|error| AnalysisError::NotApplicable(error.to_string()))
            })
            .inspect_err(|error| {
                tracing::warn!(id = %meta.id, base = %base, error = %error, "Cannot compare with the earlier profile.")
            })
            .ok();
        (summary, diff)
    });
    analyzed.await.unwrap_or_default()
}

fn failed(mut meta: CaptureMeta, error: String) -> CaptureMeta {
    meta.status = CaptureStatus::Failed;
    meta.error = Some(error);
    meta.file = None;
    meta.bytes = 0;
    meta.sha256 = None;
    meta
}
