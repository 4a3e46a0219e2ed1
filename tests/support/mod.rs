//! Shared test fixtures: alertprof in-process on a loopback port, the Go demo target built
//! and started for real, and small HTTP servers that misbehave on purpose.
#![allow(dead_code)]

pub mod cgroup;
mod child;
pub mod grafana;
pub mod moto;
pub mod oneshot;
pub mod profiles;
pub mod pyroscope;
mod serve;
pub mod servers;
pub mod shipped;

pub use child::Killed;
#[allow(unused_imports)]
pub use serve::Serve;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use alertprof::config::Config;
use alertprof::pipeline::App;
use alertprof::store::ProfileStore;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// alertprof running in this process on an ephemeral loopback port.
pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub shutdown: CancellationToken,
    server: JoinHandle<()>,
    background: JoinHandle<()>,
}

impl Running {
    /// Starts alertprof with config text; `{data}` in it is replaced by `data`.
    pub async fn start(yaml: &str, data: &Path) -> Running {
        Running::start_on(yaml, data, Running::listener().await).await
    }

    /// Starts alertprof on a loopback port of its own.
    pub async fn start_on(yaml: &str, data: &Path, listener: tokio::net::TcpListener) -> Running {
        let config = Running::config(yaml, data);
        let app = App::new(config, None).expect("alertprof starts");
        Running::run(app, listener).await
    }

    /// A loopback listener for `start_on`, when the config must name its port (say, in
    /// `external_url`).
    pub async fn listener() -> tokio::net::TcpListener {
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
    }

    /// Starts alertprof keeping its profiles in `store`.
    pub async fn start_with_store(yaml: &str, data: &Path, store: Arc<ProfileStore>) -> Running {
        let config = Running::config(yaml, data);
        let app = App::with_store(config, None, store).expect("alertprof starts");
        Running::run(app, Running::listener().await).await
    }

    fn config(yaml: &str, data: &Path) -> Config {
        alertprof::init();
        let text = yaml.replace("{data}", &data.display().to_string());
        Config::parse(&text, data).unwrap_or_else(|e| panic!("test config invalid: {e:?}\n{text}"))
    }

    async fn run(app: Arc<App>, listener: tokio::net::TcpListener) -> Running {
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(alertprof::server::serve_http(app.clone(), listener, shutdown.clone()));
        let background = {
            let (app, shutdown) = (app.clone(), shutdown.clone());
            tokio::spawn(async move { app.run(shutdown, Duration::from_secs(5)).await })
        };
        Running { addr, app, shutdown, server, background }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Shuts down as on SIGTERM and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.unwrap();
        self.background.await.unwrap();
    }

    pub async fn post_alerts(&self, payload: &Value) -> (u16, Value) {
        let response = client().post(self.url("/api/v1/alerts")).json(payload).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Waits for the newest decision with `outcome` and returns it.
    pub async fn wait_outcome(&self, outcome: &str, within: Duration) -> Value {
        eventually(&format!("a {outcome} decision"), within, async || {
            let decisions = self.get_json("/api/v1/decisions?limit=1000").await;
            let found = decisions.as_array().unwrap().iter().find(|d| d["outcome"] == outcome).cloned();
            found.ok_or_else(|| decisions.to_string())
        })
        .await
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
        eventually(&format!("{target} {signal}"), within, async || {
            let value = self.signal(target, signal).await;
            value.filter(|v| ok(*v)).ok_or_else(|| format!("{value:?}"))
        })
        .await
    }

    /// The value of a series of /metrics (`name{labels}` as exposed), 0 if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        metric(&self.get_text("/metrics").await, series)
    }

    /// Waits until a series of /metrics satisfies `ok`; returns its value.
    pub async fn wait_metric(&self, series: &str, within: Duration, ok: impl Fn(f64) -> bool) -> f64 {
        eventually(series, within, async || {
            let value = self.metric(series).await;
            if ok(value) { Ok(value) } else { Err(value.to_string()) }
        })
        .await
    }

    pub async fn get_json(&self, path: &str) -> Value {
        client().get(self.url(path)).send().await.unwrap().json().await.unwrap()
    }

