//! A capture's metadata: what was fetched, why, from where, and what came of it. Stored as
//! `<id>.json` next to the profile; the capture index is rebuilt from these at start.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::kind::ProfileKind;
use super::name::is_safe_name;
use super::signal::{Readings, Series};
use super::summary::{Diff, Summary};
use super::trigger::Trigger;

/// What a capture came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureStatus {
    Ok,
    Failed,
}

/// One capture, kept or failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureMeta {
    pub id: String,
    pub target: String,
    pub rule: String,
    pub kind: ProfileKind,
    pub status: CaptureStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub trigger: Trigger,
    /// Signal readings at decision time, `{signal: value}`.
    #[serde(default)]
    pub readings: Readings,
    /// The target's readings over the minutes before the capture, for its chart.
    #[serde(default, skip_serializing_if = "Series::is_empty")]
    pub signals: Series,
    /// The URL the profile was fetched from.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u32>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Size of the stored profile; 0 when failed.
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// File name of the profile inside the target's directory; absent when failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Top functions, for profile.proto kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// A capture of normal times, to compare spikes with (taken when an alert resolved, or
    /// periodically while the target was quiet).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub baseline: bool,
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
    /// The recorder's snapshot from just before the window, which the newest of its kind
    /// is compared with.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub before_window: bool,
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
    /// A capture about to be made: failed until it is kept, and nothing else known yet.
    pub fn pending(
        target: &str,
        rule: &str,
        kind: ProfileKind,
        trigger: Trigger,
        url: String,
        at: DateTime<Utc>,
    ) -> CaptureMeta {
        CaptureMeta {
            id: String::new(),
            target: target.to_string(),
            rule: rule.to_string(),
            kind,
            status: CaptureStatus::Failed,
            error: None,
            trigger,
            readings: Readings::new(),
            signals: Series::new(),
            url,
            seconds: None,
            started_at: at,
            finished_at: at,
            bytes: 0,
            sha256: None,
            file: None,
            summary: None,
            baseline: false,
            diff: None,
            window: None,
            segments: Vec::new(),
            before_window: false,
        }
    }

    pub fn is_ok(&self) -> bool {
        self.status == CaptureStatus::Ok
    }

    /// Whether a profile.proto was kept: what has a flame graph, a summary and diffs, and
    /// what `go tool pprof` opens.
    pub fn has_pprof(&self) -> bool {
        self.is_ok() && self.kind.is_pprof()
    }

    /// The file name of the profile, or what to call it when there is none.
    pub fn file_name(&self) -> &str {
        self.file.as_deref().unwrap_or(&self.id)
    }
}

/// `20261121T232525.702Z-cpu-spike-cpu`: sorts by time, safe in file names.
pub fn capture_id(at: DateTime<Utc>, rule: &str, kind: ProfileKind) -> String {
    format!("{}-{rule}-{kind}", at.format("%Y%m%dT%H%M%S%.3fZ"))
}

/// Ids come from URLs: only the characters `capture_id` produces, and never a path.
pub fn is_valid_id(id: &str) -> bool {
    is_safe_name(id) && !id.starts_with('.')
}
