//! Shared test fixtures: alertprof in-process on a loopback port, the Go demo target built
//! and started for real, and small HTTP servers that misbehave on purpose.
#![allow(dead_code)]

pub mod grafana;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use alertprof::config::Config;
use alertprof::pipeline::{App, run_sampling, run_workers};
use alertprof::server::router;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// alertprof running in this process on an ephemeral loopback port.
pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub shutdown: CancellationToken,
    server: JoinHandle<()>,
    workers: JoinHandle<()>,
    sampling: JoinHandle<()>,
}

impl Running {
    /// Starts alertprof with config text; `{data}` in it is replaced by `data`.
    pub async fn start(yaml: &str, data: &Path) -> Running {
        Running::start_on(yaml, data, 0).await
    }

    /// Starts alertprof on a given loopback port (0: any).
    pub async fn start_on(yaml: &str, data: &Path, port: u16) -> Running {
        let text = yaml.replace("{data}", &data.display().to_string());
        let config =
            Config::parse(&text, data).unwrap_or_else(|e| panic!("test config invalid: {e:?}\n{text}"));
        let (app, queue_rx) = App::new(config, None).expect("alertprof starts");
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = {
            let shutdown = shutdown.clone();
            let router = router(app.clone());
            tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
                    .unwrap();
            })
        };
        let workers =
            tokio::spawn(run_workers(app.clone(), queue_rx, shutdown.clone(), Duration::from_secs(5)));
        let sampling = tokio::spawn(run_sampling(app.clone(), shutdown.clone()));
        Running { addr, app, shutdown, server, workers, sampling }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Shuts down as on SIGTERM and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.unwrap();
        self.sampling.await.unwrap();
        self.workers.await.unwrap();
    }

    pub async fn post_alerts(&self, payload: &Value) -> (u16, Value) {
        let response = client().post(self.url("/api/v1/alerts")).json(payload).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Waits for the newest decision with `outcome` and returns it.
    pub async fn wait_outcome(&self, outcome: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let decisions = self.get_json("/api/v1/decisions?limit=1000").await;
            if let Some(found) = decisions.as_array().unwrap().iter().find(|d| d["outcome"] == outcome) {
                return found.clone();
            }
            assert!(Instant::now() < deadline, "no {outcome} decision after {within:?}: {decisions}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GET with alertprof's bearer token.
    pub async fn get_json_auth(&self, path: &str, token: &str) -> Value {
        client().get(self.url(path)).bearer_auth(token).send().await.unwrap().json().await.unwrap()
    }

    pub async fn get_text(&self, path: &str) -> String {
        client().get(self.url(path)).send().await.unwrap().text().await.unwrap()
    }

    /// The latest `alertprof_signal` of a target's signal, from /metrics.
    pub async fn signal(&self, target: &str, signal: &str) -> Option<f64> {
        let metrics = self.get_text("/metrics").await;
        let wanted = format!("alertprof_signal{{target=\"{target}\",signal=\"{signal}\"}} ");
        metrics.lines().find_map(|line| line.strip_prefix(&wanted)).and_then(|v| v.trim().parse().ok())
    }

    /// Waits until `signal` of `target` satisfies `ok`; returns the value.
    pub async fn wait_signal(
        &self,
        target: &str,
        signal: &str,
        within: Duration,
        ok: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            let value = self.signal(target, signal).await;
            if let Some(value) = value.filter(|v| ok(*v)) {
                return value;
            }
            assert!(Instant::now() < deadline, "{target} {signal} is {value:?} after {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn get_json(&self, path: &str) -> Value {
        client().get(self.url(path)).send().await.unwrap().json().await.unwrap()
    }

    /// Waits until at least `count` decisions are listed, and returns them newest first.
    pub async fn wait_decisions(&self, count: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let decisions = self.get_json("/api/v1/decisions?limit=1000").await;
            let list = decisions.as_array().cloned().unwrap_or_default();
            if list.len() >= count {
                return list;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {count} decisions after {within:?}: {list:?}",
                list.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The HTTP client alertprof uses (rustls on ring).
pub fn client() -> reqwest::Client {
    alertprof::http::client()
}

/// An Alertmanager v4 payload with one alert per (labels, fingerprint) pair, firing.
pub fn payload(alerts: &[(Value, &str)]) -> Value {
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|(labels, fingerprint)| {
            json!({
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": "test"},
                "startsAt": "2026-11-21T10:00:00.000Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.invalid/graph",
                "fingerprint": fingerprint,
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"HighCPU\"}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "alertprof",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.invalid",
        "alerts": alerts,
    })
}

/// Files in a directory (none if it does not exist), sorted.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// The Go demo target, built once per test binary with Debian's Go, offline.
pub fn demo_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-target");
        let out = std::env::temp_dir().join(format!("alertprof-demo-target-{}", std::process::id()));
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(&source)
            .env("CGO_ENABLED", "0")
            .env("GOPROXY", "off")
            .env("GOFLAGS", "-mod=mod")
            .status()
            .expect("`go` runs (apt-get install golang-go)");
        assert!(status.success(), "go build of the demo target failed");
        out
    })
}

/// A running demo target, killed on drop.
pub struct Demo {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Demo {
    pub fn start() -> Demo {
        let mut child = Command::new(demo_binary())
            .args(["-listen", "127.0.0.1:0"])
            .stderr(Stdio::piped())
            .spawn()
            .expect("demo target starts");
        let mut line = String::new();
        BufReader::new(child.stderr.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().rsplit(' ').next().unwrap().parse().expect("demo prints its address");
        Demo { child, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn get(&self, path: &str) -> String {
        client().get(format!("{}{path}", self.url())).send().await.unwrap().text().await.unwrap()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// A loopback server that answers every request with `respond`.
pub async fn fake_target<F, Fut>(respond: F) -> SocketAddr
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = axum::response::Response> + Send + 'static,
{
    fake_target_with_request(move |_| respond()).await
}

/// A loopback server that answers every request with `respond(request)`.
pub async fn fake_target_with_request<F, Fut>(respond: F) -> SocketAddr
where
    F: Fn(axum::extract::Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = axum::response::Response> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| respond(request));
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    addr
}

/// A loopback port nothing listens on.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
