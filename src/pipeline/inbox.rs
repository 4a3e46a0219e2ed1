//! Where payloads of alerts come in, from the webhook or Alertmanager's API: intake against
//! the local gate, the jobs queued all or none, the alerts counted and the decisions
//! recorded. A refused payload changes nothing, not even the counts.

use std::sync::Arc;

use super::decisions::DecisionLog;
use super::queue::{JobQueue, QueueError};
use crate::config::Config;
use crate::gate::Gate;
use crate::intake::{IntakeError, intake, parse};
use crate::metrics::Metrics;

/// Why a payload of alerts was not taken. Nothing of it was queued, recorded or counted.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error(transparent)]
    Intake(#[from] IntakeError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// What a payload of alerts came to.
#[derive(Debug, Clone, Copy)]
pub struct Taken {
    pub accepted: usize,
    pub ignored: usize,
}

/// Takes payloads of alerts into the queue.
#[derive(Clone)]
pub struct Inbox {
    gate: Arc<Gate>,
    pub queue: JobQueue,
    decisions: DecisionLog,
    metrics: Arc<Metrics>,
}

impl Inbox {
    pub fn new(gate: Arc<Gate>, queue: JobQueue, decisions: DecisionLog, metrics: Arc<Metrics>) -> Inbox {
        Inbox { gate, queue, decisions, metrics }
    }

    /// Takes a webhook-format payload (from the webhook, or made from Alertmanager's API).
    pub fn take(&self, config: &Arc<Config>, body: &[u8]) -> Result<Taken, PayloadError> {
        let payload = parse(body)?;
        let now = chrono::Utc::now();
        let hold = |dedupe: &crate::gate::DedupeKey, cooldown: &crate::gate::CooldownKey<'_>| {
            self.gate.hold(dedupe, cooldown, now).map(Some)
        };
        let taken = intake(config, &payload, hold)?;
        self.queue.enqueue(taken.jobs)?;
        for alert in &payload.alerts {
            self.metrics.alert_received(&alert.status);
        }
        self.decisions.record_all(taken.decisions);
        Ok(Taken { accepted: taken.accepted, ignored: taken.ignored })
    }
}
