//! Alerts as Alertmanager sends them: the webhook payload, version 4, read as a borrowed
//! view of the fields alertprof uses. Unknown fields are ignored; what alertprof relies on
//! is checked.

use std::borrow::{Borrow, Cow};
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::text::clip;

/// A string of the payload, borrowed from the request body unless it had to be unescaped:
/// a storm of alerts is read without copying its labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub struct Str<'a>(#[serde(borrow)] pub Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Str<'_> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Str<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An alert's labels as the payload has them.
pub type Labels<'a> = BTreeMap<Str<'a>, Str<'a>>;

/// Longest text of an alert that a decision, a log line or a reason keeps (its name,
/// fingerprint, a label value): whoever reaches the webhook writes them.
pub const MAX_SHOWN: usize = 256;
/// Longest label value kept with a capture, and the most labels kept.
pub const MAX_LABEL: usize = 1024;
pub const MAX_LABELS: usize = 64;
/// Labels and characters of each value that a reason names.
const LABELS_NAMED: usize = 16;
const VALUE_NAMED: usize = 64;

/// What alertprof reads of a webhook payload. The other fields Alertmanager sends (group and
/// common labels, annotations, URLs) are skipped unread; unknown fields are ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload<'a> {
    #[serde(default, borrow)]
    pub version: Option<Str<'a>>,
    /// The group's status; each alert's own status is what counts.
    #[serde(default, borrow)]
    pub status: Option<Str<'a>>,
    #[serde(borrow)]
    pub alerts: Vec<Alert<'a>>,
    #[serde(default)]
    pub truncated_alerts: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert<'a> {
    #[serde(borrow)]
    pub status: Str<'a>,
    #[serde(borrow)]
    pub labels: Labels<'a>,
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(default, borrow)]
    pub fingerprint: Option<Str<'a>>,
}

/// An alert's own status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// An alert's status that is neither of the two Alertmanager sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither \"firing\" nor \"resolved\"")]
pub struct UnknownStatus(pub String);

/// Why a webhook body is not a payload alertprof reads.
#[derive(Debug, thiserror::Error)]
pub enum MalformedPayload {
    /// Not JSON, or not the shape of a payload.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported payload version {0:?}; alertprof reads version 4")]
    UnsupportedVersion(String),
    #[error("alerts[{index}].status: {source}")]
    Status { index: usize, source: UnknownStatus },
}

impl WebhookPayload<'_> {
    /// Checks what serde cannot: the version and each alert's status.
    pub fn check(&self) -> Result<(), MalformedPayload> {
        if let Some(version) = &self.version
            && &**version != "4"
        {
            return Err(MalformedPayload::UnsupportedVersion(version.to_string()));
        }
        for (index, alert) in self.alerts.iter().enumerate() {
            alert.status().map_err(|source| MalformedPayload::Status { index, source })?;
        }
        Ok(())
    }
}

