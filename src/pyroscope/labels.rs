//! What a pushed profile is called in Pyroscope: its profile type (`__name__` and the full
//! type id that queries use) and its labels, valid whatever the caller hands in.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use crate::model::ProfileKind;

/// The longest label value sent, in bytes (Pyroscope refuses over 2048 by default); longer
/// ones are cut at a character boundary. Links cut the same way, so they match.
pub const MAX_VALUE_BYTES: usize = 512;
/// The longest extra label name kept (Pyroscope refuses over 1024 by default).
const MAX_NAME_BYTES: usize = 128;
/// At most this many labels in all (Pyroscope refuses over 30 names per series by default,
/// and adds none of its own before it checks).
const MAX_LABELS: usize = 25;
/// Pyroscope's own fallback when a profile names no service.
const UNKNOWN_SERVICE: &str = "unknown_service";

/// A profile kind as Pyroscope names it. Only profile.proto kinds have one: traces and
/// goroutine text dumps are not profiles Pyroscope reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProfileType {
    Cpu,
    Heap,
    Allocs,
    Goroutine,
    Block,
    Mutex,
    Threadcreate,
    /// A CPU profile recorded with perf and written as profile.proto, shaped like Go's
    /// (`cpu/nanoseconds` samples, period `cpu/nanoseconds`).
    Perf,
    Fgprof,
}

impl ProfileType {
    /// The type of a kind alertprof fetches; `None` for traces and goroutine text.
    pub fn of(kind: ProfileKind) -> Option<ProfileType> {
        Some(match kind {
            ProfileKind::Cpu => ProfileType::Cpu,
            ProfileKind::Heap => ProfileType::Heap,
            ProfileKind::Allocs => ProfileType::Allocs,
            ProfileKind::Goroutine => ProfileType::Goroutine,
            ProfileKind::Block => ProfileType::Block,
            ProfileKind::Mutex => ProfileType::Mutex,
            ProfileKind::Threadcreate => ProfileType::Threadcreate,
            ProfileKind::Fgprof => ProfileType::Fgprof,
            ProfileKind::Perf => ProfileType::Perf,
            ProfileKind::Trace | ProfileKind::GoroutineText => return None,
        })
    }

    /// The `__name__` label: the names Grafana Alloy's `pyroscope.scrape` gives Go's
    /// pprof endpoints (`process_cpu`, `memory`, `goroutine`, `block`, `mutex`, `fgprof`),
    /// so alertprof's pushes sit beside scraped ones. Pyroscope has no name for
    /// threadcreate; it keeps the profile's own.
    pub fn name(self) -> &'static str {
        match self {
            ProfileType::Cpu | ProfileType::Perf => "process_cpu",
            ProfileType::Heap | ProfileType::Allocs => "memory",
            ProfileType::Goroutine => "goroutine",
            ProfileType::Block => "block",
            ProfileType::Mutex => "mutex",
            ProfileType::Threadcreate => "threadcreate",
            ProfileType::Fgprof => "fgprof",
        }
    }

    /// The profile type id queries select, `__name__:sample type:unit:period type:unit`:
    /// Pyroscope splits a profile into one series per sample type, and this is the one a
    /// person looks at first (the one `go tool pprof` shows by default).
    pub fn id(self) -> &'static str {
        match self {
            ProfileType::Cpu | ProfileType::Perf => "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
            ProfileType::Heap => "memory:inuse_space:bytes:space:bytes",
            ProfileType::Allocs => "memory:alloc_space:bytes:space:bytes",
            ProfileType::Goroutine => "goroutine:goroutine:count:goroutine:count",
            ProfileType::Block => "block:delay:nanoseconds:contentions:count",
            ProfileType::Mutex => "mutex:delay:nanoseconds:contentions:count",
            ProfileType::Threadcreate => "threadcreate:threadcreate:count:threadcreate:count",
            ProfileType::Fgprof => "fgprof:time:nanoseconds:wallclock:nanoseconds",
        }
    }
}

/// What a push is of: how it is labelled, and named in logs and in its sample id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushSource {
    /// A kept capture, labelled `alertprof_capture_id` with its id: a profile of its own,
    /// found by that label, and sent with `__delta__="false"` (whole, not one of a series
    /// whose cumulative counts Pyroscope would subtract from each other).
    Capture(String),
    /// One of the recorder's segments or snapshots, a target's continuous series: its name
    /// is for logs only (a label each would make each segment a series of its own), and
    /// Pyroscope takes the deltas of Go's cumulative counts (allocations) between
    /// snapshots, as it does for scraped ones.
    Recorded(String),
}

