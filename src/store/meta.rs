//! A capture's metadata: what was fetched, why, from where, and what came of it. Stored as
//! `<id>.json` next to the profile; the capture index is rebuilt from these at start.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a capture came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureStatus {
    Ok,
    Failed,
}

/// What set a capture off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerSource {
    Alertmanager,
    Watch,
    Manual,
    /// A periodic baseline while the target was quiet.
    Baseline,
}

impl TriggerSource {
    pub fn name(self) -> &'static str {
        match self {
            TriggerSource::Alertmanager => "alertmanager",
            TriggerSource::Watch => "watch",
            TriggerSource::Manual => "manual",
            TriggerSource::Baseline => "baseline",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    pub source: TriggerSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<DateTime<Utc>>,
    /// Shared by every job and capture of one alert.
    #[serde(default)]
    pub labels: Arc<BTreeMap<String, String>>,
}

/// One capture, kept or failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureMeta {
    pub id: String,
    pub target: String,
    pub rule: String,
    pub kind: String,
    pub status: CaptureStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub trigger: Trigger,
    /// Signal readings at decision time, `{signal: value}`.
    #[serde(default)]
    pub readings: BTreeMap<String, f64>,
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
    pub summary: Option<crate::analyze::Summary>,
    /// A capture of normal times, to compare spikes with (taken when an alert resolved, or
    /// periodically while the target was quiet).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub baseline: bool,
    /// What grew against the latest baseline of the same target and kind, if there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<crate::analyze::Diff>,
}

impl CaptureMeta {
    pub fn is_ok(&self) -> bool {
        self.status == CaptureStatus::Ok
    }
}

/// `20261121T232525.702Z-cpu-spike-cpu`: sorts by time, safe in file names.
pub fn capture_id(at: DateTime<Utc>, rule: &str, kind: &str) -> String {
    format!("{}-{rule}-{kind}", at.format("%Y%m%dT%H%M%S%.3fZ"))
}

/// Ids come from URLs: only the characters `capture_id` produces, and never a path.
pub fn is_valid_id(id: &str) -> bool {
    crate::config::is_safe_name(id) && !id.starts_with('.')
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A capture of `kind` from target `t` by rule `r`, for tests.
    pub fn meta(id: &str, kind: &str, finished_at: DateTime<Utc>, status: CaptureStatus) -> CaptureMeta {
        CaptureMeta {
            id: id.to_string(),
            target: "t".into(),
            rule: "r".into(),
            kind: kind.into(),
            status,
            error: None,
            trigger: Trigger {
                source: TriggerSource::Manual,
                alertname: None,
                fingerprint: None,
                starts_at: None,
                labels: Default::default(),
            },
            readings: BTreeMap::new(),
            url: format!("http://t/debug/pprof/{kind}"),
            seconds: None,
            started_at: finished_at,
            finished_at,
            bytes: 0,
            sha256: None,
            file: None,
            summary: None,
            baseline: false,
            diff: None,
        }
    }
}
