//! `rules:`: which alerts (or local watches) lead to which profiles of which targets,
//! re-verified on which signals, with what cooldown and baselines.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::Value;

use super::targets::Declared;
use super::values::read_name;
use super::walk::{Object, Walker, field, index, optional};
use crate::model::name::is_label_name;
use crate::model::{Name, ProfileKind, Signal, SignalCheck, Threshold};

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: Name,
    /// Alerts this rule handles; `None` for watch-only rules.
    pub alert_labels: Option<BTreeMap<String, String>>,
    /// Indices into `Config::targets`.
    pub targets: Vec<usize>,
    pub watch: Option<Duration>,
    pub verify: Vec<SignalCheck>,
    pub capture: Vec<ProfileKind>,
    pub seconds: u32,
    pub cooldown: Duration,
    /// When to capture baselines, the normal-times profiles spikes are compared with.
    pub baseline: Baseline,
    /// How far before the trigger's start its captures reach, through the targets'
    /// recorders.
    pub lookback: Option<Duration>,
}

/// The rule name of the captures kept when a recorded process ends; no rule may have it.
pub const EXIT_RULE: &str = "exit";

/// `baseline:` of a rule. A baseline captures the rule's kinds while the rule's signals
/// are quiet; spikes captured later name what grew against it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Baseline {
    /// When the rule's alert resolves.
    pub on_resolved: bool,
    /// Periodically, when the rule's signals are quiet and it is out of cooldown.
    pub every: Option<Duration>,
}

impl Baseline {
    /// Shortest `every`: a baseline is a full capture, not a sample.
    pub const MIN_EVERY: Duration = Duration::from_secs(60);
}

pub(super) fn read_rules(
    w: &mut Walker,
    entry: Option<(String, &Value)>,
    targets: &[Declared],
) -> Option<Vec<Rule>> {
    let Some((path, value)) = entry else {
        return Some(Vec::new());
    };
    let items = w.list(&path, value)?;
    let mut seen = HashSet::new();
    let rules: Vec<Option<Rule>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| read_rule(w, &index(&path, i), item, &mut seen, targets))
        .collect();
    rules.into_iter().collect()
}

/// The keys of a rule.
const RULE_KEYS: &[&str] = &[
    "name",
    "alert_labels",
    "targets",
    "watch",
    "verify",
    "capture",
    "seconds",
    "cooldown",
    "baseline",
    "on_resolved",
    "lookback",
];

