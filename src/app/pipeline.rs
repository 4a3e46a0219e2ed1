//! One job, start to end: gate pre-check, verify, admit, capture every kind, store, and
//! one decision.

use std::time::Instant;

use chrono::Utc;
use futures_util::future::join_all;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::spawn_blocking;

use super::App;
use crate::capture::ProfileKind;
use crate::decision::{AnnotationOutcome, Decision, Outcome};
use crate::gate::Refusal;
use crate::rules::Job;
use crate::store::{CaptureMeta, CaptureStatus};
use crate::verify::{Readings, Verdict};

/// Runs a job to its decision. `slot` (a place among the jobs running) is given back once
/// the captures are done, before Grafana is told: a slow Grafana never holds up captures.
pub async fn run_job(app: &App, job: Job, slot: Option<OwnedSemaphorePermit>) {
    let decision = decide(app, &job, slot).await;
    app.record(decision);
}

/// A decision about `job` without captures or readings.
pub fn decision_for(job: &Job, outcome: Outcome, reason: String) -> Decision {
    Decision {
        at: Utc::now(),
        source: job.trigger.source,
        outcome,
        reason,
        alertname: job.trigger.alertname.clone(),
        fingerprint: job.trigger.fingerprint.clone(),
        rule: Some(job.rule().name.clone()),
        target: Some(job.target().name.clone()),
        captures: Vec::new(),
        readings: Readings::new(),
        annotations: Vec::new(),
    }
}

pub fn refusal_decision(job: &Job, refusal: Refusal, readings: Readings) -> Decision {
    let (outcome, reason) = match refusal {
        Refusal::Duplicate { first_seen } => {
            (Outcome::Duplicate, format!("alert already handled for this rule and target at {first_seen}"))
        }
        Refusal::Cooldown { until } => (Outcome::Cooldown, format!("in cooldown until {until}")),
    };
    Decision { readings, ..decision_for(job, outcome, reason) }
}

async fn decide(app: &App, job: &Job, slot: Option<OwnedSemaphorePermit>) -> Decision {
    let (rule, target) = (job.rule(), job.target());
    if let Some(refusal) = app.gate.check(job.dedupe.as_deref(), &rule.name, &target.name, Utc::now()) {
        return refusal_decision(job, refusal, Readings::new());
    }
    let (readings, why) = match app.verifier.verify(&target.name, &rule.verify, Utc::now()) {
        Verdict::Holds { readings, why } => (readings, why),
        Verdict::NotVerified { reason, readings } => {
            return Decision { readings, ..decision_for(job, Outcome::NotVerified, reason) };
        }
    };
    match app.gate.admit(job.dedupe.as_deref(), &rule.name, &target.name, rule.cooldown, Utc::now()) {
        Ok(None) => {}
        Ok(Some(refusal)) => return refusal_decision(job, refusal, readings),
        Err(error) => {
            return Decision {
                readings,
                ..decision_for(job, Outcome::Refused, format!("cannot record gate state: {error}"))
            };
        }
    }
    let captures = join_all(rule.capture.iter().map(|&kind| capture(app, job, kind, &readings))).await;
    let failures: Vec<String> = captures
        .iter()
        .filter(|meta| !meta.is_ok())
        .map(|meta| format!("{}: {}", meta.kind, meta.error.as_deref().unwrap_or("failed")))
        .collect();
    let kept: Vec<&str> =
        captures.iter().filter(|meta| meta.is_ok()).map(|meta| meta.kind.as_str()).collect();
    let (outcome, mut reason) = if failures.is_empty() {
        (Outcome::Captured, format!("captured {}", kept.join(", ")))
    } else if kept.is_empty() {
        (Outcome::CaptureFailed, format!("capture failed: {}", failures.join("; ")))
    } else {
        (Outcome::PartiallyCaptured, format!("captured {}; failed {}", kept.join(", "), failures.join("; ")))
    };
    if !why.is_empty() {
        reason = format!("{reason} (verified: {})", why.join("; "));
    }
    if !kept.is_empty() {
        enforce_retention(app).await;
    }
    drop(slot);
    let annotations = annotate(app, &captures, &why).await;
    Decision {
        captures: captures.into_iter().map(|meta| meta.id).collect(),
        readings,
        annotations,
        ..decision_for(job, outcome, reason)
    }
}

