//! A stand-in for Grafana's annotation API, as documented: `POST /api/annotations` (Bearer
//! auth, 200 `{"id": N, "message": "Annotation added"}`) and `GET /api/annotations?tags=`.
//! It can answer 503 a number of times first, or refuse everything with 400.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

#[derive(Default)]
pub struct Grafana {
    pub token: String,
    /// Requests still to answer 503.
    pub unavailable: Mutex<usize>,
    /// Answer 400 to every post.
    pub reject: bool,
    pub requests: Mutex<usize>,
    pub annotations: Mutex<Vec<Value>>,
}

impl Grafana {
    pub async fn start(token: &str, unavailable: usize, reject: bool) -> (Arc<Grafana>, SocketAddr) {
        let grafana = Arc::new(Grafana {
            token: token.to_string(),
            unavailable: Mutex::new(unavailable),
            reject,
            ..Default::default()
        });
        let app =
            axum::Router::new().route("/api/annotations", get(list).post(add)).with_state(grafana.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        (grafana, addr)
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {}", self.token))
    }
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "message": text }))).into_response()
}

async fn add(State(grafana): State<Arc<Grafana>>, headers: HeaderMap, body: String) -> Response {
    *grafana.requests.lock().unwrap() += 1;
    if !grafana.authorized(&headers) {
        return message(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    {
        let mut unavailable = grafana.unavailable.lock().unwrap();
        if *unavailable > 0 {
            *unavailable -= 1;
            return message(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable");
        }
    }
    if grafana.reject {
        return message(StatusCode::BAD_REQUEST, "bad request data");
    }
    let Ok(Value::Object(mut annotation)) = serde_json::from_str::<Value>(&body) else {
        return message(StatusCode::BAD_REQUEST, "bad request data");
    };
    let typed = annotation.get("time").is_none_or(Value::is_i64)
        && annotation.get("timeEnd").is_none_or(Value::is_i64)
        && annotation
            .get("tags")
            .is_none_or(|t| t.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
        && annotation.get("text").is_some_and(Value::is_string);
    if !typed {
        return message(StatusCode::BAD_REQUEST, "bad request data");
    }
    let mut annotations = grafana.annotations.lock().unwrap();
    let id = annotations.len() as i64 + 1;
    annotation.insert("id".into(), json!(id));
    annotations.push(Value::Object(annotation));
    (StatusCode::OK, Json(json!({ "message": "Annotation added", "id": id }))).into_response()
}

async fn list(
    State(grafana): State<Arc<Grafana>>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    if !grafana.authorized(&headers) {
        return message(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let wanted: Vec<&String> = query.iter().filter(|(k, _)| k == "tags").map(|(_, v)| v).collect();
    let annotations = grafana.annotations.lock().unwrap();
    let found: Vec<&Value> = annotations
        .iter()
        .filter(|a| wanted.iter().all(|tag| a["tags"].as_array().unwrap().iter().any(|t| t == tag.as_str())))
        .rev()
        .collect();
    Json(json!(found)).into_response()
}