fn read_rule(
    w: &mut Walker,
    path: &str,
    value: &Value,
    seen: &mut HashSet<String>,
    targets: &[Declared],
) -> Option<Rule> {
    let object = w.object(path, value, RULE_KEYS)?;
    let name = read_name(w, &object, seen, "rule");
    if name.as_deref() == Some(EXIT_RULE) {
        w.report(
            &field(path, "name"),
            "\"exit\" names the captures of a process's last profiles; give the rule another name",
        );
    }
    let alert_labels = optional(w, &object, "alert_labels", None, |w, p, v| w.labels(p, v).map(Some));
    let rule_targets = optional(w, &object, "targets", (0..targets.len()).collect(), |w, p, v| {
        read_rule_targets(w, p, v, targets)
    });
    let watch = optional(w, &object, "watch", None, read_watch);
    let verify = optional(w, &object, "verify", Vec::new(), read_verify);
    let capture = match object.get("capture") {
        Some((p, v)) => read_kinds(w, &p, v),
        None => {
            w.report(path, "needs capture: a list of profile kinds");
            None
        }
    };
    let seconds = optional(w, &object, "seconds", 10, |w, p, v| w.integer(p, v, 1, 300).map(|n| n as u32));
    let cooldown = optional(w, &object, "cooldown", Duration::from_secs(300), Walker::duration);
    let baseline = optional(w, &object, "baseline", Baseline::default(), read_baseline);
    let lookback = optional(w, &object, "lookback", None, |w, p, v| w.positive_duration(p, v).map(Some));
    if object.get("on_resolved").is_some() {
        w.report(&field(path, "on_resolved"), "moved: write baseline: {on_resolved: true}");
    }
    // Watch rules and periodic baselines read one instance: templated targets have none.
    let watched = matches!(watch, Some(Some(_)));
    let periodic = matches!(&baseline, Some(Baseline { every: Some(_), .. }));
    let local = [(watched, "watch", "watch"), (periodic, "baseline", "baseline.every")];
    for (_, place, what) in local.into_iter().filter(|(on, ..)| *on) {
        let chosen = rule_targets.as_deref().unwrap_or_default();
        report_templated(w, &field(path, place), what, chosen, targets);
    }
    if let (Some(None), Some(None)) = (&alert_labels, &watch) {
        w.report(path, "needs alert_labels (to handle alerts) or watch (to evaluate locally), or both");
    }
    if let (Some(None), Some(Baseline { on_resolved: true, .. })) = (&alert_labels, &baseline) {
        w.report(
            &field(&field(path, "baseline"), "on_resolved"),
            "needs alert_labels: watch rules have no resolved alerts",
        );
    }
    if let (Some(Some(_)), Some(verify)) = (&watch, &verify)
        && verify.is_empty()
    {
        w.report(path, "a watch rule needs verify: the signals that trigger it");
    }
    Some(Rule {
        name: name?.into(),
        alert_labels: alert_labels?,
        targets: rule_targets?,
        watch: watch?,
        verify: verify?,
        capture: capture?,
        seconds: seconds?,
        cooldown: cooldown?,
        baseline: baseline?,
        lookback: lookback?,
    })
}

/// `targets:` of a rule: indices into the declared targets, each once.
fn read_rule_targets(w: &mut Walker, path: &str, value: &Value, targets: &[Declared]) -> Option<Vec<usize>> {
    let items = w.list(path, value)?;
    let mut chosen = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item_path = index(path, i);
        let name = w.string(&item_path, item)?;
        match targets.iter().position(|target| target.name == name) {
            Some(position) if !chosen.contains(&position) => chosen.push(position),
            Some(_) => w.report(&item_path, format!("target {name:?} is listed twice")),
            None => w.report(&item_path, format!("unknown target {name:?}")),
        }
    }
    Some(chosen)
}

/// `watch: {interval}`: how often the rule is evaluated locally.
fn read_watch(w: &mut Walker, path: &str, value: &Value) -> Option<Option<Duration>> {
    let watch = w.object(path, value, &["interval"])?;
    match watch.get("interval") {
        Some((p, v)) => w.positive_duration(&p, v).map(Some),
        None => {
            w.report(path, "needs interval");
            None
        }
    }
}

/// Reports at `path` each of the `chosen` targets templated from alert labels (a URL or
/// the cgroup), which `what` (a watch, a periodic baseline) cannot read: it reads one
/// instance, and they have none.
fn report_templated(w: &mut Walker, path: &str, what: &str, chosen: &[usize], targets: &[Declared]) {
    for &t in chosen {
        if targets[t].templated {
            w.report(
                path,
                format!(
                    "target {:?} is templated from alert labels; {what} needs a fixed target",
                    targets[t].name
                ),
            );
        }
    }
}

fn read_baseline(w: &mut Walker, path: &str, value: &Value) -> Option<Baseline> {
    let object = w.object(path, value, &["on_resolved", "every"])?;
    let on_resolved = optional(w, &object, "on_resolved", false, Walker::boolean);
    let every = optional(w, &object, "every", None, |w, p, v| {
        let every = w.positive_duration(p, v)?;
        if every < Baseline::MIN_EVERY {
            w.report(p, "must be at least 1m: a baseline is a full capture");
            return None;
        }
        Some(Some(every))
    });
    let baseline = Baseline { on_resolved: on_resolved?, every: every? };
    if !baseline.on_resolved && baseline.every.is_none() {
        w.report(path, "needs on_resolved: true or every, or both");
        return None;
    }
    Some(baseline)
}

