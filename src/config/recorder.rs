//! `targets[].recorder:` what a target's recorder keeps of its recent past, and `rules[].lookback:`
//! how far a rule's captures reach back into it.

use std::time::Duration;

use serde_json::Value;

use super::rules::Rule;
use super::targets::Target;
use super::walk::{Walker, field, index};
use super::{format_duration, optional};
use crate::model::ProfileKind;

/// A target's recorder: back-to-back CPU segments and periodic heap and goroutine
/// snapshots, kept for `keep` within `max_bytes`.
#[derive(Debug, Clone, PartialEq)]
pub struct RecorderConfig {
    /// Each CPU segment's period, whole seconds; `None`: CPU is not recorded.
    pub cpu: Option<Duration>,
    pub heap: Option<Duration>,
    pub goroutine: Option<Duration>,
    /// How far back the recorder reaches.
    pub keep: Duration,
    /// The most its segments of this target take on disk.
    pub max_bytes: u64,
    /// The share of each CPU period the profiler is held, leaving the rest to others.
    pub cpu_duty: f64,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            cpu: Some(Duration::from_secs(10)),
            heap: Some(Duration::from_secs(15)),
            goroutine: Some(Duration::from_secs(15)),
            keep: Duration::from_secs(300),
            max_bytes: 64 << 20,
            cpu_duty: 1.0,
        }
    }
}

impl RecorderConfig {
    /// The kinds a recorder can keep.
    pub const KINDS: [ProfileKind; 3] = [ProfileKind::Cpu, ProfileKind::Heap, ProfileKind::Goroutine];

    /// How often `kind` is recorded; `None` if it is not.
    pub fn interval(&self, kind: ProfileKind) -> Option<Duration> {
        match kind {
            ProfileKind::Cpu => self.cpu,
            ProfileKind::Heap => self.heap,
            ProfileKind::Goroutine => self.goroutine,
            _ => None,
        }
    }

    pub fn records(&self, kind: ProfileKind) -> bool {
        self.interval(kind).is_some()
    }

    /// The kinds recorded.
    pub fn kinds(&self) -> Vec<ProfileKind> {
        Self::KINDS.into_iter().filter(|&kind| self.records(kind)).collect()
    }

    /// How long each CPU segment holds the profiler: the period times the duty, in whole
    /// seconds (Go takes `?seconds=N`), at least one.
    pub fn cpu_seconds(&self) -> u32 {
        let period = self.cpu.unwrap_or_default().as_secs_f64();
        ((period * self.cpu_duty).floor() as u32).max(1)
    }

    /// What it records, as `cpu 10s, heap 15s, goroutine 15s; keeps 5m, 64MiB`.
    pub fn describe(&self) -> String {
        let kinds: Vec<String> = Self::KINDS
            .into_iter()
            .filter_map(|kind| self.interval(kind).map(|every| format!("{kind} {}", format_duration(every))))
            .collect();
        let duty = if self.cpu.is_some() && self.cpu_duty < 1.0 {
            format!(" (profiler held {}s of each)", self.cpu_seconds())
        } else {
            String::new()
        };
        format!(
            "{}{duty}; keeps {}, {} MiB",
            kinds.join(", "),
            format_duration(self.keep),
            self.max_bytes >> 20
        )
    }
}

/// The shortest CPU segment, and the longest (Go's profile handler allows more, but a
/// segment is what the recorder loses when a process dies mid-way).
const CPU_PERIOD: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));
/// The shortest and longest interval of a snapshot kind: a goroutine profile stops the
/// world and a heap profile walks every sampled allocation, so the target is asked at most
/// once a second; and an hour apart is as rare as a snapshot is still of use.
const SNAPSHOT_EVERY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));
const MIN_MAX_BYTES: u64 = 1 << 20;
const MAX_KEEP: Duration = Duration::from_secs(24 * 3600);

