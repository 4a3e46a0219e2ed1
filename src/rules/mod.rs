//! Which rules an alert is for, and on which targets: a rule takes an alert whose labels
//! include its `alert_labels`; of the rule's targets, those whose `alert_labels` the
//! alert's labels include. Each alert × rule × target becomes a `Job`.

mod job;

pub use job::{Job, gate_rule};

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::gate::Pending;
use crate::model::{Alert, AlertStatus, Labels, Name, Outcome, Refusal, Trigger, TriggerSource};

/// What an alert came to for one rule.
#[derive(Debug)]
pub enum Match {
    Job(Box<Job>),
    /// The gate refused it at once (a duplicate, a cooldown): no job is made.
    Refused {
        rule: Name,
        target: Name,
        refusal: Refusal,
    },
    /// No job; the decision is made here. `rule` is `None` when no rule took the alert.
    Skip {
        rule: Option<Name>,
        target: Option<Name>,
        outcome: Outcome,
        reason: String,
    },
}

fn includes(labels: &Labels<'_>, wanted: &BTreeMap<String, String>) -> bool {
    wanted.iter().all(|(name, value)| labels.get(name.as_str()).is_some_and(|v| **v == **value))
}

thread_local! {
    static DEDUPE_KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// What every job of one alert shares.
struct PerAlert {
    fingerprint: String,
    labels: Arc<BTreeMap<String, String>>,
}

impl PerAlert {
    fn of(alert: &Alert<'_>, fingerprint: &str) -> PerAlert {
        PerAlert { fingerprint: fingerprint.to_string(), labels: Arc::new(alert.owned_labels()) }
    }
}

/// Asks the gate whether it refuses a job at once, given its dedupe key, the name its
/// cooldown is kept under, and the target; if not, the job holds its dedupe key while it
/// is queued or running (`None`: nothing to hold, as in tests and benchmarks).
pub trait GateCheck: FnMut(&str, &str, &str) -> Result<Option<Pending>, Refusal> {}
impl<F: FnMut(&str, &str, &str) -> Result<Option<Pending>, Refusal>> GateCheck for F {}

/// Matches one alert against every rule. What `hold` refuses becomes
/// `Match::Refused` before any job is built: most of an alert storm is repeats.
/// `now` is when the alert arrived.
pub fn match_alert(
    config: &Arc<Config>,
    alert: &Alert<'_>,
    now: DateTime<Utc>,
    mut hold: impl GateCheck,
) -> Vec<Match> {
    let status = alert.status().unwrap_or(AlertStatus::Firing);
    let baseline = status == AlertStatus::Resolved;
    let mut found = Vec::new();
    // Made once per alert, on its first job, and shared by the rest.
    let mut shared: Option<PerAlert> = None;
    let fingerprint = alert.fingerprint_ignoring(&config.gate.dedupe_ignore_labels);
    // startsAt in nanoseconds, for the dedupe key.
    let starts_at = alert.starts_at.and_then(|t| t.timestamp_nanos_opt()).unwrap_or_default();
    for (rule_index, rule) in config.rules.iter().enumerate() {
        let Some(rule_labels) = &rule.alert_labels else {
            continue;
        };
        if !includes(&alert.labels, rule_labels) {
            continue;
        }
        if baseline && !rule.baseline.on_resolved {
            found.push(Match::Skip {
                rule: Some(rule.name.clone()),
                target: None,
                outcome: Outcome::Resolved,
                reason: "alert resolved; the rule takes no baseline on resolve".to_string(),
            });
            continue;
        }
        let mut targets = rule
            .targets
            .iter()
            .copied()
            .filter(|&t| includes(&alert.labels, &config.targets[t].alert_labels))
            .peekable();
        if targets.peek().is_none() {
            found.push(Match::Skip {
                rule: Some(rule.name.clone()),
                target: None,
                outcome: Outcome::NoMatchingTarget,
                reason: format!(
                    "no target of the rule matches the alert's labels {}",
                    alert.describe_labels()
                ),
            });
            continue;
        }
        for target in targets {
            let suffix = if baseline { "/resolved" } else { "" };
            let target_config = &config.targets[target];
            let target_name = &target_config.name;
            // A templated target is rendered first: its cooldown is kept per instance. A
            // fixed one's URLs were built once, and are taken only if the gate lets it.
            let rendered = match &target_config.endpoint {
                Some(_) => None,
                None => {
                    let per = shared.get_or_insert_with(|| PerAlert::of(alert, &fingerprint));
                    Some(target_config.endpoint_for(&per.labels))
                }
            };
            let rendered = match rendered.transpose() {
                Ok(rendered) => rendered,
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
            let gate_target = match &rendered {
                Some(endpoint) => endpoint.gate_target(target_name),
                None => Cow::Borrowed(&**target_name),
            };
            // An alert whose cgroup may be on another node is not this instance's to
            // refuse: its job asks where it is before it asks the gate.
            let ask_gate = rendered.as_ref().is_none_or(|endpoint| endpoint.cgroup.is_none());
            // The key is written into a buffer kept per thread: a refused alert (most of a
            // storm) allocates none.
            let held = DEDUPE_KEY.with_borrow_mut(|key| {
                key.clear();
                write!(key, "{fingerprint}@{starts_at}/{}/{target_name}{suffix}", rule.name)
                    .expect("a String takes it");
                let held = match ask_gate {
                    true => hold(key, &gate_rule(&rule.name, baseline), &gate_target),
                    false => Ok(None),
                };
                held.map(|pending| (key.clone(), pending))
            });
            let (dedupe, pending) = match held {
                Err(refusal) => {
                    found.push(Match::Refused {
                        rule: rule.name.clone(),
                        target: target_name.clone(),
                        refusal,
                    });
                    continue;
                }
                Ok(held) => held,
            };
            let PerAlert { fingerprint, labels } =
                shared.get_or_insert_with(|| PerAlert::of(alert, &fingerprint));
            let endpoint =
                rendered.unwrap_or_else(|| target_config.endpoint.clone().expect("a fixed target"));
            found.push(Match::Job(Box::new(Job {
                config: config.clone(),
                rule: rule_index,
                target,
                trigger: Trigger {
                    source: TriggerSource::Alertmanager,
                    alertname: alert.alertname().map(Cow::into_owned),
                    fingerprint: Some(fingerprint.clone()),
                    starts_at: alert.starts_at,
                    received_at: Some(now),
                    labels: labels.clone(),
                },
                dedupe: Some(dedupe),
                pending: pending.map(Arc::new),
                endpoint,
                baseline,
            })));
        }
    }
    if found.is_empty() {
        found.push(Match::Skip {
            rule: None,
            target: None,
            outcome: Outcome::NoMatchingRule,
            reason: format!("no rule's alert_labels match {}", alert.describe_labels()),
        });
    }
    found
}