fn read_kinds(w: &mut Walker, path: &str, value: &Value) -> Option<Vec<ProfileKind>> {
    let items = w.list(path, value)?;
    if items.is_empty() {
        w.report(path, "must list at least one profile kind");
        return None;
    }
    let mut kinds = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let item_path = index(path, i);
        let Some(name) = w.string(&item_path, item) else {
            ok = false;
            continue;
        };
        match name.parse::<ProfileKind>() {
            Ok(kind) if kinds.contains(&kind) => {
                w.report(&item_path, format!("kind {name:?} is listed twice"));
                ok = false;
            }
            Ok(kind) => kinds.push(kind),
            Err(unknown) => {
                w.report(&item_path, unknown.to_string());
                ok = false;
            }
        }
    }
    ok.then_some(kinds)
}

fn read_verify(w: &mut Walker, path: &str, value: &Value) -> Option<Vec<SignalCheck>> {
    let mut known: Vec<&str> = Signal::BUILTIN.iter().map(Signal::name).collect();
    known.push("metric");
    let object = w.object(path, value, &known)?;
    let mut checks = Vec::new();
    let mut ok = true;
    for key in known {
        let Some((p, v)) = object.get(key) else {
            continue;
        };
        let check = match Signal::builtin(key) {
            None => read_metric_check(w, &p, v),
            Some(signal) => w
                .object(&p, v, &["min", "abs", "diff", "zscore", "max"])
                .and_then(|fields| read_threshold(w, &fields))
                .map(|threshold| SignalCheck { signal, threshold }),
        };
        match check {
            Some(check) => checks.push(check),
            None => ok = false,
        }
    }
    if ok && checks.is_empty() {
        w.report(path, "lists no signals; omit verify to capture on the alert alone");
        return None;
    }
    ok.then_some(checks)
}

fn read_metric_check(w: &mut Walker, path: &str, value: &Value) -> Option<SignalCheck> {
    let object = w.object(path, value, &["name", "labels", "min", "abs", "diff", "zscore", "max"])?;
    let name = match object.get("name") {
        Some((p, v)) => w.string(&p, v).and_then(|name| {
            let valid = is_label_name(&name.replace(':', "_"));
            if valid {
                Some(name.to_string())
            } else {
                w.report(&p, format!("{name:?} is not a metric name"));
                None
            }
        }),
        None => {
            w.report(path, "needs name: the metric to read from the target's /metrics");
            None
        }
    };
    let labels = optional(w, &object, "labels", BTreeMap::new(), Walker::labels);
    let threshold = read_threshold(w, &object);
    Some(SignalCheck { signal: Signal::Metric { name: name?, labels: labels? }, threshold: threshold? })
}

fn read_threshold(w: &mut Walker, object: &Object<'_>) -> Option<Threshold> {
    let mut read = |key: &str| optional(w, object, key, None, |w, p, v| w.number(p, v).map(Some));
    let threshold = Threshold {
        min: read("min")?,
        abs: read("abs")?,
        diff: read("diff")?,
        zscore: read("zscore")?,
        max: read("max")?,
    };
    if [threshold.abs, threshold.diff, threshold.min, threshold.zscore].iter().all(Option::is_none) {
        w.report(&object.path, "needs at least one of min, abs, diff, zscore");
        return None;
    }
    if let Some(z) = threshold.zscore
        && z <= 0.0
    {
        w.report(&field(&object.path, "zscore"), "must be above 0: standard deviations above the mean");
        return None;
    }
    if let Some(diff) = threshold.diff
        && diff < 0.0
    {
        w.report(&field(&object.path, "diff"), "must not be negative");
        return None;
    }
    if let (Some(low), Some(max)) = (threshold.min.or(threshold.abs), threshold.max)
        && max <= low
    {
        w.report(
            &field(&object.path, "max"),
            format!("{max} must be above min/abs {low}, or nothing triggers"),
        );
        return None;
    }
    Some(threshold)
}
