//! One job, start to end, in steps that each take the handles they use: where the alert
//! is, the gate's pre-check, verify (or, for a baseline, check the target is quiet), where
//! the requests may go, the bucket's claims, admission, every kind captured and kept,
//! retention, Grafana, and one decision.

pub mod capture;
mod claim;
pub mod from_recorder;
pub mod outcome;
mod perf;
mod steps;
pub mod verify;

pub use steps::JobSteps;

use std::sync::Arc;

use chrono::Utc;
use futures_util::future::join_all;
use tokio::sync::OwnedSemaphorePermit;

use crate::capture::PprofClient;
use crate::capture::perf::{RECORDED_SOURCE, off_thread};
use crate::model::{
    CaptureMeta, CaptureRole, Decision, Outcome, PendingCapture, ProfileKind, Readings, Window,
};
use crate::recorder::Recording;
use crate::rules::Job;
use capture::StagedCapture;
use outcome::{decision_for, outcome_of, refusal_decision, with_captures};

/// Runs a job to its decision. `slot` (a place among the jobs running) is given back once
/// the captures are done, before Grafana is told: a slow Grafana never holds up captures.
pub async fn run_job(steps: &JobSteps, job: Job, slot: Option<OwnedSemaphorePermit>) -> Decision {
    // Another node's alert is not this instance's to refuse, nor to count against a
    // cooldown: where it is comes first.
    if let Some(decision) = verify::elsewhere(&job).await {
        return decision;
    }
    if let Some(refusal) = steps.gate.check(job.dedupe.as_ref(), &job.cooldown_key(), Utc::now()) {
        return refusal_decision(&job, refusal, Readings::new());
    }
    let (readings, why) = match verify::verify(steps, &job, Utc::now()).await {
        Ok(verified) => verified,
        Err(decision) => return *decision,
    };
    let client = match verify::pinned_client(&steps.capturer.client, &job).await {
        Ok(client) => client,
        Err(why) => {
            let reason = format!("refused before any request: {why}");
            return Decision { readings, ..decision_for(&job, Outcome::Refused, reason) };
        }
    };
    let claim = match claim::claim(steps, &job).await {
        Ok(claim) => claim,
        Err(decision) => return Decision { readings, ..*decision },
    };
    if let Some(decision) = admit(steps, &job, &readings).await {
        if let Some(claim) = claim {
            // The other instances were told this one captures: it does not, after all.
            claim.give_back().await;
        }
        return decision;
    }
    let captures = capture_all(steps, &job, &readings, &client, slot).await;
    if let Some(claim) = claim {
        claim.done().await;
    }
    conclude(steps, &job, readings, &why, captures).await
}

/// Admits the job in the local gate: `None`, or the decision that it was refused.
async fn admit(steps: &JobSteps, job: &Job, readings: &Readings) -> Option<Decision> {
    let admitted =
        steps.gate.admit(job.dedupe.as_ref(), &job.cooldown_key(), job.cooldown(), Utc::now()).await;
    match admitted {
        Ok(None) => None,
        Ok(Some(refusal)) => Some(refusal_decision(job, refusal, readings.clone())),
        Err(error) => Some(Decision {
            readings: readings.clone(),
            ..decision_for(job, Outcome::Refused, error.to_string())
        }),
    }
}

/// The decision on what was captured; retention, and Grafana, after the captures.
async fn conclude(
    steps: &JobSteps,
    job: &Job,
    readings: Readings,
    why: &[String],
    captures: Vec<CaptureMeta>,
) -> Decision {
    let what = if job.is_baseline() { "baseline " } else { "" };
    let (outcome, mut reason) = outcome_of(&captures, what);
    if !why.is_empty() {
        reason = format!("{reason} (verified: {})", why.join("; "));
    }
    if captures.iter().any(CaptureMeta::is_ok) {
        steps.retention.enforce().await;
    }
    let annotations = steps.annotator.captures(&captures, why).await;
    Decision { readings, annotations, ..with_captures(decision_for(job, outcome, reason), captures) }
}

/// A capture of `kind` for `job` in `role`, named, with what is known before it starts.
fn pending(
    steps: &JobSteps,
    job: &Job,
    kind: ProfileKind,
    role: CaptureRole,
    readings: &Readings,
) -> PendingCapture {
    let (rule, target) = (job.rule(), job.target());
    let id = steps.capturer.name(&rule.name, role, kind);
    let mut pending =
        PendingCapture::new(id, &target.name, &rule.name, kind, job.trigger.clone(), Utc::now());
    pending.role = role;
    pending.readings = readings.clone();
    // A templated target is not sampled: it has no readings over time.
    if !job.endpoint.per_alert() {
        pending.signals = steps.verifier.series(&target.name);
        pending.bases = steps.verifier.bases(&target.name);
    }
    pending.seconds = kind.is_timed().then_some(rule.seconds);
    if let Some(base) = job.endpoint.pprof_url.as_ref().filter(|_| kind.needs_pprof_url()) {
        pending.url = PprofClient::profile_url(base, kind, rule.seconds).to_string();
    }
    pending
}

