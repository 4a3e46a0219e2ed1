//! Every alert × rule (and every watch trigger) ends in one `Decision` with an outcome and
//! a reason; decisions are logged, counted and kept for the API.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Name;
use crate::gate::Refusal;
use crate::metrics::Metrics;
use crate::store::TriggerSource;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every kind the rule asks for was captured and kept.
    Captured,
    /// Some kinds were kept, others failed.
    PartiallyCaptured,
    CaptureFailed,
    /// Local readings no longer show the condition.
    NotVerified,
    Duplicate,
    Cooldown,
    NoMatchingRule,
    NoMatchingTarget,
    /// A resolved alert for a rule that does not capture on resolve.
    Resolved,
    /// Refused before any request, e.g. the store cannot keep anything.
    Refused,
    /// Queued but dropped because alertprof shut down first.
    Dropped,
}

impl Outcome {
    /// Every outcome, in declaration order (`outcome as usize` indexes it).
    pub const ALL: [Outcome; 11] = [
        Outcome::Captured,
        Outcome::PartiallyCaptured,
        Outcome::CaptureFailed,
        Outcome::NotVerified,
        Outcome::Duplicate,
        Outcome::Cooldown,
        Outcome::NoMatchingRule,
        Outcome::NoMatchingTarget,
        Outcome::Resolved,
        Outcome::Refused,
        Outcome::Dropped,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Captured => "captured",
            Outcome::PartiallyCaptured => "partially_captured",
            Outcome::CaptureFailed => "capture_failed",
            Outcome::NotVerified => "not_verified",
            Outcome::Duplicate => "duplicate",
            Outcome::Cooldown => "cooldown",
            Outcome::NoMatchingRule => "no_matching_rule",
            Outcome::NoMatchingTarget => "no_matching_target",
            Outcome::Resolved => "resolved",
            Outcome::Refused => "refused",
            Outcome::Dropped => "dropped",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub at: DateTime<Utc>,
    pub source: TriggerSource,
    pub outcome: Outcome,
    pub reason: Reason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alertname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Name>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Name>,
    /// Ids of the captures this decision made, kept or failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub captures: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub readings: BTreeMap<String, f64>,
    /// The top functions of each kept profile.proto capture, by kind.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub top: BTreeMap<String, String>,
    /// What grew against the latest baseline, by kind, for captures that had one.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub grew: BTreeMap<String, String>,
    /// Grafana annotations of the kept captures.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<AnnotationOutcome>,
}

/// Why a decision came out as it did. A gate refusal is kept as data and put into words
/// when it is shown, so an alert storm of repeats costs no text formatting.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    Text(String),
    Refused(Refusal),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Text(text) => f.write_str(text),
            Reason::Refused(Refusal::Duplicate { first_seen }) => {
                write!(f, "alert already handled for this rule and target at {first_seen}")
            }
            Reason::Refused(Refusal::Cooldown { until }) => write!(f, "in cooldown until {until}"),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl From<String> for Reason {
    fn from(text: String) -> Reason {
        Reason::Text(text)
    }
}

impl From<&str> for Reason {
    fn from(text: &str) -> Reason {
        Reason::Text(text.to_string())
    }
}

/// What came of annotating one capture in Grafana.
#[derive(Debug, Clone, Serialize)]
pub struct AnnotationOutcome {
    pub capture: String,
    /// Grafana's annotation id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Logs a decision: failures and refusals as warnings, the rest as information.
fn log(decision: &Decision) {
    let rule = decision.rule.as_deref().unwrap_or("-");
    let target = decision.target.as_deref().unwrap_or("-");
    let alertname = decision.alertname.as_deref().unwrap_or("-");
    let outcome = decision.outcome.name();
    match decision.outcome {
        Outcome::CaptureFailed | Outcome::PartiallyCaptured | Outcome::Refused => {
            tracing::warn!(
                outcome, rule, target, alertname, source = decision.source.name(), reason = %decision.reason,
                captures = ?decision.captures, "Decision."
            )
        }
        _ => tracing::info!(
            outcome, rule, target, alertname, source = decision.source.name(), reason = %decision.reason,
            captures = ?decision.captures, top = ?decision.top, grew = ?decision.grew, "Decision."
        ),
    }
}

/// The most recent decisions, for `GET /api/v1/decisions`.
pub struct DecisionLog {
    recent: Mutex<VecDeque<Decision>>,
    capacity: usize,
}

impl DecisionLog {
    pub fn new(capacity: usize) -> DecisionLog {
        DecisionLog { recent: Mutex::new(VecDeque::with_capacity(capacity.min(1024))), capacity }
    }

    /// Logs, counts and keeps a decision.
    pub fn record(&self, decision: Decision, metrics: &Metrics) {
        self.record_all(std::iter::once(decision), metrics);
    }

    /// Logs, counts and keeps decisions, taking the list's lock once for all of them (a
    /// webhook payload's alerts).
    pub fn record_all(&self, decisions: impl IntoIterator<Item = Decision>, metrics: &Metrics) {
        let decisions = decisions.into_iter().inspect(|decision| {
            log(decision);
            metrics.decision(decision.outcome);
        });
        let mut recent = self.recent.lock().unwrap();
        for decision in decisions {
            if recent.len() == self.capacity {
                recent.pop_front();
            }
            recent.push_back(decision);
        }
    }

    /// Counts and debug-logs a decision that repeats the previous one of the same watch
    /// rule and target (same outcome), without keeping it: a watch rule decides every
    /// interval, and the list would hold nothing else.
    pub fn record_repeat(&self, decision: &Decision, metrics: &Metrics) {
        tracing::debug!(
            outcome = decision.outcome.name(),
            rule = decision.rule.as_deref().unwrap_or("-"),
            target = decision.target.as_deref().unwrap_or("-"),
            source = decision.source.name(),
            reason = %decision.reason,
            "Decision (repeated)."
        );
        metrics.decision(decision.outcome);
    }

    /// Newest first.
    pub fn recent(&self, limit: usize) -> Vec<Decision> {
        self.recent.lock().unwrap().iter().rev().take(limit).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Outcome::ALL` lists every outcome at its own index, as the metrics rely on.
    #[test]
    fn outcomes_index_themselves() {
        for (index, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, index, "{}", outcome.name());
        }
    }
}
