//! Where decisions go: every one is logged and counted; the most recent are kept in memory
//! for the API and the web page.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::metrics::Metrics;
use crate::model::{Decision, Outcome};

/// Decisions kept for the API.
const KEPT: usize = 1000;

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

/// The log of decisions, shared by everything that decides.
#[derive(Clone)]
pub struct DecisionLog {
    recent: Arc<Mutex<VecDeque<Decision>>>,
    /// Every decision is counted in `alertprof_decisions_total`.
    metrics: Arc<Metrics>,
}

impl DecisionLog {
    pub fn new(metrics: Arc<Metrics>) -> DecisionLog {
        DecisionLog { recent: Arc::new(Mutex::new(VecDeque::with_capacity(KEPT))), metrics }
    }

    /// Logs, counts and keeps a decision.
    pub fn record(&self, decision: Decision) {
        self.record_all(std::iter::once(decision));
    }

    /// Logs, counts and keeps decisions, taking the list's lock once for all of them (a
    /// webhook payload's alerts).
    pub fn record_all(&self, decisions: impl IntoIterator<Item = Decision>) {
        // An alert for another node's process is that node's to list; here it is counted.
        let decisions = decisions.into_iter().filter(|decision| {
            if decision.outcome == Outcome::Elsewhere {
                self.record_repeat(decision);
                return false;
            }
            log(decision);
            self.metrics.decision(decision.outcome);
            true
        });
        let mut recent = self.recent.lock().unwrap();
        for decision in decisions {
            if recent.len() == KEPT {
                recent.pop_front();
            }
            recent.push_back(decision);
        }
    }

    /// Counts and debug-logs a decision without keeping it: one that repeats the previous
    /// one of the same watch rule and target (a watch rule decides every interval, and the
    /// list would hold nothing else), or one about another node's process.
    pub fn record_repeat(&self, decision: &Decision) {
        tracing::debug!(
            outcome = decision.outcome.name(),
            rule = decision.rule.as_deref().unwrap_or("-"),
            target = decision.target.as_deref().unwrap_or("-"),
            source = decision.source.name(),
            reason = %decision.reason,
            "Decision (repeated)."
        );
        self.metrics.decision(decision.outcome);
    }

    /// Newest first.
    pub fn recent(&self, limit: usize) -> Vec<Decision> {
        self.recent.lock().unwrap().iter().rev().take(limit).cloned().collect()
    }
}
