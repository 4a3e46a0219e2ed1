//! `targets[].recorder:` what a target's recorder keeps of its recent past, and `rules[].lookback:`
//! how far a rule's captures reach back into it.

use std::time::Duration;

use serde_json::Value;

use super::units::format_duration;
use super::walk::{Walker, field, optional};
use crate::model::ProfileKind;

/// A target's recorder: back-to-back CPU segments and periodic heap and goroutine
/// snapshots from its pprof endpoint, and back-to-back perf segments of its process,
/// kept for `keep` within `max_bytes`.
#[derive(Debug, Clone, PartialEq)]
pub struct RecorderConfig {
    /// Each CPU segment's period, whole seconds; `None`: CPU is not recorded.
    pub cpu: Option<Duration>,
    pub heap: Option<Duration>,
    pub goroutine: Option<Duration>,
    /// Each perf segment's period, whole seconds, sampled back to back; `None`: not
    /// recorded (the default).
    pub perf: Option<Duration>,
    /// How often a recorded perf segment samples: low, since it samples all the time.
    pub perf_frequency: u32,
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
            perf: None,
            perf_frequency: 19,
            keep: Duration::from_secs(300),
            max_bytes: 64 << 20,
            cpu_duty: 1.0,
        }
    }
}

impl RecorderConfig {
    /// The kinds a recorder can keep.
    pub const KINDS: [ProfileKind; 4] =
        [ProfileKind::Cpu, ProfileKind::Heap, ProfileKind::Goroutine, ProfileKind::Perf];

    /// How often `kind` is recorded; `None` if it is not.
    pub fn interval(&self, kind: ProfileKind) -> Option<Duration> {
        match kind {
            ProfileKind::Cpu => self.cpu,
            ProfileKind::Heap => self.heap,
            ProfileKind::Goroutine => self.goroutine,
            ProfileKind::Perf => self.perf,
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

/// The most a recorded perf segment samples a second.
const MAX_RECORDED_PERF_HZ: u64 = 100;

/// A target's recorder; for a target without a pprof endpoint (`has_pprof` false), cpu,
/// heap and goroutine are off unless named, and naming them is a mistake.
pub(super) fn read_recorder(
    w: &mut Walker,
    path: &str,
    value: &Value,
    has_pprof: bool,
) -> Option<RecorderConfig> {
    let keys = ["cpu", "heap", "goroutine", "perf", "perf_frequency", "keep", "max_bytes", "cpu_duty"];
    let object = w.object(path, value, &keys)?;
    let mut default = RecorderConfig::default();
    if !has_pprof {
        (default.cpu, default.heap, default.goroutine) = (None, None, None);
        for key in ["cpu", "heap", "goroutine"].into_iter().filter(|key| object.has(key)) {
            w.report(
                &field(path, key),
                "needs the target's pprof_url; a target without one records perf only",
            );
        }
    }
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
    let perf = every(w, "perf", default.perf);
    let perf_frequency = optional(w, &object, "perf_frequency", default.perf_frequency as u64, |w, p, v| {
        w.integer(p, v, 1, MAX_RECORDED_PERF_HZ)
    });
    let keep = optional(w, &object, "keep", default.keep, Walker::positive_duration);
    let max_bytes = optional(w, &object, "max_bytes", default.max_bytes, Walker::size);
    let cpu_duty = optional(w, &object, "cpu_duty", default.cpu_duty, Walker::number);
    let recorder = RecorderConfig {
        cpu: cpu?,
        heap: heap?,
        goroutine: goroutine?,
        perf: perf?,
        perf_frequency: perf_frequency? as u32,
        keep: keep?,
        max_bytes: max_bytes?,
        cpu_duty: cpu_duty?,
    };
    check_recorder(w, path, &recorder).then_some(recorder)
}

/// Checks a recorder's values against each other and their bounds, reporting each
/// mistake at its key; whether there was none.
fn check_recorder(w: &mut Walker, path: &str, recorder: &RecorderConfig) -> bool {
    let mut ok = true;
    let mut report = |w: &mut Walker, key: &str, message: String| {
        w.report(&if key.is_empty() { path.to_string() } else { field(path, key) }, message);
        ok = false;
    };
    for (key, period) in [("cpu", recorder.cpu), ("perf", recorder.perf)] {
        if let Some(period) = period
            && (period.subsec_nanos() != 0 || period < CPU_PERIOD.0 || period > CPU_PERIOD.1)
        {
            report(w, key, format!("{} must be whole seconds from 1s to 1m", format_duration(period)));
        }
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
        report(
            w,
            "",
            "records nothing: cpu, heap, goroutine and perf are all off; omit recorder".to_string(),
        );
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
    ok
}
