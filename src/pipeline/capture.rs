//! One kind from one target: wait for a place in flight (and the target's CPU profiler or
//! tracer), download to staging, validate, analyze, and hand to the store, kept or failed.

use std::time::Instant;

use chrono::Utc;
use tokio::task::spawn_blocking;

use super::App;
use super::insight::{self, AnalysisError, MAX_UNZIPPED};
use crate::analyze::{DIFF_KEPT, FunctionTable, TOP_KEPT, diff, top_line};
use crate::capture::PprofClient;
use crate::model::{CaptureMeta, CaptureStatus, Diff, ProfileKind, Readings, Summary};
use crate::rules::Job;
use crate::store::StagedFile;

/// Captures `kind` for `job`. Always returns the capture's metadata, kept or failed.
pub(super) async fn capture(
    app: &App,
    job: &Job,
    kind: ProfileKind,
    readings: &Readings,
    client: &PprofClient,
) -> CaptureMeta {
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
            app.metrics.capture(kind, false, 0.0, 0);
            return failed(meta, format!("cannot name the capture: {error}"));
        }
    };
    tracing::info!(id = %meta.id, url = %url, "Capture started.");
    let staged = app.staging.file(&meta.id);
    let fetched =
        client.fetch(&job.endpoint.pprof_url, kind, rule.seconds, staged.path(), None, &app.abort).await;
    meta.finished_at = Utc::now();
    let body = match fetched {
        Ok(fetched) => {
            meta.status = CaptureStatus::Ok;
            meta.bytes = fetched.bytes;
            meta.sha256 = Some(fetched.sha256);
            if kind.is_pprof() {
                (meta.summary, meta.diff) = analyze_staged(app, &meta, &staged).await;
            }
            Some(staged)
        }
        Err(error) => {
            meta.error = Some(error.to_string());
            None
        }
    };
    let store = app.store.clone();
    let pending = meta.clone();
    let meta = match spawn_blocking(move || store.keep(pending, body)).await {
        Ok(Ok(kept)) => kept,
        Ok(Err(error)) => failed(meta, format!("cannot store the profile: {error}")),
        Err(error) => failed(meta, format!("cannot store the profile: {error}")),
    };
    app.metrics.captures_in_flight.dec();
    app.metrics.capture(kind, meta.is_ok(), clock.elapsed().as_secs_f64(), meta.bytes);
    if meta.is_ok() {
        let top = meta.summary.as_ref().map(top_line).unwrap_or_default();
        tracing::info!(id = %meta.id, target = %meta.target, bytes = meta.bytes, top = %top, "Profile stored.");
    } else {
        tracing::warn!(id = %meta.id, target = %meta.target, error = meta.error.as_deref().unwrap_or(""), "Capture failed.");
    }
    meta
}

/// The top functions of a validated, staged profile and, for a spike, what grew against
/// the latest baseline of its target and kind. `None`s (and a log line) if that fails: the
/// capture is kept regardless.
async fn analyze_staged(
    app: &App,
    meta: &CaptureMeta,
    staged: &StagedFile,
) -> (Option<Summary>, Option<Diff>) {
    let (store, meta, path) = (app.store.clone(), meta.clone(), staged.path().to_path_buf());
    let analyzed = spawn_blocking(move || {
        let table = match FunctionTable::read(|| std::fs::File::open(&path), MAX_UNZIPPED) {
            Ok(table) => table,
            Err(error) => {
                tracing::warn!(id = %meta.id, error = %error, "Cannot summarize the profile.");
                return (None, None);
            }
        };
        let summary = Some(table.summary(TOP_KEPT));
        let Some(base) = insight::latest_baseline(store.as_ref(), &meta).filter(|_| !meta.baseline) else {
            return (summary, None);
        };
        let diff = insight::function_table(store.as_ref(), &base.id)
            .and_then(|base_table| {
                diff(&table, &base_table, &base.id, DIFF_KEPT)
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
