//! Alertmanager's webhook payload, version 4. Unknown fields are ignored; what alertprof
//! relies on is checked.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload {
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub receiver: Option<String>,
    /// The group's status; each alert's own status is what counts.
    #[serde(default)]
    pub status: Option<String>,
    pub alerts: Vec<Alert>,
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(default, rename = "externalURL")]
    pub external_url: Option<String>,
    #[serde(default)]
    pub group_key: Option<String>,
    #[serde(default)]
    pub truncated_alerts: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: String,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: Option<String>,
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// An alert's own status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl WebhookPayload {
    /// Checks what serde cannot: the version and each alert's status.
    pub fn check(&self) -> Result<(), String> {
        if let Some(version) = &self.version
            && version != "4"
        {
            return Err(format!("unsupported payload version {version:?}; alertprof reads version 4"));
        }
        for (i, alert) in self.alerts.iter().enumerate() {
            alert.status().map_err(|message| format!("alerts[{i}].status: {message}"))?;
        }
        Ok(())
    }
}

impl Alert {
    pub fn status(&self) -> Result<AlertStatus, String> {
        match self.status.as_str() {
            "firing" => Ok(AlertStatus::Firing),
            "resolved" => Ok(AlertStatus::Resolved),
            other => Err(format!("{other:?} is neither \"firing\" nor \"resolved\"")),
        }
    }

    pub fn alertname(&self) -> Option<&str> {
        self.labels.get("alertname").map(String::as_str)
    }

    /// Alertmanager's fingerprint, or one made from the labels for senders that give none.
    pub fn fingerprint(&self) -> String {
        if let Some(fingerprint) = self.fingerprint.as_ref().filter(|f| !f.is_empty()) {
            return fingerprint.clone();
        }
        let mut hasher = Sha256::new();
        for (name, value) in &self.labels {
            hasher.update(name.as_bytes());
            hasher.update([0xff]);
            hasher.update(value.as_bytes());
            hasher.update([0xfe]);
        }
        hex::encode(&hasher.finalize()[..8])
    }
}
