//! Names of captures: a capture's id, made from its time, rule, role and kind, and what
//! the role is.

use std::borrow::Borrow;
use std::fmt;

use chrono::{DateTime, Utc};

use super::kind::ProfileKind;
use super::name::is_safe_name;

/// A capture's id, `20261121T232525.702Z-cpu-spike-cpu`: its time first, so ids sort by
/// time; only characters safe in file names and URLs, and never a path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CaptureId(String);

impl CaptureId {
    /// The id of a capture of `kind` started `at` by `rule`, in `role`: the rule's name,
    /// then what the role adds (`…-cpu-spike-baseline-cpu`).
    pub fn new(at: DateTime<Utc>, rule: &str, role: CaptureRole, kind: ProfileKind) -> CaptureId {
        CaptureId(format!("{}-{rule}{}-{kind}", at.format("%Y%m%dT%H%M%S%.3fZ"), role.id_part()))
    }

    /// An id from outside (a URL, a file name), if it is one alertprof could have made.
    pub fn parse(text: &str) -> Option<CaptureId> {
        (is_safe_name(text) && !text.starts_with('.')).then(|| CaptureId(text.to_string()))
    }

    /// The same id with `suffix` added (`-2`, an instance's tag): still an id.
    pub fn with_suffix(&self, suffix: &str) -> CaptureId {
        CaptureId(format!("{}-{suffix}", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CaptureId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Borrow<str> for CaptureId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for CaptureId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Text that is not an id alertprof could have made (in metadata read back).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a capture id")]
pub struct NotACaptureId(pub String);

impl TryFrom<String> for CaptureId {
    type Error = NotACaptureId;
    fn try_from(text: String) -> Result<CaptureId, NotACaptureId> {
        CaptureId::parse(&text).ok_or(NotACaptureId(text))
    }
}

impl From<CaptureId> for String {
    fn from(id: CaptureId) -> String {
        id.0
    }
}

/// What a capture is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CaptureRole {
    /// What a trigger (an alert, a watch rule, an exit, a person) asked for.
    #[default]
    Spike,
    /// A profile of normal times, that later spikes are compared with: taken when an
    /// alert resolved, or periodically while the target was quiet.
    Baseline,
    /// The recorder's snapshot from just before a lookback window, which the newest of its
    /// kind is compared with.
    BeforeWindow,
}

impl CaptureRole {
    /// What the role adds after the rule's name in an id.
    fn id_part(self) -> &'static str {
        match self {
            CaptureRole::Spike => "",
            CaptureRole::Baseline => "-baseline",
            CaptureRole::BeforeWindow => "-before",
        }
    }
}
