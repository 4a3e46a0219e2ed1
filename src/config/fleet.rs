//! The fleet's sections: `storage.object_store:`, a bucket that every instance keeps its
//! captures in and claims its alerts on, and `alertmanager_api:`, Alertmanager's API
//! polled for alerts instead of (or besides) its webhook.

use std::time::Duration;

use reqwest::Url;
use serde_json::Value;

use super::values::{read_secret, read_url};
use super::walk::{Walker, field, index, optional};
use crate::model::Secret;
use crate::model::name::is_label_name;

/// An S3-compatible bucket: `url` is `s3://BUCKET/PREFIX`. Without key files, the usual
/// AWS environment variables and instance credentials apply.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectStoreConfig {
    pub bucket: String,
    /// Where under the bucket, without slashes at either end; may be empty.
    pub prefix: String,
    /// For S3-compatible stores (MinIO, Ceph, moto): their base URL.
    pub endpoint: Option<Url>,
    pub region: Option<String>,
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
}

impl ObjectStoreConfig {
    /// `s3://bucket/prefix`, as written.
    pub fn url(&self) -> String {
        match self.prefix.is_empty() {
            true => format!("s3://{}", self.bucket),
            false => format!("s3://{}/{}", self.bucket, self.prefix),
        }
    }
}

pub(super) fn read_object_store(
    w: &mut Walker,
    path: &str,
    value: &Value,
    base: &std::path::Path,
) -> Option<ObjectStoreConfig> {
    let object = w.object(
        path,
        value,
        &["url", "endpoint", "region", "access_key_id_file", "secret_access_key_file"],
    )?;
    let url = match object.get("url") {
        Some((p, v)) => read_bucket_url(w, &p, v),
        None => {
            w.report(path, "needs url: s3://BUCKET/PREFIX");
            None
        }
    };
    let endpoint = optional(w, &object, "endpoint", None, |w, p, v| read_url(w, p, v).map(Some));
    let region = optional(w, &object, "region", None, |w, p, v| {
        let region = w.string(p, v)?;
        if region.is_empty() || !region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            w.report(p, format!("{region:?} is not a region name (like us-east-1)"));
            return None;
        }
        Some(Some(region.to_string()))
    });
    let key =
        optional(w, &object, "access_key_id_file", None, |w, p, v| read_secret(w, p, v, base).map(Some));
    let secret =
        optional(w, &object, "secret_access_key_file", None, |w, p, v| read_secret(w, p, v, base).map(Some));
    let (key, secret) = (key?, secret?);
    if key.is_some() != secret.is_some() {
        let missing = if key.is_some() { "secret_access_key_file" } else { "access_key_id_file" };
        w.report(
            &field(path, missing),
            "needed too: give both key files, or neither (then the AWS environment's)",
        );
        return None;
    }
    let (bucket, prefix) = url?;
    Some(ObjectStoreConfig {
        bucket,
        prefix,
        endpoint: endpoint?,
        region: region?,
        access_key_id: key,
        secret_access_key: secret,
    })
}

/// `s3://BUCKET[/PREFIX]`: the bucket and the prefix.
fn read_bucket_url(w: &mut Walker, path: &str, value: &Value) -> Option<(String, String)> {
    let text = w.string(path, value)?;
    let Some(rest) = text.strip_prefix("s3://") else {
        w.report(path, format!("{text:?} must be s3://BUCKET/PREFIX (S3 and S3-compatible stores)"));
        return None;
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    // S3's rules for bucket names: 3-63 of a-z 0-9 . -, starting and ending alphanumeric.
    let valid = (3..=63).contains(&bucket.len())
        && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid {
        w.report(path, format!("{bucket:?} is not a bucket name: 3-63 of a-z 0-9 . -"));
        return None;
    }
    let prefix = prefix.trim_matches('/');
    let safe = |part: &str| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if !prefix.is_empty() && !prefix.split('/').all(safe) {
        w.report(path, format!("{prefix:?}: a prefix is parts of a-z A-Z 0-9 - _ . between slashes"));
        return None;
    }
    Some((bucket.to_string(), prefix.to_string()))
}

/// Alertmanager's `GET /api/v2/alerts`, polled every `interval` for the alerts that match
/// every one of `matchers`, from the first of `urls` that answers.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertmanagerApiConfig {
    pub urls: Vec<Url>,
    pub interval: Duration,
    /// Alertmanager's matcher syntax: `name="value"`, `!=`, `=~`, `!~`.
    pub matchers: Vec<String>,
}

pub(super) fn read_alertmanager_api(
    w: &mut Walker,
    path: &str,
    value: &Value,
) -> Option<AlertmanagerApiConfig> {
    let object = w.object(path, value, &["urls", "interval", "matchers"])?;
    let urls = match object.get("urls") {
        Some((p, v)) => w.list(&p, v).and_then(|items| {
            if items.is_empty() {
                w.report(&p, "lists no Alertmanager; give at least one URL");
                return None;
            }
            let urls: Vec<Option<Url>> =
                items.iter().enumerate().map(|(i, item)| read_url(w, &index(&p, i), item)).collect();
            urls.into_iter().collect()
        }),
        None => {
            w.report(path, "needs urls: the Alertmanagers to poll, e.g. [http://alertmanager:9093]");
            None
        }
    };
    let interval = optional(w, &object, "interval", Duration::from_secs(5), |w, p, v| {
        let interval = w.duration(p, v)?;
        if interval < Duration::from_secs(1) {
            w.report(p, "must be at least 1s: every poll lists every matching alert");
            return None;
        }
        Some(interval)
    });
    let matchers = optional(w, &object, "matchers", Vec::new(), |w, p, v| {
        let items = w.list(p, v)?;
        let mut ok = true;
        let mut matchers = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_path = index(p, i);
            let Some(text) = w.string(&item_path, item) else {
                ok = false;
                continue;
            };
            match check_matcher(text) {
                Ok(()) => matchers.push(text.to_string()),
                Err(error) => {
                    w.report(&item_path, error.to_string());
                    ok = false;
                }
            }
        }
        ok.then_some(matchers)
    });
    Some(AlertmanagerApiConfig { urls: urls?, interval: interval?, matchers: matchers? })
}

/// Why a `matchers` item is not a matcher Alertmanager's API takes; each names the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    #[error("{0:?} is not a matcher like alertprof=\"true\"")]
    NoOperator(String),
    #[error("{0:?}: the operator must be =, !=, =~ or !~")]
    UnknownOperator(String),
    #[error("{text:?}: {name:?} is not a label name")]
    NotALabelName { text: String, name: String },
    #[error("{0:?}: the value's quotes are not closed")]
    UnclosedQuotes(String),
}

/// `name="value"` (or `!=`, `=~`, `!~`; the value may be bare), as Alertmanager's API
/// takes in `filter`.
fn check_matcher(text: &str) -> Result<(), MatcherError> {
    let at = text.find(['=', '!']).ok_or_else(|| MatcherError::NoOperator(text.to_string()))?;
    let name = text[..at].trim();
    let rest = &text[at..];
    let value = ["=~", "!~", "!=", "="].iter().find_map(|op| rest.strip_prefix(op));
    let Some(value) = value else {
        return Err(MatcherError::UnknownOperator(text.to_string()));
    };
    if !is_label_name(name) {
        return Err(MatcherError::NotALabelName { text: text.to_string(), name: name.to_string() });
    }
    let value = value.trim();
    let quoted = value.len() >= 2 && value.starts_with('"') && value.ends_with('"');
    if value.starts_with('"') && !quoted {
        return Err(MatcherError::UnclosedQuotes(text.to_string()));
    }
    Ok(())
}
