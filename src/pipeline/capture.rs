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
const ANALYSIS_TIME: Duration = Duration::from_secs(20);

/// A capture downloaded (or failed), not yet analyzed and kept.
pub(super) struct Fetched {
    meta: CaptureMeta,
    /// The validated body, for a capture that is ok.
    staged: Option<StagedFile>,
    /// Since the first request, for `alertprof_capture_duration_seconds`.
    clock: Instant,
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
    app.metrics.captures_in_flight.inc();
    let url = PprofClient::profile_url(&job.endpoint.pprof_url, kind, rule.seconds);
    // Baselines are told apart in their ids too: `…-cpu-spike-baseline-cpu`.
    let id_rule = if job.baseline { format!("{}-baseline", rule.name) } else { rule.name.to_string() };
    let store = app.store.clone();
    let named = spawn_blocking(move || store.new_id(&id_rule, kind)).await;
    let started_at = Utc::now();
    let clock = Instant::now();
    let mut meta = CaptureMeta {
        id: String::new(),
        target: target.name.to_string(),
        rule: rule.name.to_string(),
        kind,
        status: CaptureStatus::Failed,
        error: None,
        trigger: job.trigger.clone(),
        readings: readings.clone(),
        // A templated target is not sampled: it has no readings over time.
        signals: if job.endpoint.templated { Default::default() } else { app.verifier.series(&target.name) },
        url: url.to_string(),
        seconds: kind.is_timed().then_some(rule.seconds),
        started_at,
        finished_at: started_at,
        bytes: 0,
        sha256: None,
        file: None,
        summary: None,
        baseline: job.baseline,
        diff: None,
    };
    meta.id = match named {
        Ok(id) => id,
        Err(error) => {
            // Nothing was requested; without an id there is nothing to keep either.
            app.metrics.captures_in_flight.dec();
            meta.error = Some(format!("cannot name the capture: {error}"));
            return Fetched { meta, staged: None, clock };
        }
    };
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
            Fetched { meta, staged: Some(staged), clock }
        }
        Err(error) => {
            meta.error = Some(error.to_string());
            Fetched { meta, staged: None, clock }
        }
    }
}

/// Analyzes a fetched profile (profile.proto kinds) and keeps the capture. Always returns
/// its metadata, kept or failed.
pub(super) async fn keep(app: &App, fetched: Fetched) -> CaptureMeta {
    let Fetched { mut meta, staged, clock } = fetched;
    if let Some(staged) = staged.as_ref().filter(|_| meta.has_pprof()) {
        (meta.summary, meta.diff) = analyze_staged(app, &meta, staged).await;
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
/// the latest baseline of its target and kind: at most a few at a time, each within its
/// budget, stopped by shutdown. `None`s (and a log line) if that fails: the capture is kept
/// regardless.
async fn analyze_staged(
    app: &App,
    meta: &CaptureMeta,
    staged: &StagedFile,
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
        let Some(base) = insight::latest_baseline(store, &meta).filter(|_| !meta.baseline) else {
            return (summary, None);
        };
        let diff = insight::function_table(store, &base.id, budget)
            .and_then(|base_table| {
                diff(&table, &base_table, &base.id, DIFF_KEPT, measure)
                    .map_err(|error| AnalysisError::NotApplicable(error.to_string()))
            })
            .inspect_err(|error| {
                tracing::warn!(id = %meta.id, base = %base.id, error = %error, "Cannot compare with the baseline.")
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
