//! The ceiling for webhook intake on a machine: a receiver that only decodes the same
//! Alertmanager JSON alertprof decodes and answers 200. Used by `benches/service.rs`.
//!
//! Usage: minimal_receiver 127.0.0.1:PORT

use axum::Json;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::json;

async fn receive(body: Bytes) -> (StatusCode, Json<serde_json::Value>) {
    match serde_json::from_slice::<alertprof::intake::WebhookPayload>(&body) {
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