impl Alert<'_> {
    pub fn status(&self) -> Result<AlertStatus, UnknownStatus> {
        match &*self.status {
            "firing" => Ok(AlertStatus::Firing),
            "resolved" => Ok(AlertStatus::Resolved),
            other => Err(UnknownStatus(other.to_string())),
        }
    }

    /// The alert's name, at most `MAX_SHOWN` bytes of it.
    pub fn alertname(&self) -> Option<Cow<'_, str>> {
        self.labels.get("alertname").map(|name| clip(name, MAX_SHOWN))
    }

    /// Alertmanager's fingerprint, or one made from the labels for senders that give none
    /// (or give one longer than any Alertmanager makes: it stands in a key kept for days).
    pub fn fingerprint(&self) -> Cow<'_, str> {
        let mut hasher = Sha256::new();
        match self.fingerprint.as_ref().filter(|f| !f.is_empty()) {
            Some(fingerprint) if fingerprint.len() <= 64 => return Cow::Borrowed(fingerprint),
            Some(fingerprint) => hasher.update(fingerprint.as_bytes()),
            None => {
                for (name, value) in &self.labels {
                    hasher.update(name.as_bytes());
                    hasher.update([0xff]);
                    hasher.update(value.as_bytes());
                    hasher.update([0xfe]);
                }
            }
        }
        Cow::Owned(hex::encode(&hasher.finalize()[..8]))
    }

    /// The alert's identity for dedupe: its fingerprint, or with `ignored` labels (those
    /// HA Prometheus replicas add) one made from the rest of its labels, so that replicas'
    /// copies of one alert are one.
    pub fn fingerprint_ignoring(&self, ignored: &[String]) -> Cow<'_, str> {
        if ignored.is_empty() {
            return self.fingerprint();
        }
        let mut hasher = Sha256::new();
        for (name, value) in self.labels.iter().filter(|(name, _)| !ignored.iter().any(|i| **i == ***name)) {
            hasher.update(name.as_bytes());
            hasher.update([0xff]);
            hasher.update(value.as_bytes());
            hasher.update([0xfe]);
        }
        Cow::Owned(hex::encode(&hasher.finalize()[..8]))
    }

    /// The labels as owned strings, for what outlives the request (a job's trigger, a
    /// capture's metadata): at most `MAX_LABELS`, each value at most `MAX_LABEL` bytes.
    pub fn owned_labels(&self) -> BTreeMap<String, String> {
        let labels = self.labels.iter().take(MAX_LABELS);
        labels
            .map(|(name, value)| (clip(name, MAX_SHOWN).into_owned(), clip(value, MAX_LABEL).into_owned()))
            .collect()
    }

    /// `{alertname="HighCPU", job="checkout"}`, for a reason: at most a few labels and the
    /// start of each value.
    pub fn describe_labels(&self) -> String {
        let mut parts: Vec<String> = self
            .labels
            .iter()
            .take(LABELS_NAMED)
            .map(|(name, value)| format!("{}={:?}", clip(name, VALUE_NAMED), &*clip(value, VALUE_NAMED)))
            .collect();
        if self.labels.len() > LABELS_NAMED {
            parts.push(format!("and {} more", self.labels.len() - LABELS_NAMED));
        }
        format!("{{{}}}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Strings are borrowed from the body, unless JSON escapes had to be undone; both read
    /// the same. Fields alertprof does not need are skipped, whatever they hold.
    #[test]
    fn borrowed_unless_escaped() {
        let body = br#"{"version": "4", "groupLabels": {"x": [1, {"y": null}]}, "alerts": [{
            "status": "firing", "annotations": {"a": "b"}, "generatorURL": 7,
            "labels": {"alertname": "HighCPU", "job": "a\"b\u00e9"}, "fingerprint": "f1"}]}"#;
        let payload: WebhookPayload = serde_json::from_slice(body).unwrap();
        payload.check().unwrap();
        let alert = &payload.alerts[0];
        assert!(matches!(alert.labels.get("alertname").unwrap().0, Cow::Borrowed("HighCPU")));
        assert!(matches!(&alert.labels.get("job").unwrap().0, Cow::Owned(job) if job == "a\"bé"));
        assert_eq!(alert.alertname().as_deref(), Some("HighCPU"));
        assert_eq!(alert.describe_labels(), "{alertname=\"HighCPU\", job=\"a\\\"bé\"}");
        assert!(matches!(alert.fingerprint(), Cow::Borrowed("f1")));
        assert_eq!(alert.owned_labels()["job"], "a\"bé");
    }

    /// What serde cannot check is refused with the place and the value: an unknown
    /// version, an alert's status that is neither of the two.
    #[test]
    fn checked_with_reasons() {
        let parse = |body: &'static [u8]| serde_json::from_slice::<WebhookPayload>(body).unwrap();
        let version = parse(br#"{"version": "3", "alerts": []}"#).check().unwrap_err();
        assert!(matches!(&version, MalformedPayload::UnsupportedVersion(v) if v == "3"));
        assert_eq!(version.to_string(), "unsupported payload version \"3\"; alertprof reads version 4");
        let body =
            br#"{"alerts": [{"status": "firing", "labels": {}}, {"status": "burning", "labels": {}}]}"#;
        let status = parse(body).check().unwrap_err();
        assert!(matches!(&status, MalformedPayload::Status { index: 1, source } if source.0 == "burning"));
        assert_eq!(
            status.to_string(),
            "alerts[1].status: \"burning\" is neither \"firing\" nor \"resolved\""
        );
    }

    /// Without a fingerprint, one is made from the labels: stable, and different for
    /// different labels.
    #[test]
    fn fingerprint_from_labels() {
        let parse = |body: &'static [u8]| serde_json::from_slice::<WebhookPayload>(body).unwrap();
        let a = parse(br#"{"alerts": [{"status": "firing", "labels": {"a": "1", "b": "2"}}]}"#);
        let b = parse(br#"{"alerts": [{"status": "firing", "labels": {"b": "2", "a": "1"}}]}"#);
        let c = parse(br#"{"alerts": [{"status": "firing", "labels": {"a": "1", "b": "3"}}]}"#);
        let fingerprint = |p: &WebhookPayload| p.alerts[0].fingerprint().into_owned();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
        assert_eq!(fingerprint(&a).len(), 16);
    }

    /// With ignored labels, copies of an alert that differ only in them are one; without,
    /// Alertmanager's fingerprint stands.
    #[test]
    fn replicas_are_one_alert() {
        let parse = |body: &'static [u8]| serde_json::from_slice::<WebhookPayload>(body).unwrap();
        let a = parse(br#"{"alerts": [{"status": "firing", "fingerprint": "aaaa", "labels": {"alertname": "X", "replica": "a"}}]}"#);
        let b = parse(br#"{"alerts": [{"status": "firing", "fingerprint": "bbbb", "labels": {"alertname": "X", "replica": "b"}}]}"#);
        let c = parse(br#"{"alerts": [{"status": "firing", "fingerprint": "cccc", "labels": {"alertname": "Y", "replica": "a"}}]}"#);
        let ignored = ["replica".to_string(), "prometheus_replica".to_string()];
        let key =
            |p: &WebhookPayload, ignored: &[String]| p.alerts[0].fingerprint_ignoring(ignored).into_owned();
        assert_eq!(key(&a, &ignored), key(&b, &ignored));
        assert_ne!(key(&a, &ignored), key(&c, &ignored));
        assert_eq!((key(&a, &[]), key(&b, &[])), ("aaaa".to_string(), "bbbb".to_string()));
    }

    /// What outlives a request is bounded whatever the sender wrote: at most 64 labels of at
    /// most 1 KiB each, a reason naming 16 of them shortly, a fingerprint of 16 characters.
    #[test]
    fn kept_within_bounds() {
        let labels: serde_json::Map<String, serde_json::Value> =
            (0..100).map(|n| (format!("l{n:03}"), serde_json::Value::from("v".repeat(5000)))).collect();
        let body = serde_json::json!({"alerts": [{"status": "firing", "labels": labels, "fingerprint": "f".repeat(10_000)}]});
        let text = body.to_string();
        let payload: WebhookPayload = serde_json::from_str(&text).unwrap();
        let alert = &payload.alerts[0];
        let owned = alert.owned_labels();
        assert_eq!(owned.len(), MAX_LABELS);
        assert!(owned.values().all(|value| value.len() <= MAX_LABEL + "…".len()));
        let described = alert.describe_labels();
        assert!(described.ends_with(", and 84 more}") && described.len() < 2000, "{described}");
        assert_eq!(alert.fingerprint().len(), 16);
    }
}
