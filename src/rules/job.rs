//! One unit of work: what to capture from which target, under which config, and why.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Rule, Target};
use crate::gate::Pending;
use crate::model::{Endpoint, Trigger, TriggerSource};

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
    pub dedupe: Option<String>,
    /// Holds the dedupe key while the job is queued or running, so that a copy of its
    /// alert is a duplicate at intake; shared by clones, let go when the last one goes.
    pub pending: Option<Arc<Pending>>,
    /// Where the requests go: the target's URLs, rendered from the alert's labels if
    /// templated.
    pub endpoint: Arc<Endpoint>,
    /// A baseline of normal times (the alert resolved, or a periodic one while quiet)
    /// rather than a spike.
    pub baseline: bool,
}

impl Job {
    pub fn rule(&self) -> &Rule {
        &self.config.rules[self.rule]
    }

    pub fn target(&self) -> &Target {
        &self.config.targets[self.target]
    }

    /// The name the gate keeps this job's cooldown under: the rule's, or for a baseline
    /// `<rule>/baseline` (rule names have no `/`), so a baseline right after a spike is not
    /// refused by the spike's cooldown, nor a spike by a baseline's.
    pub fn gate_rule(&self) -> Cow<'_, str> {
        gate_rule(&self.rule().name, self.baseline)
    }

    /// The target as the gate keeps its cooldown: see `Endpoint::gate_target`.
    pub fn gate_target(&self) -> Cow<'_, str> {
        self.endpoint.gate_target(&self.target().name)
    }

    /// How long after this job the gate refuses the next of its kind on the target.
    pub fn cooldown(&self) -> Duration {
        let rule = self.rule();
        match (self.baseline, self.trigger.source, rule.baseline.every) {
            (true, TriggerSource::Baseline, Some(every)) => every,
            _ => rule.cooldown,
        }
    }
}

/// The name the gate keeps a rule's cooldown under; see `Job::gate_rule`.
pub fn gate_rule(rule: &str, baseline: bool) -> Cow<'_, str> {
    if baseline { Cow::Owned(format!("{rule}/baseline")) } else { Cow::Borrowed(rule) }
}
