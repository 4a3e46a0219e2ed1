//! One job, start to end: gate pre-check, verify (or, for a baseline, check the target is
//! quiet), admit, capture every kind, analyze and store, and one decision.

use std::net::SocketAddr;
use std::time::Instant;

use chrono::Utc;
use futures_util::future::join_all;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::spawn_blocking;

use super::App;
use crate::analyze::diff::Measure;
use crate::analyze::stored::{self, AnalysisError};
use crate::analyze::{Diff, FunctionTable, Summary, diff};
use crate::capture::{BodyFormat, PprofClient, ProfileKind};
use crate::decision::{AnnotationOutcome, Decision, Outcome, Reason};
use crate::gate::Refusal;
use crate::rules::Job;
use crate::rules::endpoint::check_resolved;
use crate::store::{CaptureMeta, CaptureStatus, TriggerSource};
use crate::verify::sampler::sample_metrics_now;
use crate::verify::{Readings, Verdict};

/// How long a templated target's /metrics may take when verified on arrival.
const SCRAPE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs a job to its decision. `slot` (a place among the jobs running) is given back once
/// the captures are done, before Grafana is told: a slow Grafana never holds up captures.
pub async fn run_job(app: &App, job: Job, slot: Option<OwnedSemaphorePermit>) {
    let decision = decide(app, &job, slot).await;
    app.record(decision);
}

/// A decision about `job` without captures or readings.
pub fn decision_for(job: &Job, outcome: Outcome, reason: impl Into<Reason>) -> Decision {
    Decision {
        at: Utc::now(),
        source: job.trigger.source,
        outcome,
        reason: reason.into(),
        alertname: job.trigger.alertname.clone(),
        fingerprint: job.trigger.fingerprint.clone(),
        rule: Some(job.rule().name.clone()),
        target: Some(job.target().name.clone()),
        captures: Vec::new(),
        readings: Readings::new(),
        annotations: Vec::new(),
        top: Default::default(),
        grew: Default::default(),
    }
}

/// The decision for a job the gate refuses before anything else is done, if it does.
pub fn refused_at_once(app: &App, job: &Job) -> Option<Decision> {
    let refusal = app.gate.check(job.dedupe.as_deref(), &job.gate_rule(), &job.target().name, Utc::now())?;
    Some(refusal_decision(job, refusal, Readings::new()))
}

pub fn refusal_decision(job: &Job, refusal: Refusal, readings: Readings) -> Decision {
    let (outcome, reason) = refusal_outcome(refusal);
    Decision { readings, ..decision_for(job, outcome, reason) }
}

/// The outcome and reason of a gate refusal.
pub fn refusal_outcome(refusal: Refusal) -> (Outcome, Reason) {
    let outcome = match refusal {
        Refusal::Duplicate { .. } => Outcome::Duplicate,
        Refusal::Cooldown { .. } => Outcome::Cooldown,
    };
    (outcome, Reason::Refused(refusal))
}

/// For a baseline: the readings, if the rule's signals are quiet on the target — each one
/// read and none triggering (a baseline taken during a spike would hide it) — and, for a
/// periodic one, the rule out of its cooldown. Else the decision saying why not.
pub fn quiet(app: &App, job: &Job, now: chrono::DateTime<Utc>) -> Result<Readings, Box<Decision>> {
    let (rule, target) = (job.rule(), job.target());
    let not_quiet = |why: String, readings: Readings| {
        Box::new(Decision {
            readings,
            ..decision_for(job, Outcome::NotVerified, format!("not quiet, no baseline: {why}"))
        })
    };
    if job.trigger.source == TriggerSource::Baseline
        && let Some(Refusal::Cooldown { until }) = app.gate.check(None, &rule.name, &target.name, now)
    {
        return Err(not_quiet(
            format!("the rule captured a spike; in cooldown until {until}"),
            Readings::new(),
        ));
    }
    // A templated target has no local readings: its alert resolving is what says quiet.
    if job.endpoint.templated {
        return Ok(Readings::new());
    }
    let readings = app.verifier.readings(&target.name);
    let mut loud = Vec::new();
    for check in &rule.verify {
        let key = check.signal.key();
        if !readings.contains_key(&key) {
            loud.push(format!("no reading of {key}"));
        } else if let Verdict::Holds { why, .. } =
            app.verifier.verify(&target.name, std::slice::from_ref(check), now)
        {
            loud.extend(why);
        }
    }
    if loud.is_empty() { Ok(readings) } else { Err(not_quiet(loud.join("; "), readings)) }
}