/// Captures every kind the rule asks for: a recorded target's CPU from its recorder,
/// merged over the window; its heap and goroutine fresh, with the recorder's snapshot from
/// before the window to compare with; everything else fetched. The job's place (`slot`)
/// is given back once the downloads are done, before the profiles are analyzed and kept.
async fn capture_all(
    steps: &JobSteps,
    job: &Job,
    readings: &Readings,
    client: &PprofClient,
    slot: Option<OwnedSemaphorePermit>,
) -> Vec<CaptureMeta> {
    let now = Utc::now();
    let window = from_recorder::window(job, now);
    let recording = steps.recorder.get(&job.target().name).filter(|_| !job.endpoint.per_alert());
    let kinds = job.rule().capture.iter().map(|&kind| {
        let recorded = recording.as_ref().filter(|recording| recording.config().records(kind));
        capture_kind(steps, job, kind, readings, client, recorded, window)
    });
    let staged: Vec<StagedCapture> = join_all(kinds).await.into_iter().flatten().collect();
    drop(slot);
    // What the newest are compared with is kept first.
    let (before, rest): (Vec<StagedCapture>, Vec<StagedCapture>) =
        staged.into_iter().partition(|staged| staged.id().1 == CaptureRole::BeforeWindow);
    let mut captures = Vec::new();
    for staged in before {
        captures.push(steps.capturer.keep(staged).await);
    }
    captures.extend(join_all(rest.into_iter().map(|staged| steps.capturer.keep(staged))).await);
    captures
}

/// One kind: from the recorder, or fetched (with the recorder's snapshot from before the
/// window to compare with).
async fn capture_kind(
    steps: &JobSteps,
    job: &Job,
    kind: ProfileKind,
    readings: &Readings,
    client: &PprofClient,
    recorded: Option<&Arc<Recording>>,
    window: Window,
) -> Vec<StagedCapture> {
    let capturer = &steps.capturer;
    let slot_key = job.endpoint.slot_key(&job.target().name);
    let fetch = |pending: PendingCapture| async {
        match &job.endpoint.pprof_url {
            Some(base) => capturer.fetch(pending, client, base, &slot_key).await,
            None => StagedCapture::failed(pending, "the target has no pprof_url", std::time::Instant::now()),
        }
    };
    match recorded {
        Some(recording) if kind.is_continuous() => {
            let mut pending = pending(steps, job, kind, job.role, readings);
            pending.window = Some(window);
            if kind == ProfileKind::Perf {
                pending.url = RECORDED_SOURCE.to_string();
            }
            vec![from_recorder::merged(capturer, recording, pending).await]
        }
        _ if kind == ProfileKind::Perf => {
            vec![sample_perf(steps, job, pending(steps, job, kind, job.role, readings)).await]
        }
        Some(recording) if !job.is_baseline() => {
            let before = match from_recorder::snapshot_before(recording, kind, window, Utc::now()) {
                Some(opened) => {
                    let mut pending = pending(steps, job, kind, CaptureRole::BeforeWindow, readings);
                    pending.window = Some(window);
                    Some(
                        from_recorder::snapshot_into(capturer, pending, opened, std::time::Instant::now())
                            .await,
                    )
                }
                None => None,
            };
            let mut newest = fetch(pending(steps, job, kind, job.role, readings)).await;
            if let Some(pending) = newest.pending_mut() {
                pending.window = Some(Window { from: window.from, to: pending.finished_at });
            }
            if let Some(base) = before.as_ref().filter(|before| before.is_ready()) {
                newest.compare_with(base.id().0.clone());
            }
            before.into_iter().chain([newest]).collect()
        }
        _ => vec![fetch(pending(steps, job, kind, job.role, readings)).await],
    }
}

/// A `perf` capture: the job's process or cgroup found on this host, and sampled.
async fn sample_perf(steps: &JobSteps, job: &Job, mut pending: PendingCapture) -> StagedCapture {
    let lookup = perf::lookup(job);
    let found = {
        let lookup = lookup.clone();
        off_thread(move || Ok(lookup.find()?)).await
    };
    let target = match found {
        Ok(target) => target,
        Err(why) => return StagedCapture::failed(pending, why.to_string(), std::time::Instant::now()),
    };
    pending.url = lookup.source(&target);
    let slot_key = job.endpoint.slot_key(&job.target().name);
    steps.capturer.sample_perf(pending, target, perf::settings(job), &slot_key).await
}
