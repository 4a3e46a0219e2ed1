//! Every alert × rule (and every watch trigger) ends in one `Decision` with an outcome and
//! a reason.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::id::CaptureId;
use super::kind::ProfileKind;
use super::name::Name;
use super::signal::Readings;
use super::text::time;
use super::trigger::TriggerSource;

/// Why the gate refuses a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// This alert (fingerprint and startsAt) was already captured for this rule and target.
    Duplicate { first_seen: DateTime<Utc> },
    /// A copy of this alert arrived first; its job is queued or running.
    Pending { since: DateTime<Utc> },
    /// The rule captured this target recently.
    Cooldown { until: DateTime<Utc> },
    /// Another instance sharing the bucket claimed this alert first.
    DuplicateElsewhere { first_seen: DateTime<Utc>, by: String },
    /// Another instance sharing the bucket started the rule's cooldown on the target.
    CooldownElsewhere { until: DateTime<Utc>, by: String },
}

impl Refusal {
    /// The outcome a refusal comes to.
    pub fn outcome(&self) -> Outcome {
        match self {
            Refusal::Duplicate { .. } | Refusal::Pending { .. } | Refusal::DuplicateElsewhere { .. } => {
                Outcome::Duplicate
            }
            Refusal::Cooldown { .. } | Refusal::CooldownElsewhere { .. } => Outcome::Cooldown,
        }
    }
}

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
    /// The alert's process is not on this instance's node: another instance's to take.
    /// Counted, not listed.
    Elsewhere,
}

impl Outcome {
    /// Every outcome, in declaration order (`outcome as usize` indexes it).
    pub const ALL: [Outcome; 12] = [
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
        Outcome::Elsewhere,
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
            Outcome::Elsewhere => "elsewhere",
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
    pub captures: Vec<CaptureId>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub readings: Readings,
    /// The top functions of each kept profile.proto capture, by kind.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub top: BTreeMap<ProfileKind, String>,
    /// What grew against the latest baseline, by kind, for captures that had one.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub grew: BTreeMap<ProfileKind, String>,
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

impl Decision {
    /// A decision made `at`, with no captures, readings or findings yet.
    pub fn new(
        at: DateTime<Utc>,
        source: TriggerSource,
        outcome: Outcome,
        reason: impl Into<Reason>,
    ) -> Decision {
        Decision {
            at,
            source,
            outcome,
            reason: reason.into(),
            alertname: None,
            fingerprint: None,
            rule: None,
            target: None,
            captures: Vec::new(),
            readings: Readings::new(),
            top: BTreeMap::new(),
            grew: BTreeMap::new(),
            annotations: Vec::new(),
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Text(text) => f.write_str(text),
            Reason::Refused(Refusal::Duplicate { first_seen }) => {
                write!(f, "alert already handled for this rule and target at {}", time(first_seen))
            }
            Reason::Refused(Refusal::Pending { since }) => {
                write!(
                    f,
                    "a copy of this alert came first, at {}; its capture is queued or running",
                    time(since)
                )
            }
            Reason::Refused(Refusal::Cooldown { until }) => write!(f, "in cooldown until {}", time(until)),
            Reason::Refused(Refusal::DuplicateElsewhere { first_seen, by }) => {
                write!(
                    f,
                    "another instance ({by}) claimed this alert for this rule and target at {}",
                    time(first_seen)
                )
            }
            Reason::Refused(Refusal::CooldownElsewhere { until, by }) => {
                write!(
                    f,
                    "in cooldown until {}: another instance ({by}) captured this target by this rule",
                    time(until)
                )
            }
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
    pub capture: CaptureId,
    /// Grafana's annotation id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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

    /// Times in reasons read to the second, as a person reads them: no nanoseconds.
    #[test]
    fn reasons_give_times_to_the_second() {
        let until = "2026-12-06T20:37:07.620427216Z".parse().unwrap();
        let reason = Reason::Refused(Refusal::Cooldown { until }).to_string();
        assert_eq!(reason, "in cooldown until 2026-12-06 20:37:07Z");
        let by = "alertprof-1".to_string();
        let reason = Reason::Refused(Refusal::DuplicateElsewhere { first_seen: until, by }).to_string();
        assert!(reason.ends_with("at 2026-12-06 20:37:07Z"), "{reason}");
    }
}
