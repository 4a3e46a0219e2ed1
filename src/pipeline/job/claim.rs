//! With a shared bucket, the other instances are asked before any request: the alert and
//! the rule's cooldown on the target are claimed there, marked done after the captures,
//! and given back if this instance does not capture after all.

use std::sync::Arc;

use chrono::Utc;

use super::outcome::{decision_for, refusal_decision};
use super::steps::JobSteps;
use crate::gate::{Claimed, Claims};
use crate::model::{Decision, Outcome, Readings};
use crate::rules::Job;

/// What a job claimed in the shared bucket.
pub struct Claim {
    claims: Arc<Claims>,
    claimed: Claimed,
}

/// Claims the alert and the cooldown, if there is a shared bucket, off the async threads.
/// Held for as long as the slowest of the rule's captures may take. A bucket that cannot be
/// reached leaves the local gate as it was, so a later delivery may still capture.
pub async fn claim(steps: &JobSteps, job: &Job) -> Result<Option<Claim>, Box<Decision>> {
    let Some(claims) = steps.claims.clone() else { return Ok(None) };
    let rule = job.rule();
    let recorded = steps.recorder.get(&job.target().name).and_then(|r| r.config().cpu).unwrap_or_default();
    let client = &steps.capturer.client;
    let hold = rule.capture.iter().map(|&kind| client.timeout(kind, rule.seconds)).max().unwrap_or_default()
        + recorded;
    let (dedupe, key, cooldown) = (job.dedupe.clone(), job.cooldown_key().into_owned(), job.cooldown());
    let worker = claims.clone();
    let claimed =
        tokio::task::spawn_blocking(move || worker.claim(dedupe.as_ref(), &key, cooldown, hold, Utc::now()))
            .await;
    match claimed {
        Ok(Ok(Ok(claimed))) => Ok(Some(Claim { claims, claimed })),
        Ok(Ok(Err(refusal))) => Err(Box::new(refusal_decision(job, refusal, Readings::new()))),
        Ok(Err(error)) => Err(cannot_claim(job, &error)),
        Err(error) => Err(cannot_claim(job, &error)),
    }
}

fn cannot_claim(job: &Job, why: &dyn std::fmt::Display) -> Box<Decision> {
    let reason = format!("cannot claim the alert in the shared bucket, so nothing was requested: {why}");
    Box::new(decision_for(job, Outcome::CaptureFailed, reason))
}

impl Claim {
    /// The captures are over: the alert's claim now holds for `dedupe_ttl`.
    pub async fn done(self) {
        let Claim { claims, claimed } = self;
        tokio::task::spawn_blocking(move || claims.done(&claimed, Utc::now())).await.ok();
    }

    /// Nothing is captured after all (the local gate refused): given back.
    pub async fn give_back(self) {
        let Claim { claims, claimed } = self;
        tokio::task::spawn_blocking(move || claims.give_back(&claimed)).await.ok();
    }
}
