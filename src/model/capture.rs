//! A capture's metadata: what was fetched, why, from where, and what came of it. Stored as
//! `<id>.json` next to the profile; the capture index is rebuilt from these at start. A
//! capture begins as a `PendingCapture` and becomes kept or failed through one constructor
//! each: its status, error, size, digest and file are never set by hand.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::id::{CaptureId, CaptureRole};
use super::kind::ProfileKind;
use super::signal::{Bases, Readings, Series};
use super::summary::{Diff, Summary};
use super::trigger::Trigger;

/// The role as the metadata has it: two flags, each written only when set.
#[derive(Default, Serialize, Deserialize)]
struct RoleFlags {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    baseline: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    before_window: bool,
}

impl Serialize for CaptureRole {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let flags = RoleFlags {
            baseline: *self == CaptureRole::Baseline,
            before_window: *self == CaptureRole::BeforeWindow,
        };
        flags.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for CaptureRole {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<CaptureRole, D::Error> {
        let flags = RoleFlags::deserialize(deserializer)?;
        Ok(match (flags.baseline, flags.before_window) {
            (true, _) => CaptureRole::Baseline,
            (false, true) => CaptureRole::BeforeWindow,
            (false, false) => CaptureRole::Spike,
        })
    }
}

/// What a capture came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureStatus {
    Ok,
    Failed,
}

/// A capture under way: named, with everything known before its profile is in.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingCapture {
    pub id: CaptureId,
    pub target: String,
    pub rule: String,
    pub kind: ProfileKind,
    pub role: CaptureRole,
    pub trigger: Trigger,
    /// Signal readings at decision time.
    pub readings: Readings,
    /// The target's readings over the minutes before the capture, for its chart.
    pub signals: Series,
    /// What 100% of each percent signal was.
    pub bases: Bases,
    /// Where the profile is fetched from.
    pub url: String,
    pub seconds: Option<u32>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub summary: Option<Summary>,
    pub diff: Option<Diff>,
    pub window: Option<Window>,
    pub segments: Vec<SegmentRef>,
    pub perf: Option<PerfStats>,
    pub pyroscope: Option<PyroscopeSeries>,
}

impl PendingCapture {
    /// A capture of `kind` by `rule` on `target` for `trigger`, starting `at`, named `id`.
    pub fn new(
        id: CaptureId,
        target: &str,
        rule: &str,
        kind: ProfileKind,
        trigger: Trigger,
        at: DateTime<Utc>,
    ) -> PendingCapture {
        PendingCapture {
            id,
            target: target.to_string(),
            rule: rule.to_string(),
            kind,
            role: CaptureRole::Spike,
            trigger,
            readings: Readings::new(),
            signals: Series::new(),
            bases: Bases::new(),
            url: String::new(),
            seconds: None,
            started_at: at,
            finished_at: at,
            summary: None,
            diff: None,
            window: None,
            segments: Vec::new(),
            perf: None,
            pyroscope: None,
        }
    }

    /// Its profile is in and valid: `bytes` of it, with that SHA-256 (hex), kept in the
    /// file its id and kind name.
    pub fn kept(self, bytes: u64, sha256: String) -> CaptureMeta {
        let file = format!("{}{}", self.id, self.kind.extension());
        CaptureMeta::from_parts(self, CaptureStatus::Ok, None, bytes, Some(sha256), Some(file))
    }

    /// It failed, for `reason`: nothing of its profile is kept.
    pub fn failed(self, reason: impl Into<String>) -> CaptureMeta {
        CaptureMeta::from_parts(self, CaptureStatus::Failed, Some(reason.into()), 0, None, None)
    }
}

/// One capture, kept or failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureMeta {
    pub id: CaptureId,
    pub target: String,
    pub rule: String,
    pub kind: ProfileKind,
    status: CaptureStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    pub trigger: Trigger,
    /// Signal readings at decision time, `{signal: value}`.
    #[serde(default)]
    pub readings: Readings,
    /// The target's readings over the minutes before the capture, for its chart.
    #[serde(default, skip_serializing_if = "Series::is_empty")]
    pub signals: Series,
    /// What 100% of each percent signal was.
    #[serde(default, skip_serializing_if = "Bases::is_empty")]
    pub bases: Bases,
    /// The URL the profile was fetched from.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u32>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Size of the stored profile; 0 when failed.
    bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    /// File name of the profile inside the target's directory; absent when failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    /// Top functions, for profile.proto kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// `baseline: true` and `before_window: true` in the metadata.
    #[serde(flatten)]
    pub role: CaptureRole,
    /// What grew against the latest baseline of the same target and kind (or, for a
    /// recorded kind, against the recorder's snapshot from before the window), if there was
    /// one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<Diff>,
    /// For a capture of a recorded kind: the time it reaches over, from the trigger's start
    /// minus the rule's lookback to the trigger plus its seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// The recorder's segments it was made of, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<SegmentRef>,
    /// For a `perf` capture: how its samples came out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perf: Option<PerfStats>,
    /// Where its profile was handed to Pyroscope, if it was: kept while a `pyroscope`
    /// section was configured, a profile.proto kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pyroscope: Option<PyroscopeSeries>,
}

/// The series a capture's profile is pushed to in Pyroscope, besides its
/// `alertprof_capture_id`: what a link to its view needs that the capture does not say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PyroscopeSeries {
    /// The target's `service_name` when it was kept (else the target's name).
    pub service_name: String,
}

