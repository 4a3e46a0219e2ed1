//! Re-checks a rule's signals against the target's latest local readings before anything
//! touches the target (an alert is late by the time it arrives), and keeps the readings
//! and their history that the sampler takes.

pub mod cgroup;
pub mod procfs;
pub mod reading;
pub mod sampler;
pub mod target_metrics;
pub mod trigger;

pub use reading::{NoReading, Sample, SampleError};
pub use sampler::Bases;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::{Readings, Series, SignalCheck, SignalKey};
use trigger::Judgement;

/// Whether a rule's condition holds now, with the readings it was judged on.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every signal triggers; `why` says how, one reason each.
    Holds {
        readings: Readings,
        why: Vec<String>,
    },
    NotVerified {
        reason: String,
        readings: Readings,
    },
}

/// A target's readings over time.
#[derive(Debug, Default)]
struct Signals {
    at: Option<DateTime<Utc>>,
    latest: Readings,
    /// Why each signal without a reading in the latest sample has none.
    missing: BTreeMap<SignalKey, NoReading>,
    /// Each signal's values, the newest last: the last `history + 1`, and all of those
    /// within `reach` when a rule reaches back that far.
    history: HashMap<SignalKey, VecDeque<(DateTime<Utc>, f64)>>,
    /// How far back a rule on the target verifies (its lookback).
    reach: chrono::TimeDelta,
    /// Readings for charts: at most `CHART_POINTS` of each signal, at least `CHART_STEP`
    /// apart, the newest last.
    chart: HashMap<SignalKey, VecDeque<(DateTime<Utc>, f64)>>,
    /// What 100% of each percent signal is, as the latest sample found.
    bases: Bases,
}

/// Points of each signal kept for charts, and the least time between two: about five
/// minutes at a watch rule's 1 s, eight at the default 5 s sampling.
const CHART_POINTS: usize = 100;
const CHART_STEP: chrono::TimeDelta = chrono::TimeDelta::seconds(3);
/// The most values of a signal kept for a lookback, whatever its reach.
const MAX_REACH_POINTS: usize = 3600;

/// Holds every target's readings for the verify stage, the API and `/metrics`.
pub struct Verifier {
    targets: Mutex<HashMap<String, Signals>>,
    /// Samples `diff` averages over.
    history: usize,
    /// Readings older than this do not verify anything.
    stale_after: Duration,
}

impl Verifier {
    pub fn new(history: usize, stale_after: Duration) -> Verifier {
        Verifier { targets: Mutex::new(HashMap::new()), history, stale_after }
    }

    /// Records a sample of `target` taken at `at`.
    pub fn record(&self, target: &str, at: DateTime<Utc>, sample: Sample) {
        let mut targets = self.targets.lock().unwrap();
        let signals = targets.entry(target.to_string()).or_default();
        signals.at = Some(at);
        signals.latest.clear();
        signals.missing.clear();
        for (key, value) in sample {
            match value {
                Ok(value) => {
                    let ring = signals.history.entry(key.clone()).or_default();
                    ring.push_back((at, value));
                    while ring.len() > self.history + 1
                        && (ring.len() > MAX_REACH_POINTS
                            || ring.front().is_some_and(|(t, _)| *t < at - signals.reach))
                    {
                        ring.pop_front();
                    }
                    let chart = signals.chart.entry(key.clone()).or_default();
                    if chart.back().is_none_or(|(last, _)| at - *last >= CHART_STEP) {
                        if chart.len() == CHART_POINTS {
                            chart.pop_front();
                        }
                        chart.push_back((at, value));
                    }
                    signals.latest.insert(key, value);
                }
                Err(why) => {
                    // A gap breaks the history: `diff` compares with consecutive samples.
                    signals.history.remove(&key);
                    signals.missing.insert(key, why);
                }
            }
        }
    }

    /// Keeps each of `target`'s readings for `reach` at least, for rules that verify back
    /// that far.
    pub fn set_reach(&self, target: &str, reach: Duration) {
        let mut targets = self.targets.lock().unwrap();
        targets.entry(target.to_string()).or_default().reach =
            chrono::TimeDelta::from_std(reach).unwrap_or(chrono::TimeDelta::MAX);
    }

