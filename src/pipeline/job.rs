//! One job, start to end: gate pre-check, verify (or, for a baseline, check the target is
//! quiet), admit, capture every kind, annotate, and one decision.

use std::net::SocketAddr;

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use tokio::sync::OwnedSemaphorePermit;

use super::App;
use super::capture::{fetch, keep};
use super::workers::enforce_retention;
use crate::analyze::{grew_line, top_line};
use crate::capture::PprofClient;
use crate::model::endpoint::check_resolved;
use crate::model::{
    AnnotationOutcome, CaptureMeta, Decision, Outcome, Readings, Reason, Refusal, TriggerSource,
};
use crate::rules::Job;
use crate::verify::Verdict;
use crate::verify::sampler::sample_metrics_now;

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
        alertname: job.trigger.alertname.clone(),
        fingerprint: job.trigger.fingerprint.clone(),
        rule: Some(job.rule().name.clone()),
        target: Some(job.target().name.clone()),
        ..Decision::new(Utc::now(), job.trigger.source, outcome, reason)
    }
}

/// The decision for a job the gate refuses before anything else is done, if it does.
pub(super) fn refused_at_once(app: &App, job: &Job) -> Option<Decision> {
    let refusal = app.gate.check(job.dedupe.as_deref(), &job.gate_rule(), &job.target().name, Utc::now())?;
    Some(refusal_decision(job, refusal, Readings::new()))
}

pub fn refusal_decision(job: &Job, refusal: Refusal, readings: Readings) -> Decision {
    Decision { readings, ..decision_for(job, refusal.outcome(), Reason::Refused(refusal)) }
}

/// For a baseline: the readings, if the rule's signals are quiet on the target — each one
/// read and none triggering (a baseline taken during a spike would hide it) — and, for a
/// periodic one, the rule out of its cooldown. Else the decision saying why not.
pub fn quiet(app: &App, job: &Job, now: DateTime<Utc>) -> Result<Readings, Box<Decision>> {
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
    match app.gate.admit(job.dedupe.as_deref(), &gate_rule, &target.name, job.cooldown(), Utc::now()).await {
        Ok(None) => {}
        Ok(Some(refusal)) => return refusal_decision(job, refusal, readings),
        Err(error) => {
            return Decision { readings, ..decision_for(job, Outcome::Refused, error.to_string()) };
        }
    }
    let fetched = join_all(rule.capture.iter().map(|&kind| fetch(app, job, kind, &readings, &client))).await;
    // The job's place goes back once the profiles are downloaded: analyzing them and
    // telling Grafana never hold up other captures.
    drop(slot);
    let captures = join_all(fetched.into_iter().map(|fetched| keep(app, fetched))).await;
    let failures: Vec<String> = captures
        .iter()
        .filter(|meta| !meta.is_ok())
        .map(|meta| format!("{}: {}", meta.kind, meta.error.as_deref().unwrap_or("failed")))
        .collect();
    let kept: Vec<&str> = captures.iter().filter(|meta| meta.is_ok()).map(|meta| meta.kind.name()).collect();
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
    let annotations = annotate(app, &captures, &why).await;
    let top = captures
        .iter()
        .filter_map(|meta| meta.summary.as_ref().map(|summary| (meta.kind, top_line(summary, meta.kind))))
        .collect();
    let grew = captures
        .iter()
        .filter_map(|meta| meta.diff.as_ref().map(|diff| (meta.kind, grew_line(diff, meta.kind))))
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

/// One Grafana annotation per kept capture, if Grafana is configured. Stops when the
/// shutdown grace has passed.
async fn annotate(app: &App, captures: &[CaptureMeta], why: &[String]) -> Vec<AnnotationOutcome> {
    let Some(grafana) = app.grafana() else { return Vec::new() };
    let mut outcomes = Vec::new();
    for capture in captures.iter().filter(|capture| capture.is_ok()) {
        let annotation = grafana.annotation(capture, why);
        let outcome = match grafana.annotate(&annotation, &app.abort).await {
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
