//! Which rules an alert is for, and on which targets: a rule takes an alert whose labels
//! include its `alert_labels`; of the rule's targets, those whose `alert_labels` the
//! alert's labels include.

pub mod endpoint;

pub use endpoint::Endpoint;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::decision::Outcome;
use crate::intake::{Alert, AlertStatus};
use crate::store::{Trigger, TriggerSource};

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
    /// Where the requests go: the target's URLs, rendered from the alert's labels if
    /// templated.
    pub endpoint: Arc<Endpoint>,
    /// A baseline of normal times (the alert resolved, or a periodic one while quiet)
    /// rather than a spike.
    pub baseline: bool,
}

impl Job {
    pub fn rule(&self) -> &crate::config::Rule {
        &self.config.rules[self.rule]
    }

    pub fn target(&self) -> &crate::config::Target {
        &self.config.targets[self.target]
    }

    /// The name the gate keeps this job's cooldown under: the rule's, or for a baseline
    /// `<rule>/baseline` (rule names have no `/`), so a baseline right after a spike is not
    /// refused by the spike's cooldown, nor a spike by a baseline's.
    pub fn gate_rule(&self) -> Cow<'_, str> {
        let name = &self.rule().name;
        if self.baseline { Cow::Owned(format!("{name}/baseline")) } else { Cow::Borrowed(name) }
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

/// What an alert came to for one rule.
#[derive(Debug)]
pub enum Match {
    Job(Box<Job>),
    /// No job; the decision is made here. `rule` is `None` when no rule took the alert.
    Skip {
        rule: Option<String>,
        target: Option<String>,
        outcome: Outcome,
        reason: String,
    },
}

fn includes(labels: &BTreeMap<String, String>, wanted: &BTreeMap<String, String>) -> bool {
    wanted.iter().all(|(name, value)| labels.get(name) == Some(value))
}

fn describe(labels: &BTreeMap<String, String>) -> String {
    let parts: Vec<_> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", parts.join(", "))
}

/// What every job of one alert shares.
struct PerAlert {
    fingerprint: String,
    labels: Arc<BTreeMap<String, String>>,
    /// startsAt in nanoseconds, for the dedupe key.
    starts_at: i64,
}

/// Matches one alert against every rule.
pub fn match_alert(config: &Arc<Config>, alert: &Alert) -> Vec<Match> {
    let status = alert.status().unwrap_or(AlertStatus::Firing);
    let mut found = Vec::new();
    // Made once per alert, on its first job, and shared by the rest.
    let mut shared: Option<PerAlert> = None;
    for (rule_index, rule) in config.rules.iter().enumerate() {
        let Some(rule_labels) = &rule.alert_labels else {
            continue;
        };
        if !includes(&alert.labels, rule_labels) {
            continue;
        }
        if status == AlertStatus::Resolved && !rule.baseline.on_resolved {
            found.push(Match::Skip {
                rule: Some(rule.name.clone()),
                target: None,
                outcome: Outcome::Resolved,
                reason: "alert resolved; the rule takes no baseline on resolve".to_string(),
            });
            continue;
        }
        let targets: Vec<usize> = rule
            .targets
            .iter()
            .copied()
            .filter(|&t| includes(&alert.labels, &config.targets[t].alert_labels))
            .collect();
        if targets.is_empty() {
            found.push(Match::Skip {
                rule: Some(rule.name.clone()),
                target: None,
                outcome: Outcome::NoMatchingTarget,
                reason: format!(
                    "no target of the rule matches the alert's labels {}",
                    describe(&alert.labels)
                ),
            });
            continue;
        }
        for target in targets {
            let suffix = if status == AlertStatus::Resolved { "/resolved" } else { "" };
            let target_name = &config.targets[target].name;
            let endpoint = match Endpoint::for_alert(&config.targets[target], &alert.labels) {
                Ok(endpoint) => endpoint,
                Err(why) => {
                    found.push(Match::Skip {
                        rule: Some(rule.name.clone()),
                        target: Some(target_name.clone()),
                        outcome: Outcome::Refused,
                        reason: format!("refused before any request: {why}"),
                    });
                    continue;
                }
            };
            let PerAlert { fingerprint, labels, starts_at } = shared.get_or_insert_with(|| PerAlert {
                fingerprint: alert.fingerprint(),
                labels: Arc::new(alert.labels.clone()),
                starts_at: alert.starts_at.and_then(|t| t.timestamp_nanos_opt()).unwrap_or_default(),
            });
            found.push(Match::Job(Box::new(Job {
                config: config.clone(),
                rule: rule_index,
                target,
                trigger: Trigger {
                    source: TriggerSource::Alertmanager,
                    alertname: alert.alertname().map(str::to_string),
                    fingerprint: Some(fingerprint.clone()),
                    starts_at: alert.starts_at,
                    labels: labels.clone(),
                },
                dedupe: Some(format!("{fingerprint}@{starts_at}/{}/{target_name}{suffix}", rule.name)),
                endpoint,
                baseline: status == AlertStatus::Resolved,
            })));
        }
    }
    if found.is_empty() {
        found.push(Match::Skip {
            rule: None,
            target: None,
            outcome: Outcome::NoMatchingRule,
            reason: format!("no rule's alert_labels match {}", describe(&alert.labels)),
        });
    }
    found
}