pub(super) fn read_recorder(w: &mut Walker, path: &str, value: &Value) -> Option<RecorderConfig> {
    let object = w.object(path, value, &["cpu", "heap", "goroutine", "keep", "max_bytes", "cpu_duty"])?;
    let default = RecorderConfig::default();
    let every = |w: &mut Walker, key: &str, default: Option<Duration>| {
        optional(w, &object, key, default, |w, p, v| {
            // `off` is `false` to YAML 1.1.
            if v.as_str() == Some("off") || v.as_bool() == Some(false) {
                return Some(None);
            }
            w.positive_duration(p, v).map(Some)
        })
    };
    let cpu = every(w, "cpu", default.cpu);
    let heap = every(w, "heap", default.heap);
    let goroutine = every(w, "goroutine", default.goroutine);
    let keep = optional(w, &object, "keep", default.keep, Walker::positive_duration);
    let max_bytes = optional(w, &object, "max_bytes", default.max_bytes, Walker::size);
    let cpu_duty = optional(w, &object, "cpu_duty", default.cpu_duty, Walker::number);
    let recorder = RecorderConfig {
        cpu: cpu?,
        heap: heap?,
        goroutine: goroutine?,
        keep: keep?,
        max_bytes: max_bytes?,
        cpu_duty: cpu_duty?,
    };
    let mut ok = true;
    let mut report = |w: &mut Walker, key: &str, message: String| {
        w.report(&if key.is_empty() { path.to_string() } else { field(path, key) }, message);
        ok = false;
    };
    if let Some(cpu) = recorder.cpu
        && (cpu.subsec_nanos() != 0 || cpu < CPU_PERIOD.0 || cpu > CPU_PERIOD.1)
    {
        report(w, "cpu", format!("{} must be whole seconds from 1s to 1m", format_duration(cpu)));
    }
    for (key, every) in [("heap", recorder.heap), ("goroutine", recorder.goroutine)] {
        if let Some(every) = every
            && (every < SNAPSHOT_EVERY.0 || every > SNAPSHOT_EVERY.1)
        {
            report(w, key, format!("{} must be from 1s to 1h", format_duration(every)));
        }
    }
    if !(recorder.cpu_duty > 0.0 && recorder.cpu_duty <= 1.0) {
        report(w, "cpu_duty", format!("{} must be above 0 and at most 1", recorder.cpu_duty));
    } else if let Some(cpu) = recorder.cpu
        && cpu.as_secs_f64() * recorder.cpu_duty < 1.0
    {
        report(w, "cpu_duty", format!("holds the profiler less than 1s of each {}", format_duration(cpu)));
    }
    if recorder.kinds().is_empty() {
        report(w, "", "records nothing: cpu, heap and goroutine are all off; omit recorder".to_string());
    }
    if recorder.keep > MAX_KEEP {
        report(
            w,
            "keep",
            format!("{} is more than a recorder keeps (at most 24h)", format_duration(recorder.keep)),
        );
    }
    for kind in RecorderConfig::KINDS {
        if let Some(every) = recorder.interval(kind)
            && recorder.keep < every * 2
        {
            report(
                w,
                "keep",
                format!(
                    "{} keeps less than two of {kind}'s {} periods",
                    format_duration(recorder.keep),
                    format_duration(every)
                ),
            );
            break;
        }
    }
    if recorder.max_bytes < MIN_MAX_BYTES {
        report(
            w,
            "max_bytes",
            format!("{} bytes is too little to keep a profile; at least 1MiB", recorder.max_bytes),
        );
    }
    ok.then_some(recorder)
}

