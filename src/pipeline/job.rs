//! One job, start to end: gate pre-check, verify (or, for a baseline, check the target is
//! quiet), admit, capture every kind, annotate, and one decision.

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use tokio::sync::OwnedSemaphorePermit;

use super::App;
use super::capture::{Fetched, fetch, keep};
use super::recorded;
use super::workers::enforce_retention;
use crate::analyze::{grew_line, top_line};
use crate::capture::PprofClient;
use crate::gate::{Claims, Held};
use crate::model::endpoint::check_resolved;
use crate::model::{
    AnnotationOutcome, CaptureMeta, Decision, Outcome, ProfileKind, Readings, Reason, Refusal, TriggerSource,
    Window,
};
use crate::rules::Job;
use crate::verify::Verdict;
use crate::verify::cgroup::CgroupReader;
use crate::verify::sampler::{CgroupNow, sample_now};

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
/// An alert whose cgroup may be on another node is asked where it is first, in `decide`.
pub(super) fn refused_at_once(app: &App, job: &Job) -> Option<Decision> {
    if job.endpoint.cgroup.is_some() {
        return None;
    }
    let refusal = app.gate.check(job.dedupe.as_deref(), &job.gate_rule(), &job.gate_target(), Utc::now())?;
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
        && let Some(Refusal::Cooldown { until }) = app.gate.check(None, &rule.name, &job.gate_target(), now)
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
    let (gate_rule, gate_target) = (job.gate_rule(), job.gate_target());
    // Another node's alert is not this instance's to refuse, nor to count against a
    // cooldown: where it is comes first.
    if let Some(decision) = elsewhere(job).await {
        return decision;
    }
    if let Some(refusal) = app.gate.check(job.dedupe.as_deref(), &gate_rule, &gate_target, Utc::now()) {
        return refusal_decision(job, refusal, Readings::new());
    }
    let (readings, why) = if job.baseline {
        match quiet(app, job, Utc::now()) {
            Ok(readings) => (readings, Vec::new()),
            Err(decision) => return *decision,
        }
    } else {
        let now = Utc::now();
        let verdict = if job.endpoint.templated && !rule.verify.is_empty() {
            verify_on_arrival(app, job).await
        } else if rule.lookback.is_some() {
            app.verifier.verify_since(&target.name, &rule.verify, recorded::window(job, now).from, now)
        } else {
            app.verifier.verify(&target.name, &rule.verify, now)
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
    // With a shared bucket, the other instances are asked first: a bucket that cannot
    // be reached leaves the local gate as it was, so a later delivery may still capture.
    let claimed = match claim(app, job).await {
        Ok(claimed) => claimed,
        Err(decision) => return Decision { readings, ..*decision },
    };
    let admitted =
        app.gate.admit(job.dedupe.as_deref(), &gate_rule, &gate_target, job.cooldown(), Utc::now());
    let refused = match admitted.await {
        Ok(None) => None,
        Ok(Some(refusal)) => Some(refusal_decision(job, refusal, readings.clone())),
        Err(error) => Some(Decision {
            readings: readings.clone(),
            ..decision_for(job, Outcome::Refused, error.to_string())
        }),
    };
    if let Some(decision) = refused {
        // The other instances were told this one captures: it does not, after all.
        if let Some((claims, held)) = claimed {
            tokio::task::spawn_blocking(move || claims.give_back(&held)).await.ok();
        }
        return decision;
    }
    let captures = capture_all(app, job, &readings, &client, slot).await;
    if let Some((claims, held)) = claimed {
        tokio::task::spawn_blocking(move || claims.done(&held, Utc::now())).await.ok();
    }
    let what = if job.baseline { "baseline " } else { "" };
    let (outcome, mut reason) = outcome_of(&captures, what);
    if !why.is_empty() {
        reason = format!("{reason} (verified: {})", why.join("; "));
    }
    if captures.iter().any(CaptureMeta::is_ok) {
        enforce_retention(app).await;
    }
    let annotations = annotate(app, &captures, &why).await;
    Decision { readings, annotations, ..with_captures(decision_for(job, outcome, reason), captures) }
}

/// Claims the alert and the cooldown in the shared bucket, if there is one, off the async
/// threads. Held for as long as the slowest of the rule's captures may take.
async fn claim(app: &App, job: &Job) -> Result<Option<(Arc<Claims>, Held)>, Box<Decision>> {
    let Some(claims) = app.claims.clone() else { return Ok(None) };
    let rule = job.rule();
    let recorded = app.recorder.get(&job.target().name).and_then(|r| r.config().cpu).unwrap_or_default();
    let hold =
        rule.capture.iter().map(|&kind| app.client.timeout(kind, rule.seconds)).max().unwrap_or_default()
            + recorded;
    let (dedupe, gate_rule, target, cooldown) =
        (job.dedupe.clone(), job.gate_rule().into_owned(), job.gate_target().into_owned(), job.cooldown());
    let worker = claims.clone();
    let claimed = tokio::task::spawn_blocking(move || {
        worker.claim(dedupe.as_deref(), &gate_rule, &target, cooldown, hold, Utc::now())
    })
    .await
    .unwrap_or_else(|error| Err(error.to_string()));
    match claimed {
        Ok(Ok(held)) => Ok(Some((claims, held))),
        Ok(Err(refusal)) => Err(Box::new(refusal_decision(job, refusal, Readings::new()))),
        Err(why) => {
            let reason =
                format!("cannot claim the alert in the shared bucket, so nothing was requested: {why}");
            Err(Box::new(decision_for(job, Outcome::CaptureFailed, reason)))
        }
    }
}

/// Captures every kind the rule asks for: a recorded target's CPU from its recorder,
/// merged over the window; its heap and goroutine fresh, with the recorder's snapshot from
/// before the window to compare with; everything else fetched. The job's place (`slot`)
/// is given back once the downloads are done, before the profiles are analyzed and kept.
async fn capture_all(
    app: &App,
    job: &Job,
    readings: &Readings,
    client: &PprofClient,
    slot: Option<OwnedSemaphorePermit>,
) -> Vec<CaptureMeta> {
    let now = Utc::now();
    let window = recorded::window(job, now);
    let recording = app.recorder.get(&job.target().name).filter(|_| !job.endpoint.templated);
    let recorded = |kind| recording.as_ref().filter(|r| r.config().records(kind));
    let fetches = job.rule().capture.iter().map(|&kind| async move {
        match recorded(kind) {
            Some(recording) if kind == ProfileKind::Cpu => {
                vec![recorded::merged_cpu(app, job, recording, window, readings).await]
            }
            Some(recording) if !job.baseline => {
                let before = recorded::before_window(app, job, recording, kind, window, readings, now).await;
                let mut newest = fetch(app, job, kind, readings, client).await;
                newest.meta.window = Some(Window { from: window.from, to: newest.meta.finished_at });
                newest.compare_with = before.as_ref().filter(|b| b.meta.is_ok()).map(|b| b.meta.id.clone());
                before.into_iter().chain([newest]).collect()
            }
            _ => vec![fetch(app, job, kind, readings, client).await],
        }
    });
    let fetched: Vec<Fetched> = join_all(fetches).await.into_iter().flatten().collect();
    drop(slot);
    // What the newest are compared with is kept first.
    let (before, rest): (Vec<Fetched>, Vec<Fetched>) =
        fetched.into_iter().partition(|f| f.meta.before_window);
    let mut captures = Vec::new();
    for fetched in before {
        captures.push(keep(app, fetched).await);
    }
    captures.extend(join_all(rest.into_iter().map(|fetched| keep(app, fetched))).await);
    captures
}

/// The outcome of a set of captures and its reason: what was kept and what failed. The
/// snapshots from before a window are kept for comparison, not named.
pub(super) fn outcome_of(captures: &[CaptureMeta], what: &str) -> (Outcome, String) {
    let failures: Vec<String> = captures
        .iter()
        .filter(|meta| !meta.is_ok())
        .map(|meta| format!("{}: {}", meta.kind, meta.error.as_deref().unwrap_or("failed")))
        .collect();
    let kept: Vec<String> = captures
        .iter()
        .filter(|meta| meta.is_ok() && !meta.before_window)
        .map(|meta| match &meta.window {
            Some(window) if !meta.segments.is_empty() && meta.kind == ProfileKind::Cpu => format!(
                "{} (merged from {} recorded segments, {}–{})",
                meta.kind,
                meta.segments.len(),
                meta.started_at.format("%H:%M:%S"),
                window.to.min(meta.finished_at).format("%H:%M:%S")
            ),
            _ => meta.kind.name().to_string(),
        })
        .collect();
    if failures.is_empty() {
        (Outcome::Captured, format!("captured {what}{}", kept.join(", ")))
    } else if kept.is_empty() {
        (Outcome::CaptureFailed, format!("capture failed: {}", failures.join("; ")))
    } else {
        (Outcome::PartiallyCaptured, format!("captured {}; failed {}", kept.join(", "), failures.join("; ")))
    }
}

/// A decision with its captures: their ids, and the top functions and what grew of each
/// (not of the snapshots kept to compare with).
pub(super) fn with_captures(decision: Decision, captures: Vec<CaptureMeta>) -> Decision {
    let shown = || captures.iter().filter(|meta| !meta.before_window);
    let top = shown()
        .filter_map(|meta| meta.summary.as_ref().map(|summary| (meta.kind, top_line(summary, meta.kind))))
        .collect();
    let grew = shown()
        .filter_map(|meta| meta.diff.as_ref().map(|diff| (meta.kind, grew_line(diff, meta.kind))))
        .collect();
    Decision { captures: captures.into_iter().map(|meta| meta.id).collect(), top, grew, ..decision }
}

/// One Grafana annotation per kept capture, if Grafana is configured. Stops when the
/// shutdown grace has passed.
async fn annotate(app: &App, captures: &[CaptureMeta], why: &[String]) -> Vec<AnnotationOutcome> {
    let Some(grafana) = app.grafana() else { return Vec::new() };
    let mut outcomes = Vec::new();
    for capture in captures.iter().filter(|capture| capture.is_ok() && !capture.before_window) {
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

/// An alert whose cgroup (from its labels) is not on this node is another instance's.
async fn elsewhere(job: &Job) -> Option<Decision> {
    let cgroup = job.endpoint.cgroup.clone()?;
    let reader = CgroupReader::new(&job.config.cgroup_root, &job.config.proc_root);
    let path = cgroup.clone();
    let dirs = tokio::task::spawn_blocking(move || reader.dirs_of_path(&path)).await.unwrap_or_default();
    if dirs.cpu.is_some() || dirs.cpuacct.is_some() || dirs.memory.is_some() {
        return None;
    }
    let reason = format!("cgroup /{} is not on this node", cgroup.display());
    Some(decision_for(job, Outcome::Elsewhere, reason))
}

/// Verifies a templated target on its instance's /metrics and, with the alert's cgroup on
/// this node, on the cgroup's readings, read now.
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
    let config = &job.config;
    let cgroup = job.endpoint.cgroup.as_deref().map(|cgroup| CgroupNow {
        cgroup,
        cgroup_root: &config.cgroup_root,
        proc_root: &config.proc_root,
    });
    let sample = sample_now(target, &[rule], url, &http, SCRAPE_TIMEOUT, cgroup).await;
    app.verifier.judge_sample(&rule.verify, sample)
}
