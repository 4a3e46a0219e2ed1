//! Checks across sections, made once each section is read: what a rule's kinds ask of its
//! targets (a pprof endpoint, a process), what its `lookback` asks of their recorders, and
//! what `pyroscope.recorder` asks of the targets.

use super::pyroscope::PyroscopeConfig;
use super::rules::Rule;
use super::targets::Target;
use super::units::format_duration;
use super::walk::{Walker, field, index};
use crate::model::ProfileKind;

/// Every kind but `perf` is fetched from the target's pprof endpoint; `perf` samples its
/// process, so it needs one to find.
pub(super) fn check_kinds(w: &mut Walker, targets: &[Target], rules: &[Rule]) {
    for (i, rule) in rules.iter().enumerate() {
        let path = field(&index("rules", i), "capture");
        for &t in &rule.targets {
            let target = &targets[t];
            let fetched: Vec<&str> =
                rule.capture.iter().filter(|kind| kind.needs_pprof_url()).map(|kind| kind.name()).collect();
            if target.pprof_url.is_none() && !fetched.is_empty() {
                let kinds = fetched.join(", ");
                let message = format!(
                    "target {:?} has no pprof_url, which {kinds} need; only perf profiles a process without one",
                    target.name
                );
                w.report(&path, message);
            }
            if rule.capture.contains(&ProfileKind::Perf) && target.process.is_none() {
                let message = format!(
                    "perf samples a process: target {:?} needs one (process: {{pid | listen_port | cgroup}})",
                    target.name
                );
                w.report(&path, message);
            }
        }
    }
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

/// `pyroscope.recorder: true` pushes the recorders' segments: some target must have one.
pub(super) fn check_pyroscope(w: &mut Walker, pyroscope: &PyroscopeConfig, targets: &[Target]) {
    if pyroscope.recorder && targets.iter().all(|target| target.recorder.is_none()) {
        w.report("pyroscope.recorder", "no target has a recorder (targets[].recorder) to push segments of");
    }
}
