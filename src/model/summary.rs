//! What analysis found in a profile.proto capture, as kept in its metadata: the top
//! functions (`go tool pprof -top`) and what changed against a baseline
//! (`-diff_base`). How they are computed and put into words is `analyze`'s.

use serde::{Deserialize, Serialize};

use super::id::CaptureId;

/// A profile's main sample type and its top functions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// `type/unit`, e.g. `cpu/nanoseconds`.
    pub sample_type: String,
    /// Sum of the main value over all samples.
    pub total: i64,
    pub top: Vec<TopFunction>,
    /// Why the figures cover less than the whole profile (a bound of the analysis was
    /// reached), if they do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_short: Option<String>,
}

/// One function's flat and cumulative value (or change of them, in a diff), and their
/// shares of the total.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopFunction {
    pub function: String,
    pub flat: i64,
    pub flat_percent: f64,
    pub cum: i64,
    pub cum_percent: f64,
}

/// The functions that changed most against a baseline capture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    /// The baseline capture's id.
    pub base: CaptureId,
    /// `type/unit`, the same for both.
    pub sample_type: String,
    /// The baseline's total, which the percentages are of (the profile's, if it is 0).
    pub base_total: i64,
    /// The profile's total.
    pub total: i64,
    /// Changes of flat and cum, largest flat growth first; unchanged functions left out.
    pub functions: Vec<TopFunction>,
    /// Why either profile's figures cover less than all of it, if they do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_short: Option<String>,
    /// The base is the recorder's snapshot from before the capture's window, not a baseline.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub before_window: bool,
}

/// The unit of a `type/unit` sample type.
pub fn unit_of(sample_type: &str) -> &str {
    sample_type.rsplit_once('/').map_or("", |(_, unit)| unit)
}
