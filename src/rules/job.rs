//! One unit of work: what to capture from which target, under which config, and why.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Rule, Target};
use crate::gate::{CooldownKey, DedupeKey, Pending};
use crate::model::{CaptureRole, Endpoint, Trigger, TriggerSource};

/// One unit of work: capture what `rule` asks for from `target`, if it verifies and the
/// gate lets it.
#[derive(Debug, Clone)]
pub struct Job {
    /// The config the job was made under; a reload does not change a queued job.
    pub config: Arc<Config>,
    pub rule: usize,
    pub target: usize,
    pub trigger: Trigger,
    /// `None` for watch triggers, which the cooldown alone limits.
    pub dedupe: Option<DedupeKey>,
    /// Holds the dedupe key while the job is queued or running, so that a copy of its
    /// alert is a duplicate at intake; shared by clones, let go when the last one goes.
    pub pending: Option<Arc<Pending>>,
    /// Where the requests go: the target's URLs, rendered from the alert's labels if
    /// templated.
    pub endpoint: Arc<Endpoint>,
    /// A spike, or a baseline of normal times (the alert resolved, or a periodic one
    /// while quiet).
    pub role: CaptureRole,
}

impl Job {
    pub fn rule(&self) -> &Rule {
        &self.config.rules[self.rule]
    }

    pub fn target(&self) -> &Target {
        &self.config.targets[self.target]
    }

    /// What the gate keeps this job's cooldown under: its rule and role, and the target
    /// (for a templated one, the instance it renders to).
    pub fn cooldown_key(&self) -> CooldownKey<'_> {
        CooldownKey::new(&self.rule().name, self.role, self.endpoint.gate_target(&self.target().name))
    }

    pub fn is_baseline(&self) -> bool {
        self.role == CaptureRole::Baseline
    }

    /// How long after this job the gate refuses the next of its kind on the target.
    pub fn cooldown(&self) -> Duration {
        let rule = self.rule();
        match (self.is_baseline(), self.trigger.source, rule.baseline.every) {
            (true, TriggerSource::Baseline, Some(every)) => every,
            _ => rule.cooldown,
        }
    }
}