impl PushSource {
    /// The capture's id, or the segment's name.
    pub fn name(&self) -> &str {
        match self {
            PushSource::Capture(id) | PushSource::Recorded(id) => id,
        }
    }
}

/// A kept profile to push, in plain values: the queue keeps no capture type on disk, so the
/// capture metadata can change shape without touching pushes already queued.
#[derive(Debug, Clone)]
pub struct PushItem {
    pub source: PushSource,
    pub profile_type: ProfileType,
    /// The target's `service_name`, else its name.
    pub service_name: String,
    /// The alert that caused the capture; none for watch rules and recorder segments.
    pub alertname: Option<String>,
    /// The `alertprof_rule` label.
    pub rule: Option<String>,
    /// The target's `instance`.
    pub instance: Option<String>,
    /// Any more labels. Names are made valid (`[a-zA-Z_][a-zA-Z0-9_]*`); names that start
    /// with `__` (Pyroscope's) or repeat one already set are left out.
    pub labels: Vec<(String, String)>,
    /// The kept gzip'd profile.proto (or a hold of it). Enqueueing links (or copies) it into
    /// the queue, so retention, the recorder's pruning or an upload may delete it afterwards.
    pub file: PathBuf,
    /// When the capture's retention ends: a push not done by then is dropped. Pyroscope
    /// itself refuses profiles older than its `reject_older_than` (1 h by default) with a
    /// 400, so a push that waits longer ends as refused whatever this says.
    pub expires_at: DateTime<Utc>,
}

impl PushItem {
    /// The labels sent with the profile, in this order: `__name__`, for a capture
    /// `__delta__`, `service_name`, for a capture `alertprof_capture_id`, then those that are
    /// set of `alertname`, `alertprof_rule`, `instance`, then the extra ones.
    pub(crate) fn label_set(&self) -> Vec<(String, String)> {
        let mut set = LabelSet(Vec::with_capacity(8 + self.labels.len()));
        set.add("__name__", self.profile_type.name());
        let capture_id = match &self.source {
            PushSource::Capture(id) => Some(id),
            PushSource::Recorded(_) => None,
        };
        if capture_id.is_some() {
            // A capture is a whole profile, not one of a series to subtract from each
            // other: without this, Pyroscope takes Go's cumulative alloc_* values as a
            // first cumulative sample and keeps nothing of them.
            set.add("__delta__", "false");
        }
        let service = clip_value(&self.service_name);
        set.add("service_name", if service.is_empty() { UNKNOWN_SERVICE } else { service });
        if let Some(id) = capture_id {
            set.add("alertprof_capture_id", id);
        }
        let known =
            [("alertname", &self.alertname), ("alertprof_rule", &self.rule), ("instance", &self.instance)];
        for (name, value) in known {
            if let Some(value) = value {
                set.add(name, value);
            }
        }
        for (name, value) in &self.labels {
            if let Some(name) = label_name(name) {
                set.add(&name, value);
            }
        }
        set.0
    }
}

/// Labels as they are added: empty values and repeated names left out, values clipped,
/// no more than `MAX_LABELS`.
struct LabelSet(Vec<(String, String)>);

impl LabelSet {
    fn add(&mut self, name: &str, value: &str) {
        let value = clip_value(value);
        if value.is_empty() || self.0.len() >= MAX_LABELS || self.0.iter().any(|(n, _)| n == name) {
            return;
        }
        self.0.push((name.to_string(), value.to_string()));
    }
}