/// How a `perf` capture's samples came out, kept with it: how far to trust its profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerfStats {
    pub frequency_hz: u32,
    pub samples: u64,
    /// Dropped by the kernel (its buffer full) or unreadable.
    pub lost: u64,
    /// Call chains that stopped early: at the kernel's depth limit, or at a frame without
    /// a frame pointer.
    pub cut_short: u64,
    /// Locations left as bare addresses.
    pub unsymbolized_locations: u64,
    /// Binaries whose frames could not be named, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable_binaries: Vec<String>,
    pub processes: usize,
    pub threads: usize,
    /// The process exited this long after sampling began: the profile covers that part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exited_after_ms: Option<u64>,
}

impl PerfStats {
    /// What the decision, the page and the log say of it: `812 samples at 99 Hz, 0 lost,
    /// 2 call chains cut short`.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{} samples at {} Hz, {} lost, {} call chains cut short",
            self.samples, self.frequency_hz, self.lost, self.cut_short
        );
        if self.unsymbolized_locations > 0 {
            line.push_str(&format!(", {} locations not named", self.unsymbolized_locations));
        }
        if let Some(ms) = self.exited_after_ms {
            line.push_str(&format!(", the process exited {:.1}s in", ms as f64 / 1000.0));
        }
        line
    }
}

/// A span of time a capture covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// One of the recorder's profiles: a CPU segment from `from` to `to`, or a snapshot
/// taken at `to` (= `from`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRef {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub bytes: u64,
}

impl CaptureMeta {
    fn from_parts(
        pending: PendingCapture,
        status: CaptureStatus,
        error: Option<String>,
        bytes: u64,
        sha256: Option<String>,
        file: Option<String>,
    ) -> CaptureMeta {
        let PendingCapture {
            id,
            target,
            rule,
            kind,
            role,
            trigger,
            readings,
            signals,
            bases,
            url,
            seconds,
            started_at,
            finished_at,
            summary,
            diff,
            window,
            segments,
            perf,
            pyroscope,
        } = pending;
        CaptureMeta {
            id,
            target,
            rule,
            kind,
            status,
            error,
            trigger,
            readings,
            signals,
            bases,
            url,
            seconds,
            started_at,
            finished_at,
            bytes,
            sha256,
            file,
            summary,
            role,
            diff,
            window,
            segments,
            perf,
            pyroscope,
        }
    }

    /// A kept capture that could not be stored after all, for `reason`: failed, and
    /// nothing of its profile kept.
    pub fn not_stored(self, reason: impl Into<String>) -> CaptureMeta {
        CaptureMeta {
            status: CaptureStatus::Failed,
            error: Some(reason.into()),
            bytes: 0,
            sha256: None,
            file: None,
            ..self
        }
    }

    pub fn status(&self) -> CaptureStatus {
        self.status
    }

    pub fn is_ok(&self) -> bool {
        self.status == CaptureStatus::Ok
    }

    /// Why it failed.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Size of the stored profile; 0 when failed.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn sha256(&self) -> Option<&str> {
        self.sha256.as_deref()
    }

    /// File name of the profile inside the target's directory; none when failed.
    pub fn file(&self) -> Option<&str> {
        self.file.as_deref()
    }

    /// Whether a profile.proto was kept: what has a flame graph, a summary and diffs, and
    /// what `go tool pprof` opens.
    pub fn has_pprof(&self) -> bool {
        self.is_ok() && self.kind.is_pprof()
    }

    /// The file name of the profile, or what to call it when there is none.
    pub fn file_name(&self) -> &str {
        self.file.as_deref().unwrap_or(self.id.as_str())
    }

    pub fn is_baseline(&self) -> bool {
        self.role == CaptureRole::Baseline
    }

    pub fn is_before_window(&self) -> bool {
        self.role == CaptureRole::BeforeWindow
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TriggerSource;

    /// A pending capture becomes kept with its size, digest and file, or failed with its
    /// reason; its role is written as the metadata's two flags and read back.
    #[test]
    fn a_capture_is_kept_or_failed() {
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let id = CaptureId::new(at, "cpu-spike", CaptureRole::Baseline, ProfileKind::Cpu);
        assert_eq!(id.as_str(), "20270115T080000.000Z-cpu-spike-baseline-cpu");
        let trigger = Trigger::local(TriggerSource::Watch, Some(at));
        let mut pending = PendingCapture::new(id.clone(), "t", "cpu-spike", ProfileKind::Cpu, trigger, at);
        pending.role = CaptureRole::Baseline;
        let kept = pending.clone().kept(10, "ab".into());
        assert_eq!(
            (kept.is_ok(), kept.bytes(), kept.sha256(), kept.file()),
            (true, 10, Some("ab"), Some(&*format!("{id}.pb.gz")))
        );
        let json = serde_json::to_value(&kept).unwrap();
        assert_eq!((json["baseline"].clone(), json.get("before_window")), (serde_json::json!(true), None));
        assert_eq!(serde_json::from_value::<CaptureMeta>(json).unwrap(), kept);
        let failed = pending.failed("boom");
        assert_eq!(
            (failed.is_ok(), failed.error(), failed.file(), failed.bytes()),
            (false, Some("boom"), None, 0)
        );
        let not_stored = kept.not_stored("disk full");
        assert_eq!(
            (not_stored.is_ok(), not_stored.error(), not_stored.sha256()),
            (false, Some("disk full"), None)
        );
        assert_eq!(CaptureId::parse("../x"), None);
        assert!(serde_json::from_value::<CaptureId>(serde_json::json!(".hidden")).is_err());
    }
}
