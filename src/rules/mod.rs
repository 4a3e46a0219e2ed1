//! Which rules an alert is for, and on which targets: a rule takes an alert whose labels
//! include its `alert_labels`; of the rule's targets, those whose `alert_labels` the
//! alert's labels include.

use std::collections::BTreeMap;
use std::sync::Arc;

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
}

impl Job {
    pub fn rule(&self) -> &crate::config::Rule {
        &self.config.rules[self.rule]
    }

    pub fn target(&self) -> &crate::config::Target {
        &self.config.targets[self.target]
    }
}

/// What an alert came to for one rule.
#[derive(Debug)]
pub enum Match {
    Job(Job),
    /// No job; the decision is made here. `rule` is `None` when no rule took the alert.
    Skip {
        rule: Option<String>,
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

/// Matches one alert against every rule.
pub fn match_alert(config: &Arc<Config>, alert: &Alert) -> Vec<Match> {
    let status = alert.status().unwrap_or(AlertStatus::Firing);
    let mut found = Vec::new();
    for (rule_index, rule) in config.rules.iter().enumerate() {
        let Some(rule_labels) = &rule.alert_labels else {
            continue;
        };
        if !includes(&alert.labels, rule_labels) {
            continue;
        }
        if status == AlertStatus::Resolved && !rule.on_resolved {
            found.push(Match::Skip {
                rule: Some(rule.name.clone()),
                outcome: Outcome::Resolved,
                reason: "alert resolved; the rule does not capture on resolve".to_string(),
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
                outcome: Outcome::NoMatchingTarget,
                reason: format!(
                    "no target of the rule matches the alert's labels {}",
                    describe(&alert.labels)
                ),
            });
            continue;
        }
        let fingerprint = alert.fingerprint();
        let starts_at = alert.starts_at.map(|t| t.to_rfc3339()).unwrap_or_default();
        for target in targets {
            let suffix = if status == AlertStatus::Resolved { "/resolved" } else { "" };
            let target_name = &config.targets[target].name;
            found.push(Match::Job(Job {
                config: config.clone(),
                rule: rule_index,
                target,
                trigger: Trigger {
                    source: TriggerSource::Alertmanager,
                    alertname: alert.alertname().map(str::to_string),
                    fingerprint: Some(fingerprint.clone()),
                    starts_at: alert.starts_at,
                    labels: alert.labels.clone(),
                },
                dedupe: Some(format!("{fingerprint}@{starts_at}/{}/{target_name}{suffix}", rule.name)),
            }));
        }
    }
    if found.is_empty() {
        found.push(Match::Skip {
            rule: None,
            outcome: Outcome::NoMatchingRule,
            reason: format!("no rule's alert_labels match {}", describe(&alert.labels)),
        });
    }
    found
}
