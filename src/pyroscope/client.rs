//! One push to Pyroscope: `POST {url}/push.v1.PusherService/Push` in Connect's unary
//! protocol with a protobuf body, and what its answer means for the push.

use std::time::Duration;

use prost::Message;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::proto::push::v1::{PushRequest, RawProfileSeries, RawSample};
use super::proto::types::v1::LabelPair;
use crate::config::{Credentials, PyroscopeConfig};

/// Connect's path of the unary method: `/<package>.<service>/<method>`.
const PUSH_PATH: &str = "push.v1.PusherService/Push";
/// The longest a push may take, its body sent and the answer read; a slow Pyroscope costs
/// the worker this, never a capture.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of an error's text kept for the log.
const MAX_REASON_CHARS: usize = 300;

/// Pushes profiles to one Pyroscope. Cheap to clone.
#[derive(Clone)]
pub struct PyroscopeClient {
    http: reqwest::Client,
    endpoint: Url,
    tenant: Option<String>,
    auth: Option<Credentials>,
    timeout: Duration,
}

/// What one push's answer says to do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PushOutcome {
    Accepted,
    /// 4xx but 429: the reason is Connect's `code: message` when Pyroscope gave one.
    Rejected {
        status: u16,
        reason: String,
    },
    /// 5xx, 429, timeouts, no connection; `retry_after` when the answer said how long.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
}

/// The JSON body of a Connect error.
#[derive(Deserialize)]
struct ConnectError {
    code: Option<String>,
    message: Option<String>,
}

impl PyroscopeClient {
    /// Needs [`crate::init`] first, like every HTTP client.
    pub fn new(config: &PyroscopeConfig) -> PyroscopeClient {
        let base = config.url.as_str().trim_end_matches('/');
        let endpoint = Url::parse(&format!("{base}/{PUSH_PATH}")).unwrap_or_else(|_| config.url.clone());
        PyroscopeClient {
            http: crate::http::client(),
            endpoint,
            tenant: config.tenant.clone(),
            auth: config.auth.clone(),
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// The same client with another per-request timeout.
    pub fn with_timeout(self, timeout: Duration) -> PyroscopeClient {
        PyroscopeClient { timeout, ..self }
    }

    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// One try, no retries (the worker retries): `raw_profile` as stored, with `labels`;
    /// `name` (a capture's id, a segment's name) makes its sample id.
    pub(crate) async fn push(
        &self,
        name: &str,
        labels: &[(String, String)],
        raw_profile: Vec<u8>,
    ) -> PushOutcome {
        let body = push_request(name, labels, raw_profile).encode_to_vec();
        let mut request = self
            .http
            .post(self.endpoint.clone())
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/proto")
            .header("Connect-Protocol-Version", "1")
            .header("Connect-Timeout-Ms", self.timeout.as_millis().to_string())
            .body(body);
        if let Some(tenant) = &self.tenant {
            request = request.header("X-Scope-OrgID", tenant);
        }
        request = match &self.auth {
            Some(Credentials::Basic { username, password }) => {
                request.basic_auth(username, Some(password.expose()))
            }
            Some(Credentials::Bearer(token)) => request.bearer_auth(token.expose()),
            None => request,
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                return PushOutcome::Retry { reason: crate::http::error_chain(&error), retry_after: None };
            }
        };
        let status = response.status();
        if status.is_success() {
            // Read to the end (an empty PushResponse) so the connection is reused.
            response.bytes().await.ok();
            return PushOutcome::Accepted;
        }
        let retry_after = retry_after(response.headers());
        let reason = connect_reason(status, response.bytes().await.unwrap_or_default().as_ref());
        if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
            PushOutcome::Rejected { status: status.as_u16(), reason }
        } else {
            let retry_after = retry_after.filter(|_| matches!(status.as_u16(), 429 | 503));
            PushOutcome::Retry { reason, retry_after }
        }
    }
}

/// One series of one sample. Its ID is a UUID made from the push's name, the same on every
/// try; Pyroscope does not deduplicate on it, so it only marks a repeat as one.
fn push_request(name: &str, labels: &[(String, String)], raw_profile: Vec<u8>) -> PushRequest {
    let labels = labels.iter().map(|(name, value)| LabelPair { name: name.clone(), value: value.clone() });
    PushRequest {
        series: vec![RawProfileSeries {
            labels: labels.collect(),
            samples: vec![RawSample { raw_profile, id: sample_id(name) }],
            annotations: vec![],
        }],
    }
}

/// A UUID (version 8: made by alertprof's own rule) from the first bytes of the
/// name's SHA-256.
fn sample_id(name: &str) -> String {
    let mut bytes: [u8; 16] = Sha256::digest(name.as_bytes())[..16].try_into().unwrap_or([0; 16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// What an error answer says: Connect's `code: message`, else the start of its body, else
/// the status.
fn connect_reason(status: StatusCode, body: &[u8]) -> String {
    let reason = match serde_json::from_slice::<ConnectError>(body) {
        Ok(ConnectError { code, message }) if code.is_some() || message.is_some() => {
            [code, message].into_iter().flatten().collect::<Vec<_>>().join(": ")
        }
        _ => String::from_utf8_lossy(body).trim().to_string(),
    };
    let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
    if reason.is_empty() { format!("answered {status}") } else { format!("answered {status}: {reason}") }
}

/// `Retry-After` in seconds or as an HTTP date (one past is no wait).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some((at.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connect's JSON error becomes `code: message`; a body that is not one is kept as text;
    /// none at all leaves the status.
    #[test]
    fn reasons() {
        let json = br#"{"code":"invalid_argument","message":"profile is too old"}"#;
        assert_eq!(
            connect_reason(StatusCode::BAD_REQUEST, json),
            "answered 400 Bad Request: invalid_argument: profile is too old"
        );
        assert_eq!(
            connect_reason(StatusCode::BAD_GATEWAY, b" upstream down\n"),
            "answered 502 Bad Gateway: upstream down"
        );
        assert_eq!(connect_reason(StatusCode::FORBIDDEN, b""), "answered 403 Forbidden");
        assert_eq!(
            connect_reason(StatusCode::BAD_REQUEST, &[b'x'; 1000]).len(),
            "answered 400 Bad Request: ".len() + 300
        );
    }

    /// `Retry-After` in seconds and as a date; a date past is no wait; junk is none.
    #[test]
    fn retry_after_forms() {
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, value.parse().unwrap());
            headers
        };
        assert_eq!(retry_after(&headers("7")), Some(Duration::from_secs(7)));
        let in_a_minute = (chrono::Utc::now() + chrono::Duration::seconds(61)).to_rfc2822();
        let wait = retry_after(&headers(&in_a_minute)).unwrap();
        assert!(wait > Duration::from_secs(55) && wait <= Duration::from_secs(61), "{wait:?}");
        assert_eq!(retry_after(&headers("Sun, 06 Nov 1994 08:49:37 GMT")), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers("soon")), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    /// The sample id is a well-formed UUID, the same for a capture on every try and another
    /// for another capture.
    #[test]
    fn sample_ids() {
        let id = sample_id("20260823T101500Z-api-cpu");
        assert_eq!(id, sample_id("20260823T101500Z-api-cpu"));
        assert_ne!(id, sample_id("20260823T101500Z-api-heap"));
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert_eq!(&id[14..15], "8", "{id}");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
    }
}
