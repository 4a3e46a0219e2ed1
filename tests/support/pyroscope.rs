//! A stand-in for Pyroscope's push API, as Pyroscope serves it: `POST
//! /push.v1.PusherService/Push` in Connect's unary protocol, each push decoded with the
//! vendored protos (a body that is not a `PushRequest` is a 400, as Connect answers) and
//! kept with its headers, and answered as the test says: taken, a Connect error, or never.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use alertprof::profile::proto::Profile;
use alertprof::pyroscope::proto::push::v1::PushRequest;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const PUSH_PATH: &str = "/push.v1.PusherService/Push";

/// One push as the stand-in got it.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub labels: BTreeMap<String, String>,
    pub sample_id: String,
    pub raw_profile: Vec<u8>,
    pub headers: HeaderMap,
    pub series: usize,
}

impl Received {
    /// Its `alertprof_capture_id`; empty for a recorder segment, which has none.
    pub fn capture(&self) -> &str {
        self.labels.get("alertprof_capture_id").map_or("", String::as_str)
    }

    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The profile it carries, gunzipped and decoded.
    pub fn profile(&self) -> Profile {
        alertprof::profile::decode_profile(self.raw_profile.as_slice(), 1 << 30).expect("a profile.proto")
    }
}

/// How the stand-in answers, given a push and how many pushes of the same name (capture id,
/// else the sample id) it had before; `None` never answers.
pub type Answer = Arc<dyn Fn(&Received, usize) -> Option<Response> + Send + Sync>;

#[derive(Clone)]
pub struct Pyroscope {
    received: Arc<Mutex<Vec<Received>>>,
    answer: Arc<Mutex<Answer>>,
}

impl Pyroscope {
    pub async fn start(listener: TcpListener, answer: Answer) -> (Pyroscope, JoinHandle<()>) {
        let pyroscope = Pyroscope { received: Arc::default(), answer: Arc::new(Mutex::new(answer)) };
        let app =
            axum::Router::new().route(PUSH_PATH, axum::routing::post(push)).with_state(pyroscope.clone());
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (pyroscope, task)
    }

    /// Answers from now on as `answer` says.
    pub fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The capture id of each push, in the order they came.
    pub fn captures(&self) -> Vec<String> {
        self.received().iter().map(|r| r.capture().to_string()).collect()
    }
}

async fn push(State(pyroscope): State<Pyroscope>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(request) = PushRequest::decode(body) else {
        return connect_error(StatusCode::BAD_REQUEST, "invalid_argument", "not a PushRequest").unwrap();
    };
    let Some(series) = request.series.first().filter(|series| series.samples.len() == 1) else {
        return connect_error(StatusCode::BAD_REQUEST, "invalid_argument", "no sample").unwrap();
    };
    let received = Received {
        at: Instant::now(),
        labels: series.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect(),
        sample_id: series.samples[0].id.clone(),
        raw_profile: series.samples[0].raw_profile.clone(),
        headers,
        series: request.series.len(),
    };
    let name = |r: &Received| match r.capture() {
        "" => r.sample_id.clone(),
        capture => capture.to_string(),
    };
    let before = {
        let mut all = pyroscope.received.lock().unwrap();
        let before = all.iter().filter(|r| name(r) == name(&received)).count();
        all.push(received.clone());
        before
    };
    let answer = pyroscope.answer.lock().unwrap().clone();
    match answer(&received, before) {
        Some(response) => response,
        None => std::future::pending().await,
    }
}

/// Connect's answer to a unary call that went well: an empty `PushResponse`.
pub fn taken() -> Option<Response> {
    Some((StatusCode::OK, [("content-type", "application/proto")]).into_response())
}

/// Takes every push.
pub fn ok() -> Answer {
    Arc::new(|_, _| taken())
}

/// A Connect error, as Pyroscope writes them: JSON `{code, message}`.
pub fn connect_error(status: StatusCode, code: &str, message: &str) -> Option<Response> {
    let body = serde_json::json!({"code": code, "message": message}).to_string();
    Some((status, [("content-type", "application/json")], body).into_response())
}