/// A rule's `lookback` reaches back through its targets' recorders only: each target needs
/// one that records a kind the rule captures and keeps as far back as the rule reaches.
pub(super) fn check_lookback(w: &mut Walker, targets: &[Target], rules: &[Rule]) {
    for (i, rule) in rules.iter().enumerate() {
        let Some(lookback) = rule.lookback else { continue };
        let path = field(&index("rules", i), "lookback");
        for &t in &rule.targets {
            let target = &targets[t];
            let Some(recorder) = &target.recorder else {
                w.report(
                    &path,
                    format!(
                        "target {:?} has no recorder to reach back into (targets[].recorder)",
                        target.name
                    ),
                );
                continue;
            };
            if !rule.capture.iter().any(|&kind| recorder.records(kind)) {
                let recorded: Vec<&str> = recorder.kinds().iter().map(|k| k.name()).collect();
                w.report(
                    &path,
                    format!(
                        "target {:?} records {}, none of the kinds the rule captures",
                        target.name,
                        recorded.join(", ")
                    ),
                );
            } else if lookback > recorder.keep {
                w.report(
                    &path,
                    format!(
                        "{} reaches further back than target {:?}'s recorder keeps ({})",
                        format_duration(lookback),
                        target.name,
                        format_duration(recorder.keep)
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ParseError};

    fn problems(yaml: &str) -> Vec<String> {
        match Config::parse(yaml, std::path::Path::new("/nonexistent")) {
            Err(ParseError::Invalid(problems)) => problems.iter().map(ToString::to_string).collect(),
            other => panic!("{other:?}"),
        }
    }

    /// Every key is optional (`{}` records everything at the defaults); `off` (YAML's
    /// `false`) leaves a kind out; a rule reaches back through a target's recorder.
    #[test]
    fn defaults_and_off() {
        let yaml = "targets:\n\
                    - {name: a, pprof_url: \"http://127.0.0.1:1\", recorder: {}}\n\
                    - {name: b, pprof_url: \"http://127.0.0.1:2\", recorder: {cpu: off, goroutine: false, cpu_duty: 0.5}}\n\
                    rules:\n\
                    - {name: r, watch: {interval: 1s}, verify: {cpu_percent: {zscore: 3}}, capture: [heap], lookback: 2m}\n";
        let config = Config::parse(yaml, std::path::Path::new("/nonexistent")).unwrap();
        let a = config.targets[0].recorder.as_ref().unwrap();
        assert_eq!(a, &super::RecorderConfig::default());
        assert_eq!(a.describe(), "cpu 10s, heap 15s, goroutine 15s; keeps 5m, 64 MiB");
        let b = config.targets[1].recorder.as_ref().unwrap();
        assert_eq!(b.kinds(), [crate::model::ProfileKind::Heap]);
        assert_eq!(config.rules[0].lookback, Some(std::time::Duration::from_secs(120)));
        assert_eq!(config.rules[0].verify[0].threshold.zscore, Some(3.0));
    }

    /// Each mistake is named at its place.
    #[test]
    fn mistakes_are_named() {
        let yaml = "targets:\n\
                    - {name: a, pprof_url: \"http://127.0.0.1:1\", recorder: {cpu: 1500ms, keep: 20s, max_bytes: 1000, cpu_duty: 2}}\n\
                    - {name: b, pprof_url: \"http://127.0.0.1:2\", recorder: {cpu: off, heap: off, goroutine: off}}\n\
                    - {name: f, pprof_url: \"http://127.0.0.1:6\", recorder: {heap: 1ms, goroutine: 2h, keep: 24h}}\n\
                    - {name: c, pprof_url: \"http://{{ labels.instance }}\", allowed_targets: [\"10.0.0.0/8:6060\"], recorder: {}}\n\
                    - {name: d, pprof_url: \"http://127.0.0.1:4\"}\n\
                    - {name: e, pprof_url: \"http://127.0.0.1:5\", recorder: {heap: 10s, cpu: off, goroutine: off, keep: 1m}}\n\
                    rules:\n\
                    - {name: exit, alert_labels: {a: b}, capture: [cpu]}\n\
                    - {name: r1, alert_labels: {a: b}, capture: [cpu], targets: [d], lookback: 1m}\n\
                    - {name: r2, alert_labels: {a: b}, capture: [cpu], targets: [e], lookback: 1m}\n\
                    - {name: r3, alert_labels: {a: b}, capture: [heap], targets: [e], lookback: 2m}\n\
                    - {name: r4, alert_labels: {a: b}, capture: [heap], verify: {goroutines: {zscore: 0}}}\n";
        let expected = [
            "targets[0].recorder.cpu: 1s500ms must be whole seconds from 1s to 1m",
            "targets[0].recorder.cpu_duty: 2 must be above 0 and at most 1",
            "targets[0].recorder.keep: 20s keeps less than two of heap's 15s periods",
            "targets[0].recorder.max_bytes: 1000 bytes is too little",
            "targets[1].recorder: records nothing",
            "targets[2].recorder.heap: 1ms must be from 1s to 1h",
            "targets[2].recorder.goroutine: 2h must be from 1s to 1h",
            "targets[3].recorder: a templated target has no one instance to record",
            "rules[0].name: \"exit\" names the captures of a process's last profiles",
            "rules[4].verify.goroutines.zscore: must be above 0",
        ];
        let found = problems(yaml);
        for wanted in expected {
            assert!(found.iter().any(|p| p.starts_with(wanted)), "{wanted:?} not in {found:#?}");
        }
        // Rules are checked against targets once both are valid.
        let yaml = yaml
            .lines()
            .filter(|l| !["name: a,", "name: b,", "name: c,", "name: f,"].iter().any(|name| l.contains(name)))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("{name: exit,", "{name: x,")
            .replace("zscore: 0", "zscore: 1");
        let found = problems(&yaml);
        let expected = [
            "rules[1].lookback: target \"d\" has no recorder to reach back into",
            "rules[2].lookback: target \"e\" records heap, none of the kinds the rule captures",
            "rules[3].lookback: 2m reaches further back than target \"e\"'s recorder keeps (1m)",
        ];
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for (problem, wanted) in found.iter().zip(expected) {
            assert!(problem.starts_with(wanted), "{problem:?} should start with {wanted:?}");
        }
    }
}
