//! Turns what Alertmanager sends into work: a payload is parsed and checked, each alert
//! matched against the rules, and the result is the jobs to queue and the decisions made
//! at once. Pure: it neither queues nor records, and nothing here waits on a target.

use std::sync::Arc;

use chrono::Utc;

use crate::config::Config;
use crate::model::{Decision, MalformedPayload, Outcome, Reason, TriggerSource, WebhookPayload};
use crate::rules::{GateCheck, Job, Match, match_alert};

/// Why a payload is not taken. Nothing was queued or recorded for it.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("malformed payload: {0}")]
    Malformed(#[from] MalformedPayload),
    #[error("{count} alerts in one payload; at most {max} are taken (webhook.max_alerts)")]
    TooManyAlerts { count: usize, max: usize },
}

/// What a payload came to.
#[derive(Debug, Default)]
pub struct Intake {
    /// To queue, all or none.
    pub jobs: Vec<Job>,
    /// Decided at once: no rule or target, resolved, refused, or refused by the gate.
    pub decisions: Vec<Decision>,
    /// Alerts that became work: a job for at least one rule and target.
    pub accepted: usize,
    /// The others: no rule or target took them, or the gate refused them at once (a
    /// duplicate, a copy of an alert whose job is queued or running, a cooldown).
    pub ignored: usize,
}

/// Parses and checks a webhook body.
pub fn parse(body: &[u8]) -> Result<WebhookPayload<'_>, IntakeError> {
    let payload: WebhookPayload = serde_json::from_slice(body).map_err(MalformedPayload::from)?;
    payload.check()?;
    Ok(payload)
}

/// Matches every alert of a payload. A duplicate or a cooldown (`refused` says which) is
/// decided here and never becomes a job: most of an alert storm, kept off the queue so
/// its bound protects real work.
pub fn intake(
    config: &Arc<Config>,
    payload: &WebhookPayload<'_>,
    mut hold: impl GateCheck,
) -> Result<Intake, IntakeError> {
    if payload.alerts.len() > config.webhook.max_alerts {
        return Err(IntakeError::TooManyAlerts {
            count: payload.alerts.len(),
            max: config.webhook.max_alerts,
        });
    }
    let now = Utc::now();
    let mut intake = Intake { decisions: Vec::with_capacity(payload.alerts.len()), ..Intake::default() };
    for alert in &payload.alerts {
        let mut taken = false;
        let decide = |rule, target, outcome: Outcome, reason: Reason| Decision {
            alertname: alert.alertname().map(std::borrow::Cow::into_owned),
            fingerprint: Some(alert.fingerprint().into_owned()),
            rule,
            target,
            ..Decision::new(now, TriggerSource::Alertmanager, outcome, reason)
        };
        for found in match_alert(config, alert, now, &mut hold) {
            match found {
                Match::Job(job) => {
                    taken = true;
                    intake.jobs.push(*job);
                }
                Match::Refused { rule, target, refusal } => {
                    let outcome = refusal.outcome();
                    intake.decisions.push(decide(
                        Some(rule),
                        Some(target),
                        outcome,
                        Reason::Refused(refusal),
                    ));
                }
                Match::Skip { rule, target, outcome, reason } => {
                    intake.decisions.push(decide(rule, target, outcome, reason.into()))
                }
            }
        }
        intake.accepted += usize::from(taken);
    }
    intake.ignored = payload.alerts.len() - intake.accepted;
    Ok(intake)
}