    /// Forgets targets no longer configured.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.targets.lock().unwrap().retain(|name, _| keep(name));
    }

    /// A target's recent readings, for charts.
    pub fn series(&self, target: &str) -> Series {
        let targets = self.targets.lock().unwrap();
        let Some(signals) = targets.get(target) else { return Series::new() };
        let points = |ring: &VecDeque<(DateTime<Utc>, f64)>| {
            ring.iter().map(|(at, v)| (at.timestamp_millis(), *v)).collect()
        };
        signals.chart.iter().map(|(key, ring)| (key.clone(), points(ring))).collect()
    }

    /// What 100% of each of a target's percent signals is, as its latest sample found: said
    /// with each reason about them.
    pub fn record_bases(&self, target: &str, bases: &Bases) {
        let mut targets = self.targets.lock().unwrap();
        targets.entry(target.to_string()).or_default().bases.clone_from(bases);
    }

    /// The latest readings of a target.
    pub fn readings(&self, target: &str) -> Readings {
        self.targets.lock().unwrap().get(target).map(|s| s.latest.clone()).unwrap_or_default()
    }

    /// Judges `checks` on the target's latest readings and history, holmes-style. No
    /// checks: the alert alone is enough.
    pub fn verify(&self, target: &str, checks: &[SignalCheck], now: DateTime<Utc>) -> Verdict {
        let targets = self.targets.lock().unwrap();
        let Some(signals) = targets.get(target) else {
            let reason = if checks.is_empty() { None } else { Some(format!("no readings of {target} yet")) };
            return match reason {
                None => Verdict::Holds { readings: Readings::new(), why: Vec::new() },
                Some(reason) => Verdict::NotVerified { reason, readings: Readings::new() },
            };
        };
        let readings = signals.latest.clone();
        if checks.is_empty() {
            return Verdict::Holds { readings, why: Vec::new() };
        }
        let age = signals.at.and_then(|at| (now - at).to_std().ok()).unwrap_or_default();
        if age > self.stale_after {
            let reason = format!("readings of {target} are {}s old", age.as_secs());
            return Verdict::NotVerified { reason, readings };
        }
        judge(checks, self.history, readings, &signals.bases, |key| {
            let Some(ring) = signals.history.get(key).filter(|_| signals.latest.contains_key(key)) else {
                return Err(match signals.missing.get(key) {
                    Some(why) => Unread::NoReading { key: key.clone(), why: why.clone() },
                    None => Unread::NotSampled(key.clone()),
                });
            };
            let values: Vec<f64> = ring.iter().map(|(_, v)| *v).collect();
            let (last, rest) = values.split_last().expect("a reading is in the history");
            Ok((*last, rest.to_vec()))
        })
    }

    /// Like `verify`, but for a rule that reaches back to `since`: the condition holds if
    /// it holds now or held at any sample since then (all of its signals in one sample,
    /// each judged on the history before it). An alert is late; the burst it is about may
    /// be over when it arrives.
    pub fn verify_since(
        &self,
        target: &str,
        checks: &[SignalCheck],
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Verdict {
        let current = self.verify(target, checks, now);
        let Verdict::NotVerified { reason, readings } = current else { return current };
        let targets = self.targets.lock().unwrap();
        let Some(signals) = targets.get(target).filter(|_| !checks.is_empty()) else {
            return Verdict::NotVerified { reason, readings };
        };
        // The samples since `since`: those of the first signal (the others, judged at the
        // same times, are in the same samples).
        let times: Vec<DateTime<Utc>> = signals
            .history
            .get(&checks[0].signal.key())
            .map(|ring| ring.iter().map(|(t, _)| *t).filter(|t| *t >= since).collect())
            .unwrap_or_default();
        for &at in times.iter().rev() {
            let judged = judge(checks, self.history, Readings::new(), &signals.bases, |key| {
                let not_at = || Unread::NotAt { key: key.clone(), at };
                let ring = signals.history.get(key).ok_or_else(not_at)?;
                let index = ring.iter().position(|(t, _)| *t == at).ok_or_else(not_at)?;
                let previous = ring.iter().take(index).map(|(_, v)| *v).collect();
                Ok((ring[index].1, previous))
            });
            if let Verdict::Holds { why, .. } = judged {
                let when = at.format("%H:%M:%S");
                let why = why.into_iter().map(|why| format!("{why} at {when}")).collect();
                return Verdict::Holds { readings, why };
            }
        }
        let reason = format!("{reason}, nor at any reading since {}", since.format("%H:%M:%S"));
        Verdict::NotVerified { reason, readings }
    }

    /// Judges `checks` on a single sample taken just now, with no history (so `diff`
    /// cannot trigger): for targets that are not sampled, such as templated ones.
    pub fn judge_sample(&self, checks: &[SignalCheck], sample: Sample, bases: &Bases) -> Verdict {
        let readings: Readings =
            sample.iter().filter_map(|(k, v)| v.as_ref().ok().map(|v| (k.clone(), *v))).collect();
        judge(checks, self.history, readings, bases, |key| match sample.get(key) {
            Some(Ok(value)) => Ok((*value, Vec::new())),
            Some(Err(why)) => Err(Unread::NoReading { key: key.clone(), why: why.clone() }),
            None => Err(Unread::NotInSample(key.clone())),
        })
    }
}