async fn decide(app: &App, job: &Job, slot: Option<OwnedSemaphorePermit>) -> Decision {
    let (rule, target) = (job.rule(), job.target());
    let gate_rule = job.gate_rule();
    if let Some(refusal) = app.gate.check(job.dedupe.as_deref(), &gate_rule, &target.name, Utc::now()) {
        return refusal_decision(job, refusal, Readings::new());
    }
    let (readings, why) = if job.baseline {
        match quiet(app, job, Utc::now()) {
            Ok(readings) => (readings, Vec::new()),
            Err(decision) => return *decision,
        }
    } else {
        let verdict = if job.endpoint.templated && !rule.verify.is_empty() {
            verify_on_arrival(app, job).await
        } else {
            app.verifier.verify(&target.name, &rule.verify, Utc::now())
        };
        match verdict {
            Verdict::Holds { readings, why } => (readings, why),
            Verdict::NotVerified { reason, readings } => {
                return Decision { readings, ..decision_for(job, Outcome::NotVerified, reason) };
            }
        }
    };
    let client = match pinned_client(app, job).await {
        Ok(client) => client,
        Err(why) => {
            let reason = format!("refused before any request: {why}");
            return Decision { readings, ..decision_for(job, Outcome::Refused, reason) };
        }
    };
    match app.gate.admit(job.dedupe.as_deref(), &gate_rule, &target.name, job.cooldown(), Utc::now()) {
        Ok(None) => {}
        Ok(Some(refusal)) => return refusal_decision(job, refusal, readings),
        Err(error) => {
            return Decision {
                readings,
                ..decision_for(job, Outcome::Refused, format!("cannot record gate state: {error}"))
            };
        }
    }
    let captures =
        join_all(rule.capture.iter().map(|&kind| capture(app, job, kind, &readings, &client))).await;
    let failures: Vec<String> = captures
        .iter()
        .filter(|meta| !meta.is_ok())
        .map(|meta| format!("{}: {}", meta.kind, meta.error.as_deref().unwrap_or("failed")))
        .collect();
    let kept: Vec<&str> =
        captures.iter().filter(|meta| meta.is_ok()).map(|meta| meta.kind.as_str()).collect();
    let what = if job.baseline { "baseline " } else { "" };
    let (outcome, mut reason) = if failures.is_empty() {
        (Outcome::Captured, format!("captured {what}{}", kept.join(", ")))
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
    let top = captures
        .iter()
        .filter_map(|meta| meta.summary.as_ref().map(|summary| (meta.kind.clone(), top_line(summary))))
        .collect();
    let grew = captures
        .iter()
        .filter_map(|meta| meta.diff.as_ref().map(|diff| (meta.kind.clone(), grew_line(diff, &meta.kind))))
        .collect();
    Decision {
        captures: captures.into_iter().map(|meta| meta.id).collect(),
        readings,
        annotations,
        top,
        grew,
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
async fn capture(
    app: &App,
    job: &Job,
    kind: ProfileKind,
    readings: &Readings,
    client: &PprofClient,
) -> CaptureMeta {
    let (rule, target) = (job.rule(), job.target());
    let _slot = match kind.exclusive_slot() {
        Some(slot) => Some(app.gate.exclusive(&job.endpoint.slot_key(&target.name), slot).await),
        None => None,
    };
    let _permit = app.gate.in_flight().await;
    app.metrics.captures_in_flight.inc();
    let seconds = kind.is_timed().then_some(rule.seconds);
    let url = crate::capture::PprofClient::profile_url(&job.endpoint.pprof_url, kind, rule.seconds);
    let started_at = Utc::now();
    let clock = Instant::now();
    let mut meta = CaptureMeta {
        id: String::new(),
        target: target.name.to_string(),
        rule: rule.name.to_string(),
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
        summary: None,
        baseline: job.baseline,
        diff: None,
    };
    let store = app.store.clone();
    let target_name = target.name.clone();
    // Baselines are told apart in their ids too: `…-cpu-spike-baseline-cpu`.
    let rule_name = if job.baseline { format!("{}-baseline", rule.name) } else { rule.name.to_string() };
    let begun = spawn_blocking(move || store.begin(&target_name, &rule_name, kind.name())).await;
    let (id, staged) = match begun {
        Ok(Ok(begun)) => begun,
        Ok(Err(error)) => return failed_before_start(app, meta, kind, error.to_string()),
        Err(error) => return failed_before_start(app, meta, kind, error.to_string()),
    };
    meta.id = id;
    tracing::info!(id = %meta.id, url = %url, "Capture started.");
    let fetched = client.fetch(&job.endpoint.pprof_url, kind, rule.seconds, &staged, None, &app.abort).await;
    meta.finished_at = Utc::now();
    match fetched {
        Ok(fetched) => {
            meta.status = CaptureStatus::Ok;
            meta.bytes = fetched.bytes;
            meta.sha256 = Some(fetched.sha256);
            if kind.format() == BodyFormat::Pprof {
                (meta.summary, meta.diff) = analyze_staged(app, &meta, &staged).await;
            }
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
        let top = meta.summary.as_ref().map(top_line).unwrap_or_default();
        tracing::info!(id = %meta.id, target = %meta.target, bytes = meta.bytes, top = %top, "Profile stored.");
    } else {
        tracing::warn!(id = %meta.id, target = %meta.target, error = meta.error.as_deref().unwrap_or(""), "Capture failed.");
    }
    meta
}

/// Functions listed in logs, decisions and annotations.
pub const TOP_SHOWN: usize = 5;
/// Functions kept in a capture's metadata.
const TOP_KEPT: usize = 20;

/// The top functions of a validated, staged profile and, for a spike, what grew against
/// the latest baseline of its target and kind. `None`s (and a log line) if that fails: the
/// capture is kept regardless.
async fn analyze_staged(
    app: &App,
    meta: &CaptureMeta,
    staged: &std::path::Path,
) -> (Option<Summary>, Option<Diff>) {
    let (store, meta, path) = (app.store.clone(), meta.clone(), staged.to_path_buf());
    let analyzed = spawn_blocking(move || {
        let table = match FunctionTable::read(|| std::fs::File::open(&path), stored::MAX_UNZIPPED) {
            Ok(table) => table,
            Err(error) => {
                tracing::warn!(id = %meta.id, error = %error, "Cannot summarize the profile.");
                return (None, None);
            }
        };
        let summary = Some(table.summary(TOP_KEPT));
        let Some(base) = stored::latest_baseline(store.as_ref(), &meta).filter(|_| !meta.baseline) else {
            return (summary, None);
        };
        let diff = stored::function_table(store.as_ref(), &base.id)
            .and_then(|base_table| {
                diff(&table, &base_table, &base.id, stored::DIFF_KEPT)
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

/// `main.spin 98.7%, main.work 1.0%` — the first functions by flat share.
pub fn top_line(summary: &Summary) -> String {
    summary.top.iter().take(TOP_SHOWN).map(|f| f.short()).collect::<Vec<_>>().join(", ")
}

/// `main.leak +1.5s (+300.0%)` — the functions of a `kind` capture that grew most against
/// the baseline, or that nothing did.
pub fn grew_line(diff: &Diff, kind: &str) -> String {
    let measure = Measure::for_kind(kind);
    let grown: Vec<String> =
        diff.grown(measure).into_iter().take(TOP_SHOWN).map(|f| diff.describe(f, measure)).collect();
    if grown.is_empty() { "nothing grew".to_string() } else { grown.join(", ") }
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

/// For a templated URL with a host name: the addresses it resolves to, once checked
/// against the allow list (no link-local or metadata address), to pin the connection to.
/// `None` when there is nothing to pin (fixed URLs; IP literals were checked at intake).
async fn checked_addresses(
    url: &reqwest::Url,
    job: &Job,
) -> Result<Option<(String, Vec<SocketAddr>)>, String> {
    let Some(host) = url.domain().filter(|_| job.endpoint.templated) else { return Ok(None) };
    let port = url.port_or_known_default().unwrap_or(80);
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|error| format!("cannot resolve {host}: {error}"))?
        .collect();
    let ips: Vec<std::net::IpAddr> = addresses.iter().map(SocketAddr::ip).collect();
    check_resolved(&ips, &job.target().allowed_targets)?;
    Ok(Some((host.to_string(), addresses)))
}

/// The pprof client for a job: the shared one, or one pinned to checked addresses.
async fn pinned_client(app: &App, job: &Job) -> Result<PprofClient, String> {
    Ok(match checked_addresses(&job.endpoint.pprof_url, job).await? {
        Some((host, addresses)) => app.client.pinned(&host, &addresses),
        None => app.client.clone(),
    })
}

/// Verifies a templated target on its instance's /metrics, read now.
async fn verify_on_arrival(app: &App, job: &Job) -> Verdict {
    let (rule, target) = (job.rule(), job.target());
    let url = job.endpoint.metrics_url.as_ref();
    let http = match url {
        Some(url) => match checked_addresses(url, job).await {
            Ok(Some((host, addresses))) => crate::http::builder()
                .resolve_to_addrs(&host, &addresses)
                .build()
                .expect("the HTTP client builds"),
            Ok(None) => app.client.http().clone(),
            Err(why) => {
                let reason = format!("no reading: refused {url}: {why}");
                return Verdict::NotVerified { reason, readings: Readings::new() };
            }
        },
        None => app.client.http().clone(),
    };
    let sample = sample_metrics_now(target, &[rule], url, &http, SCRAPE_TIMEOUT).await;
    app.verifier.judge_sample(&rule.verify, sample)
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
