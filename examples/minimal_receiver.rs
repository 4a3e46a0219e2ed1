//! The ceiling for webhook intake on a machine: a receiver that only decodes the
//! Alertmanager payload and answers 200. It decodes the whole documented payload (version 4)
//! into owned values, as a straightforward receiver does; alertprof reads a borrowed view
//! of the fields it needs. Used by `benches/service.rs`.
//!
//! Usage: minimal_receiver 127.0.0.1:PORT

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;

/// Alertmanager's webhook payload, version 4, every documented field.
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    version: String,
    group_key: String,
    truncated_alerts: u64,
    status: String,
    receiver: String,
    group_labels: BTreeMap<String, String>,
    common_labels: BTreeMap<String, String>,
    common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    external_url: String,
    alerts: Vec<Alert>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Alert {
    status: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    starts_at: chrono::DateTime<chrono::Utc>,
    ends_at: chrono::DateTime<chrono::Utc>,
    #[serde(rename = "generatorURL")]
    generator_url: String,
    fingerprint: String,
}

async fn receive(body: Bytes) -> (StatusCode, Json<serde_json::Value>) {
    match serde_json::from_slice::<Payload>(&body) {
        Ok(payload) => (StatusCode::OK, Json(json!({"accepted": payload.alerts.len(), "ignored": 0}))),
        Err(error) => (StatusCode::BAD_REQUEST, Json(json!({"error": error.to_string()}))),
    }
}

#[tokio::main]
async fn main() {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9732".into());
    let listener = tokio::net::TcpListener::bind(&address).await.expect("address free");
    eprintln!("minimal receiver listening on {address}");
    axum::serve(listener, axum::Router::new().route("/api/v1/alerts", post(receive))).await.unwrap();
}