/// Why a check cannot be judged: its signal has no reading to judge.
#[derive(Debug, thiserror::Error)]
enum Unread {
    /// The sample has none, and says why.
    #[error("no reading of {key}: {why}")]
    NoReading {
        key: SignalKey,
        #[source]
        why: NoReading,
    },
    /// The target's readings have none, and no reason for it: the signal is not sampled.
    #[error("no reading of {0}: not sampled")]
    NotSampled(SignalKey),
    /// A sample taken just now has none.
    #[error("no reading of {0}")]
    NotInSample(SignalKey),
    /// The history has none from the sample taken `at`.
    #[error("no reading of {key} at {}", .at.format("%H:%M:%S"))]
    NotAt { key: SignalKey, at: DateTime<Utc> },
}

/// Every check must trigger on its signal's current value and previous values, as
/// `reading` gives them (or says why there is none). A judged percent says what 100% is.
fn judge(
    checks: &[SignalCheck],
    history: usize,
    readings: Readings,
    bases: &Bases,
    reading: impl Fn(&SignalKey) -> Result<(f64, Vec<f64>), Unread>,
) -> Verdict {
    let mut why = Vec::new();
    for check in checks {
        let key = check.signal.key();
        let judged = match reading(&key) {
            Ok((current, previous)) => {
                let judged = trigger::evaluate(key.as_str(), &check.threshold, current, &previous, history);
                match bases.get(&key) {
                    Some(basis) => judged.map(|reason| format!("{reason} ({basis})")),
                    None => judged,
                }
            }
            Err(unread) => Judgement::Quiet(unread.to_string()),
        };
        match judged {
            Judgement::Triggers(reason) => why.push(reason),
            Judgement::Quiet(reason) => return Verdict::NotVerified { reason, readings },
        }
    }
    Verdict::Holds { readings, why }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Signal, Threshold};

    fn goroutines(abs: f64, diff: Option<f64>) -> Vec<SignalCheck> {
        vec![SignalCheck {
            signal: Signal::Goroutines,
            threshold: Threshold { abs: Some(abs), diff, ..Default::default() },
        }]
    }

    fn sample(value: f64) -> Sample {
        Sample::from([
            (Signal::Goroutines.key(), Ok(value)),
            (Signal::CpuPercent.key(), Err(NoReading::FirstSample)),
        ])
    }

    /// A percent's reason says what 100% was, as the latest sample found it, whether it
    /// triggers or not; a signal with no basis is said as it is.
    #[test]
    fn percents_say_what_100_is() {
        let verifier = Verifier::new(3, Duration::from_secs(10));
        let now = Utc::now();
        verifier.record("t", now, Sample::from([(Signal::CpuPercent.key(), Ok(45.0))]));
        verifier.record_bases("t", &Bases::from([(Signal::CpuPercent.key(), "of 2 CPUs".to_string())]));
        let cpu = |abs| {
            vec![SignalCheck {
                signal: Signal::CpuPercent,
                threshold: Threshold { abs: Some(abs), ..Default::default() },
            }]
        };
        match verifier.verify("t", &cpu(70.0), now) {
            Verdict::NotVerified { reason, .. } => {
                assert_eq!(reason, "cpu_percent 45.0 < abs 70 (of 2 CPUs)")
            }
            other => panic!("{other:?}"),
        }
        match verifier.verify("t", &cpu(40.0), now) {
            Verdict::Holds { why, .. } => assert_eq!(why, ["cpu_percent 45.0 >= abs 40 (of 2 CPUs)"]),
            other => panic!("{other:?}"),
        }
        verifier.record("u", now, sample(30.0));
        match verifier.verify("u", &goroutines(10.0, None), now) {
            Verdict::Holds { why, .. } => assert_eq!(why, ["goroutines 30 >= abs 10"]),
            other => panic!("{other:?}"),
        }
    }

    /// Verification uses the history ring, names missing readings, and refuses stale ones.
    #[test]
    fn verify_with_history() {
        let verifier = Verifier::new(3, Duration::from_secs(10));
        let now = Utc::now();
        assert!(matches!(
            verifier.verify("t", &goroutines(100.0, None), now),
            Verdict::NotVerified { reason, .. } if reason == "no readings of t yet"
        ));
        for value in [10.0, 10.0, 10.0] {
            verifier.record("t", now, sample(value));
        }
        // Two previous samples: diff is still warming up.
        verifier.record("t", now, sample(20.0));
        // Now three previous samples (10, 10, 20): avg 13.3, ×2 = 26.7.
        verifier.record("t", now, sample(30.0));
        match verifier.verify("t", &goroutines(1000.0, Some(100.0)), now) {
            Verdict::Holds { readings, why } => {
                assert_eq!(readings["goroutines"], 30.0);
                assert_eq!(why, ["goroutines 30 >= 2 × avg 13.333 = 26.667"]);
            }
            other => panic!("{other:?}"),
        }
        let cpu = vec![SignalCheck {
            signal: Signal::CpuPercent,
            threshold: Threshold { min: Some(1.0), ..Default::default() },
        }];
        assert_eq!(
            verifier.verify("t", &cpu, now),
            Verdict::NotVerified {
                reason: "no reading of cpu_percent: CPU use needs a second sample".into(),
                readings: Readings::from([(Signal::Goroutines.key(), 30.0)])
            }
        );
        let later = now + chrono::Duration::seconds(11);
        assert!(matches!(
            verifier.verify("t", &goroutines(1.0, None), later),
            Verdict::NotVerified { reason, .. } if reason == "readings of t are 11s old"
        ));
        assert!(matches!(verifier.verify("t", &[], later), Verdict::Holds { .. }));
    }

    /// A rule that reaches back verifies on any sample since the window's start: a burst
    /// that is over still counts, with its time in the reason; one before the window, or
    /// beyond what is kept, does not.
    #[test]
    fn verify_back_to_the_window() {
        let verifier = Verifier::new(2, Duration::from_secs(10));
        verifier.set_reach("t", Duration::from_secs(30));
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        for (s, value) in [(0, 10.0), (5, 10.0), (10, 900.0), (15, 10.0), (20, 10.0)] {
            verifier.record("t", at(s), sample(value));
        }
        let checks = goroutines(500.0, None);
        assert!(matches!(verifier.verify("t", &checks, at(21)), Verdict::NotVerified { .. }));
        match verifier.verify_since("t", &checks, at(8), at(21)) {
            Verdict::Holds { readings, why } => {
                assert_eq!(why, [format!("goroutines 900 >= abs 500 at {}", at(10).format("%H:%M:%S"))]);
                assert_eq!(readings["goroutines"], 10.0, "the readings are today's");
            }
            other => panic!("{other:?}"),
        }
        match verifier.verify_since("t", &checks, at(12), at(21)) {
            Verdict::NotVerified { reason, .. } => {
                assert!(
                    reason.ends_with(&format!("nor at any reading since {}", at(12).format("%H:%M:%S"))),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        // Past the reach (30 s, more than history's 3 samples), the burst is forgotten.
        for s in [25, 30, 35, 40, 45] {
            verifier.record("t", at(s), sample(10.0));
        }
        assert!(matches!(verifier.verify_since("t", &checks, at(0), at(46)), Verdict::NotVerified { .. }));
    }
}
