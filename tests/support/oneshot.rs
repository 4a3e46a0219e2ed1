//! alertprof in-process without a socket or workers: requests go through the router with
//! `oneshot`, and jobs stay queued (so a queue can be filled on purpose).

use std::path::Path;
use std::sync::Arc;

use alertprof::config::Config;
use alertprof::pipeline::App;
use alertprof::server::router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// The app over a config; its directory holds `token` (`s3cret`), `pw` (`hunter2`) and
/// the store in `data`.
pub struct Fixture {
    pub app: Arc<App>,
    /// The queue's receiving end, taken so that no worker takes the jobs.
    queue_rx: tokio::sync::mpsc::Receiver<alertprof::rules::Job>,
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// `config` with `{data}` standing for the store; `prepare` writes into the store
    /// before alertprof opens it.
    pub fn new(config: &str, prepare: impl FnOnce(&Path)) -> Fixture {
        alertprof::init();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
        std::fs::write(dir.path().join("pw"), "hunter2").unwrap();
        prepare(&data);
        let text = config.replace("{data}", &data.display().to_string());
        let config = Config::parse(&text, dir.path()).expect("valid test config");
        let app = App::new(config, None).unwrap();
        let queue_rx = app.take_queue().expect("the queue's end");
        Fixture { app, queue_rx, dir }
    }

    /// Takes the queued jobs off the queue, as workers would.
    pub fn take_queued(&mut self) -> Vec<alertprof::rules::Job> {
        std::iter::from_fn(|| self.queue_rx.try_recv().ok()).collect()
    }

    pub fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }
}

/// An answer, read whole.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// The body as JSON, or as a JSON string when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| Value::String(self.body.clone()))
    }
}

pub async fn call(app: &Arc<App>, request: Request<Body>) -> Answer {
    let response = router(app.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer { status, headers, body: String::from_utf8_lossy(&bytes).into_owned() }
}

pub fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

pub fn post(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path).header("content-type", "application/json").body(body.into()).unwrap()
}
