//! A job's decision: for a job decided at once, for a gate's refusal, and for a set of
//! captures (what was kept, what failed, and what each found).

use chrono::Utc;

use crate::analyze::{grew_line, top_line};
use crate::model::{CaptureMeta, Decision, Outcome, Readings, Reason, Refusal};
use crate::rules::Job;

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

/// The decision for a job the gate refused.
pub fn refusal_decision(job: &Job, refusal: Refusal, readings: Readings) -> Decision {
    Decision { readings, ..decision_for(job, refusal.outcome(), Reason::Refused(refusal)) }
}

/// The outcome of a set of captures and its reason: what was kept and what failed. The
/// snapshots from before a window are kept for comparison, not named. `what` says what
/// they were (`baseline `, `its last `).
pub fn outcome_of(captures: &[CaptureMeta], what: &str) -> (Outcome, String) {
    let failures: Vec<String> = captures
        .iter()
        .filter(|meta| !meta.is_ok())
        .map(|meta| format!("{}: {}", meta.kind, meta.error().unwrap_or("failed")))
        .collect();
    let kept: Vec<String> =
        captures.iter().filter(|meta| meta.is_ok() && !meta.is_before_window()).map(kept_line).collect();
    if failures.is_empty() {
        (Outcome::Captured, format!("captured {what}{}", kept.join(", ")))
    } else if kept.is_empty() {
        (Outcome::CaptureFailed, format!("capture failed: {}", failures.join("; ")))
    } else {
        (Outcome::PartiallyCaptured, format!("captured {}; failed {}", kept.join(", "), failures.join("; ")))
    }
}

/// A kept capture as the decision names it: its kind, for one merged from the recorder
/// how, and for a perf capture how its samples came out.
fn kept_line(meta: &CaptureMeta) -> String {
    if let Some(perf) = &meta.perf {
        return format!("{} ({})", meta.kind, perf.line());
    }
    match &meta.window {
        Some(window) if !meta.segments.is_empty() && meta.kind.is_continuous() => format!(
            "{} (merged from {} recorded segments, {}–{})",
            meta.kind,
            meta.segments.len(),
            meta.started_at.format("%H:%M:%S"),
            window.to.min(meta.finished_at).format("%H:%M:%S")
        ),
        _ => meta.kind.name().to_string(),
    }
}

/// A decision with its captures: their ids, and the top functions and what grew of each
/// (not of the snapshots kept to compare with).
pub fn with_captures(decision: Decision, captures: Vec<CaptureMeta>) -> Decision {
    let shown = || captures.iter().filter(|meta| !meta.is_before_window());
    let top = shown()
        .filter_map(|meta| meta.summary.as_ref().map(|summary| (meta.kind, top_line(summary, meta.kind))))
        .collect();
    let grew = shown()
        .filter_map(|meta| meta.diff.as_ref().map(|diff| (meta.kind, grew_line(diff, meta.kind))))
        .collect();
    Decision { captures: captures.into_iter().map(|meta| meta.id).collect(), top, grew, ..decision }
}