/// `value` cut to at most `MAX_VALUE_BYTES`, at a character boundary.
pub(crate) fn clip_value(value: &str) -> &str {
    if value.len() <= MAX_VALUE_BYTES {
        return value;
    }
    let mut end = MAX_VALUE_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// A valid Prometheus label name made of `name` (other characters become `_`, a leading
/// digit gets a `_` before it); `None` when nothing is left or it is Pyroscope's (`__`).
fn label_name(name: &str) -> Option<String> {
    let mut valid: String = name
        .chars()
        .take(MAX_NAME_BYTES)
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    if valid.starts_with(|c: char| c.is_ascii_digit()) {
        valid.insert(0, '_');
    }
    (!valid.is_empty() && !valid.starts_with("__")).then_some(valid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> PushItem {
        PushItem {
            source: PushSource::Capture("20260823T101500Z-api-cpu".into()),
            profile_type: ProfileType::Cpu,
            service_name: "checkout".into(),
            alertname: Some("HighCPU".into()),
            rule: Some("cpu-spike".into()),
            instance: None,
            labels: vec![],
            file: PathBuf::from("x.pb.gz"),
            expires_at: Utc::now(),
        }
    }

    fn pairs(labels: &[(&str, &str)]) -> Vec<(String, String)> {
        labels.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    /// The labels of a capture: Pyroscope's name and delta flag first, the service, the
    /// capture id, then what is set; an unset instance is left out.
    #[test]
    fn labels_of_a_capture() {
        assert_eq!(
            item().label_set(),
            pairs(&[
                ("__name__", "process_cpu"),
                ("__delta__", "false"),
                ("service_name", "checkout"),
                ("alertprof_capture_id", "20260823T101500Z-api-cpu"),
                ("alertname", "HighCPU"),
                ("alertprof_rule", "cpu-spike"),
            ])
        );
    }

    /// A recorder segment is one of its target's series: no capture id, and no
    /// `__delta__`, so Pyroscope takes the deltas of cumulative counts between snapshots.
    #[test]
    fn labels_of_a_segment() {
        let segment = PushItem {
            source: PushSource::Recorded("recorder-api-heap-1787480100000".into()),
            profile_type: ProfileType::Heap,
            alertname: None,
            rule: None,
            instance: Some("10.0.0.7:6060".into()),
            ..item()
        };
        assert_eq!(
            segment.label_set(),
            pairs(&[("__name__", "memory"), ("service_name", "checkout"), ("instance", "10.0.0.7:6060")])
        );
        assert_eq!(segment.source.name(), "recorder-api-heap-1787480100000");
    }

    /// Extra labels get valid names; Pyroscope's own names, repeats, empty values and
    /// names with nothing left are left out; long values are cut on a character boundary;
    /// a blank service is Pyroscope's `unknown_service`.
    #[test]
    fn labels_are_made_valid() {
        let long = "é".repeat(400);
        let item = PushItem {
            service_name: String::new(),
            alertname: None,
            rule: None,
            instance: Some("10.0.0.7:6060".into()),
            labels: pairs(&[
                ("k8s.pod-name", "api-7f9"),
                ("2xx", "yes"),
                ("__name__", "evil"),
                ("service_name", "other"),
                ("empty", ""),
                ("", "nameless"),
                ("long", &long),
            ]),
            ..item()
        };
        let labels = item.label_set();
        assert_eq!(
            &labels[2..],
            pairs(&[
                ("service_name", "unknown_service"),
                ("alertprof_capture_id", "20260823T101500Z-api-cpu"),
                ("instance", "10.0.0.7:6060"),
                ("k8s_pod_name", "api-7f9"),
                ("_2xx", "yes"),
                ("long", &"é".repeat(256)),
            ])
            .as_slice()
        );
        assert_eq!(labels.last().unwrap().1.len(), MAX_VALUE_BYTES);
    }

    /// However many extra labels come, no more than Pyroscope's bound leave, and the
    /// ones alertprof sets are all there.
    #[test]
    fn labels_are_bounded() {
        let many: Vec<(String, String)> = (0..100).map(|i| (format!("l{i}"), "v".to_string())).collect();
        let labels = PushItem { labels: many, ..item() }.label_set();
        assert_eq!(labels.len(), MAX_LABELS);
        assert_eq!(labels[3].0, "alertprof_capture_id");
        assert_eq!(labels.last().unwrap().0, "l18");
    }

    /// Every pprof kind has a type whose id starts with its `__name__`; traces and
    /// goroutine dumps have none.
    #[test]
    fn types_of_kinds() {
        for kind in ProfileKind::ALL {
            match ProfileType::of(kind) {
                Some(ty) => {
                    assert!(kind.is_pprof(), "{kind}");
                    assert!(ty.id().starts_with(&format!("{}:", ty.name())), "{}", ty.id());
                    assert_eq!(ty.id().split(':').count(), 5, "{}", ty.id());
                }
                None => assert!(!kind.is_pprof(), "{kind}"),
            }
        }
        assert_eq!(
            ProfileType::of(ProfileKind::Allocs).unwrap().id(),
            "memory:alloc_space:bytes:space:bytes"
        );
        assert_eq!(ProfileType::Perf.name(), "process_cpu");
    }
}
