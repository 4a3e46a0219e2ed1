//! What set a capture off: an alert, a watch rule, a periodic baseline or a person.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a trigger came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerSource {
    Alertmanager,
    Watch,
    Manual,
    /// A periodic baseline while the target was quiet.
    Baseline,
    /// A recorded target's process ended: its last profiles, from the recorder.
    Exit,
}

impl TriggerSource {
    pub fn name(self) -> &'static str {
        match self {
            TriggerSource::Alertmanager => "alertmanager",
            TriggerSource::Watch => "watch",
            TriggerSource::Manual => "manual",
            TriggerSource::Baseline => "baseline",
            TriggerSource::Exit => "exit",
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
    /// When alertprof got it: the alert's arrival, the watch tick. Alerts arrive late
    /// (scrape, evaluation, `for`, group wait): this minus `starts_at` is how late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<DateTime<Utc>>,
    /// Shared by every job and capture of one alert.
    #[serde(default)]
    pub labels: Arc<BTreeMap<String, String>>,
}

impl Trigger {
    /// A trigger of no alert (a watch rule, a baseline, a person) at `at`.
    pub fn local(source: TriggerSource, at: Option<DateTime<Utc>>) -> Trigger {
        Trigger {
            source,
            alertname: None,
            fingerprint: None,
            starts_at: at,
            received_at: at,
            labels: Default::default(),
        }
    }
}