    /// Waits until at least `count` decisions are listed, and returns them newest first.
    pub async fn wait_decisions(&self, count: usize, within: Duration) -> Vec<Value> {
        eventually(&format!("{count} decisions"), within, async || {
            let decisions = self.get_json("/api/v1/decisions?limit=1000").await;
            let list = decisions.as_array().cloned().unwrap_or_default();
            if list.len() >= count { Ok(list) } else { Err(format!("{} of them: {list:?}", list.len())) }
        })
        .await
    }
}

/// Waits until `check` gives a value, asking every 50 ms, and returns it; fails the test
/// after `within`, saying what it waited for and, if `check` says (`Err`), what it saw last.
/// The one poll-until-deadline loop of the tests.
pub async fn eventually<C: Check>(
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> C,
) -> C::Value {
    let deadline = Instant::now() + within;
    loop {
        let seen = match check().await.found() {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(Instant::now() < deadline, "waited {within:?} for {what}{seen}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a check of `eventually` gives: `Option<T>`, the value or not yet; or
/// `Result<T, String>`, the value or what was there instead.
pub trait Check {
    type Value;
    /// The value, or what to add to the failure when there is none in time.
    fn found(self) -> Result<Self::Value, String>;
}

impl<T> Check for Option<T> {
    type Value = T;
    fn found(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T> Check for Result<T, String> {
    type Value = T;
    fn found(self) -> Result<T, String> {
        self.map_err(|seen| format!("; last seen: {seen}"))
    }
}

/// The HTTP client alertprof uses (rustls on ring).
pub fn client() -> reqwest::Client {
    alertprof::init();
    alertprof::http::client()
}

/// The number after `series ` in metrics text, 0 if absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// When the test alerts started firing: a minute before the test binary's first alert,
/// the same for every alert of one binary (copies of an alert are the same alert), and
/// never a fixed date that ages past a TTL.
pub fn alerts_start() -> String {
    static START: OnceLock<String> = OnceLock::new();
    START
        .get_or_init(|| {
            let start = chrono::Utc::now() - chrono::Duration::minutes(1);
            start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        })
        .clone()
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
                "startsAt": alerts_start(),
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

/// The rows of `go tool pprof -top` for a profile; it must open it.
pub fn pprof_top(file: &Path) -> Vec<String> {
    let output = Command::new("go").args(["tool", "pprof", "-top"]).arg(file).output().expect("go runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "go tool pprof -top {}: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let rows = text.lines().skip_while(|line| !line.trim_start().starts_with("flat")).skip(1);
    rows.filter(|line| !line.trim().is_empty()).map(str::to_string).collect()
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
    pub child: Killed,
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
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        stderr.read_line(&mut line).unwrap();
        // Read on, so that what it logs later never meets a closed pipe (Go exits on it).
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        let addr = line.trim().rsplit(' ').next().unwrap().parse().expect("demo prints its address");
        Demo { child: Killed(child), addr }
    }

    /// The demo as a config's target entry named `demo` (alerts with `job: demo`), its
    /// process found by its port, under `targets:`.
    pub fn target(&self) -> String {
        format!(
            "  - name: demo\n    pprof_url: {url}\n    metrics_url: {url}/metrics\n    \
             process: {{listen_port: {port}}}\n    alert_labels: {{job: demo}}\n",
            url = self.url(),
            port = self.addr.port()
        )
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn get(&self, path: &str) -> String {
        client().get(format!("{}{path}", self.url())).send().await.unwrap().text().await.unwrap()
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

/// A loopback port that is bound, so nothing else can take it, but not listening:
/// connections to it are refused for as long as it is held.
pub struct ClosedPort(tokio::net::TcpSocket);

impl ClosedPort {
    pub fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// Starts listening on the port: what was down is up, at the same address.
    pub fn open(self) -> tokio::net::TcpListener {
        self.0.listen(64).unwrap()
    }
}

pub fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    ClosedPort(socket)
}

/// What alertprof logs in this test binary, from the first call on (a global subscriber;
/// tests running at the same time log here too, so look for your own lines).
pub fn logs() -> String {
    static LOGS: OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = OnceLock::new();
    let logs = LOGS.get_or_init(|| {
        let logs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber =
            tracing_subscriber::fmt().with_ansi(false).with_writer(move || LogWriter(sink.clone())).finish();
        tracing::subscriber::set_global_default(subscriber).expect("the first subscriber");
        logs
    });
    String::from_utf8_lossy(&logs.lock().unwrap()).into_owned()
}

struct LogWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
