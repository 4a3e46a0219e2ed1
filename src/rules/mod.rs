//! Which rules an alert is for, and on which targets: a rule takes an alert whose labels
//! include its `alert_labels`; of the rule's targets, those whose `alert_labels` the
//! alert's labels include. Each alert × rule × target becomes a `Job`.

mod job;

pub use job::Job;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::gate::{CooldownKey, DedupeKey, Pending};
use crate::model::{Alert, AlertStatus, CaptureRole, Labels, Name, Outcome, Refusal, Trigger, TriggerSource};

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
    static DEDUPE_KEY: std::cell::RefCell<DedupeKey> = std::cell::RefCell::new(DedupeKey::default());
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

/// Asks the gate whether it refuses a job at once, given its dedupe key and cooldown; if
/// not, the job holds its dedupe key while it is queued or running (`None`: nothing to
/// hold, as in tests and benchmarks).
pub trait GateCheck: FnMut(&DedupeKey, &CooldownKey<'_>) -> Result<Option<Pending>, Refusal> {}
impl<F: FnMut(&DedupeKey, &CooldownKey<'_>) -> Result<Option<Pending>, Refusal>> GateCheck for F {}

/// Matches one alert against every rule. What `hold` refuses becomes
/// `Match::Refused` before any job is built: most of an alert storm is repeats.
/// `now` is when the alert arrived.
pub fn match_alert(
    config: &Arc<Config>,
    alert: &Alert<'_>,
    now: DateTime<Utc>,
    mut hold: impl GateCheck,
) -> Vec<Match> {
    let mut matching = Matching::new(config, alert, now);
    let mut found = Vec::new();
    for (rule_index, rule) in config.rules.iter().enumerate() {
        if !rule.alert_labels.as_ref().is_some_and(|wanted| includes(&alert.labels, wanted)) {
            continue;
        }
        if matching.role == CaptureRole::Baseline && !rule.baseline.on_resolved {
            let reason = "alert resolved; the rule takes no baseline on resolve".to_string();
            found.push(Match::Skip {
                rule: Some(rule.name.clone()),
                target: None,
                outcome: Outcome::Resolved,
                reason,
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
            let reason =
                format!("no target of the rule matches the alert's labels {}", alert.describe_labels());
            let outcome = Outcome::NoMatchingTarget;
            found.push(Match::Skip { rule: Some(rule.name.clone()), target: None, outcome, reason });
        }
        found.extend(targets.into_iter().map(|target| matching.on_target(rule_index, target, &mut hold)));
    }
    if found.is_empty() {
        let reason = format!("no rule's alert_labels match {}", alert.describe_labels());
        found.push(Match::Skip { rule: None, target: None, outcome: Outcome::NoMatchingRule, reason });
    }
    found
}

/// One alert being matched, and what its jobs share.
struct Matching<'a> {
    config: &'a Arc<Config>,
    alert: &'a Alert<'a>,
    now: DateTime<Utc>,
    /// A firing alert is a spike; a resolved one, a baseline.
    role: CaptureRole,
    fingerprint: Cow<'a, str>,
    /// startsAt in nanoseconds, for the dedupe key.
    starts_at: i64,
    /// Made on its first job, and shared by the rest.
    shared: Option<PerAlert>,
}

impl<'a> Matching<'a> {
    fn new(config: &'a Arc<Config>, alert: &'a Alert<'a>, now: DateTime<Utc>) -> Matching<'a> {
        let resolved = alert.status().unwrap_or(AlertStatus::Firing) == AlertStatus::Resolved;
        Matching {
            config,
            alert,
            now,
            role: if resolved { CaptureRole::Baseline } else { CaptureRole::Spike },
            fingerprint: alert.fingerprint_ignoring(&config.gate.dedupe_ignore_labels),
            starts_at: alert.starts_at.and_then(|t| t.timestamp_nanos_opt()).unwrap_or_default(),
            shared: None,
        }
    }

    fn shared(&mut self) -> &PerAlert {
        let (alert, fingerprint) = (self.alert, &self.fingerprint);
        self.shared.get_or_insert_with(|| PerAlert::of(alert, fingerprint))
    }

    /// The alert for one rule on one target: a job, a gate refusal, or a refusal of the
    /// URL its labels render.
    fn on_target(&mut self, rule_index: usize, target: usize, hold: &mut impl GateCheck) -> Match {
        let config = self.config;
        let (rule, target_config) = (&config.rules[rule_index], &config.targets[target]);
        // A templated target is rendered first: its cooldown is kept per instance. A fixed
        // one's URLs were built once, and are taken only if the gate lets it.
        let endpoint = match &target_config.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => match target_config.endpoint_for(&self.shared().labels) {
                Ok(endpoint) => endpoint,
                Err(why) => {
                    let (rule, target) = (Some(rule.name.clone()), Some(target_config.name.clone()));
                    let reason = format!("refused before any request: {why}");
                    return Match::Skip { rule, target, outcome: Outcome::Refused, reason };
                }
            },
        };
        let cooldown = CooldownKey::new(&rule.name, self.role, endpoint.gate_target(&target_config.name));
        // An alert whose cgroup may be on another node is not this instance's to refuse:
        // its job asks where it is before it asks the gate.
        let ask_gate = endpoint.cgroup.is_none();
        // The key is written into a buffer kept per thread: a refused alert (most of a
        // storm) allocates none.
        let resolved = self.role == CaptureRole::Baseline;
        let held = DEDUPE_KEY.with_borrow_mut(|key| {
            key.rewrite(&self.fingerprint, self.starts_at, &rule.name, &target_config.name, resolved);
            let held = if ask_gate { hold(key, &cooldown) } else { Ok(None) };
            held.map(|pending| (key.clone(), pending))
        });
        let (dedupe, pending) = match held {
            Ok(held) => held,
            Err(refusal) => {
                return Match::Refused {
                    rule: rule.name.clone(),
                    target: target_config.name.clone(),
                    refusal,
                };
            }
        };
        let (now, role, alert) = (self.now, self.role, self.alert);
        let PerAlert { fingerprint, labels } = self.shared();
        Match::Job(Box::new(Job {
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
            role,
        }))
    }
}