/// One Grafana annotation per kept capture, if Grafana is configured.
async fn annotate(app: &App, captures: &[CaptureMeta], why: &[String]) -> Vec<AnnotationOutcome> {
    let Some(grafana) = app.grafana() else { return Vec::new() };
    let mut outcomes = Vec::new();
    for capture in captures.iter().filter(|capture| capture.is_ok()) {
        let annotation = grafana.annotation(capture, why);
        let outcome = match grafana.annotate(&annotation).await {
            Ok(id) => {
                app.metrics.annotation("ok");
                tracing::info!(id = %capture.id, annotation = id, "Grafana annotation added.");
                AnnotationOutcome { capture: capture.id.clone(), id: Some(id), error: None }
            }
            Err(error) => {
                app.metrics.annotation(error.result());
                tracing::warn!(id = %capture.id, error = %error, "Grafana annotation failed.");
                AnnotationOutcome { capture: capture.id.clone(), id: None, error: Some(error.to_string()) }
            }
        };
        outcomes.push(outcome);
    }
    outcomes
}

/// One kind from one target: waits for a place in flight (and the target's CPU profiler
/// or tracer), downloads, validates and stores. Always returns the capture's metadata,
/// kept or failed.
async fn capture(app: &App, job: &Job, kind: ProfileKind, readings: &Readings) -> CaptureMeta {
    let (rule, target) = (job.rule(), job.target());
    let _slot = match kind.exclusive_slot() {
        Some(slot) => Some(app.gate.exclusive(&target.name, slot).await),
        None => None,
    };
    let _permit = app.gate.in_flight().await;
    app.metrics.captures_in_flight.inc();
    let seconds = kind.is_timed().then_some(rule.seconds);
    let url = crate::capture::PprofClient::profile_url(&target.pprof_url, kind, rule.seconds);
    let started_at = Utc::now();
    let clock = Instant::now();
    let mut meta = CaptureMeta {
        id: String::new(),
        target: target.name.clone(),
        rule: rule.name.clone(),
        kind: kind.name().to_string(),
        status: CaptureStatus::Failed,
        error: None,
        trigger: job.trigger.clone(),
        readings: readings.clone(),
        url: url.to_string(),
        seconds,
        started_at,
        finished_at: started_at,
        bytes: 0,
        sha256: None,
        file: None,
    };
    let store = app.store.clone();
    let (target_name, rule_name) = (target.name.clone(), rule.name.clone());
    let begun = spawn_blocking(move || store.begin(&target_name, &rule_name, kind.name())).await;
    let (id, staged) = match begun {
        Ok(Ok(begun)) => begun,
        Ok(Err(error)) => return failed_before_start(app, meta, kind, error.to_string()),
        Err(error) => return failed_before_start(app, meta, kind, error.to_string()),
    };
    meta.id = id;
    tracing::info!(id = %meta.id, url = %url, "Capture started.");
    let fetched = app.client.fetch(&target.pprof_url, kind, rule.seconds, &staged, None, &app.abort).await;
    meta.finished_at = Utc::now();
    match fetched {
        Ok(fetched) => {
            meta.status = CaptureStatus::Ok;
            meta.bytes = fetched.bytes;
            meta.sha256 = Some(fetched.sha256);
        }
        Err(error) => meta.error = Some(error.to_string()),
    }
    let store = app.store.clone();
    let pending = meta.clone();
    let stored = spawn_blocking(move || store.finish(pending, &staged)).await;
    let meta = match stored {
        Ok(Ok(stored)) => stored,
        Ok(Err(error)) => failed(meta, format!("cannot store the profile: {error}")),
        Err(error) => failed(meta, format!("cannot store the profile: {error}")),
    };
    app.metrics.captures_in_flight.dec();
    app.metrics.capture(kind, meta.is_ok(), clock.elapsed().as_secs_f64(), meta.bytes);
    if meta.is_ok() {
        tracing::info!(id = %meta.id, target = %meta.target, bytes = meta.bytes, "Profile stored.");
    } else {
        tracing::warn!(id = %meta.id, target = %meta.target, error = meta.error.as_deref().unwrap_or(""), "Capture failed.");
    }
    meta
}

fn failed(mut meta: CaptureMeta, error: String) -> CaptureMeta {
    meta.status = CaptureStatus::Failed;
    meta.error = Some(error);
    meta.file = None;
    meta.bytes = 0;
    meta.sha256 = None;
    meta
}

fn failed_before_start(app: &App, meta: CaptureMeta, kind: ProfileKind, error: String) -> CaptureMeta {
    app.metrics.captures_in_flight.dec();
    app.metrics.capture(kind, false, 0.0, 0);
    failed(meta, format!("cannot stage the profile: {error}"))
}

pub async fn enforce_retention(app: &App) {
    let store = app.store.clone();
    match spawn_blocking(move || store.enforce_retention()).await {
        Ok(Ok(0)) => {}
        Ok(Ok(deleted)) => app.metrics.retention_deleted(deleted),
        Ok(Err(error)) => tracing::error!(error = %error, "Retention failed."),
        Err(error) => tracing::error!(error = %error, "Retention task failed."),
    }
}
