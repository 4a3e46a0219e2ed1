//! Wiring: the shared state, the HTTP router, the job workers, reload and shutdown.

mod pipeline;
mod watch;

pub use pipeline::{grew_line, refusal_outcome, top_line};
pub use watch::{run_sampling, sampling_interval};

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::annotate::GrafanaClient;
use crate::capture::PprofClient;
use crate::config::{Config, ConfigError, Credentials};
use crate::decision::{Decision, DecisionLog, Outcome};
use crate::gate::Gate;
use crate::intake::IntakeError;
use crate::metrics::Metrics;
use crate::rules::Job;
use crate::store::{LocalStore, ProfileStore, StoreError};
use crate::verify::Verifier;

/// Decisions kept for the API.
const DECISIONS_KEPT: usize = 1000;
/// Jobs taken off the queue at once.
const BATCH: usize = 64;
/// How often retention runs besides after each capture.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {address}: {source}")]
    Listen { address: String, source: std::io::Error },
}

/// Everything the handlers and workers share.
pub struct App {
    /// Swapped whole on reload; jobs keep the snapshot they were made with.
    config: RwLock<Arc<Config>>,
    /// Where `/-/reload` re-reads the config from; `None` in tests that build a config.
    config_path: Option<PathBuf>,
    pub store: Arc<dyn ProfileStore>,
    pub gate: Gate,
    pub client: PprofClient,
    /// Rebuilt on reload; `None` without a `grafana` section.
    grafana: RwLock<Option<GrafanaClient>>,
    pub verifier: Verifier,
    pub decisions: DecisionLog,
    pub metrics: Metrics,
    queue_tx: mpsc::Sender<Job>,
    /// Every running job, from alerts and watch rules, so shutdown can wait for them.
    pub jobs: TaskTracker,
    /// Cancels captures still running when the shutdown grace has passed.
    pub abort: CancellationToken,
    /// Told when the config was reloaded, so sampling starts over with it.
    pub reloaded: tokio::sync::Notify,
}

impl App {
    /// Opens the store and gate state and makes the job queue; the receiver goes to
    /// `run_workers`.
    pub fn new(
        config: Config,
        config_path: Option<PathBuf>,
    ) -> Result<(Arc<App>, mpsc::Receiver<Job>), AppError> {
        let store = LocalStore::open(&config.storage)?;
        let gate = Gate::open(&store.state_dir(), config.gate.dedupe_ttl, config.gate.max_in_flight)?;
        let (queue_tx, queue_rx) = mpsc::channel(config.gate.queue_size);
        let metrics = Metrics::new();
        metrics.queue_capacity.set(config.gate.queue_size as i64);
        let app = App {
            client: PprofClient::new(config.capture.clone()),
            verifier: Verifier::new(config.history, stale_after(&config)),
            grafana: RwLock::new(grafana_client(&config)),
            config: RwLock::new(Arc::new(config)),
            config_path,
            store: Arc::new(store),
            gate,
            decisions: DecisionLog::new(DECISIONS_KEPT),
            metrics,
            queue_tx,
            jobs: TaskTracker::new(),
            abort: CancellationToken::new(),
            reloaded: tokio::sync::Notify::new(),
        };
        Ok((Arc::new(app), queue_rx))
    }

    pub fn grafana(&self) -> Option<GrafanaClient> {
        self.grafana.read().unwrap().clone()
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap().clone()
    }

    /// Reserves queue places for `count` jobs at once, or none: a payload is queued whole
    /// or answered 503 for Alertmanager to retry.
    pub fn reserve(&self, count: usize) -> Result<impl Iterator<Item = mpsc::Permit<'_, Job>>, IntakeError> {
        self.queue_tx.try_reserve_many(count).map_err(|error| match error {
            mpsc::error::TrySendError::Closed(()) => IntakeError::ShuttingDown,
            mpsc::error::TrySendError::Full(()) => {
                IntakeError::QueueFull { capacity: self.queue_tx.max_capacity() }
            }
        })
    }

    pub fn sync_queue_depth(&self) {
        let depth = self.queue_tx.max_capacity() - self.queue_tx.capacity();
        self.metrics.queue_depth.set(depth as i64);
    }

    /// Re-reads the config file; on any problem the running config stays.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let Some(path) = &self.config_path else {
            return Ok(());
        };
        match Config::load(path) {
            Ok(new) => {
                let old = self.config();
                for (what, changed) in [
                    ("listen_address", old.listen_address != new.listen_address),
                    ("storage", format!("{:?}", old.storage) != format!("{:?}", new.storage)),
                    ("gate", format!("{:?}", old.gate) != format!("{:?}", new.gate)),
                    ("capture", format!("{:?}", old.capture) != format!("{:?}", new.capture)),
                    ("webhook.max_body_size", old.webhook.max_body_bytes != new.webhook.max_body_bytes),
                ] {
                    if changed {
                        tracing::warn!(setting = what, "Changed setting takes effect only after a restart.");
                    }
                }
                *self.grafana.write().unwrap() = grafana_client(&new);
                *self.config.write().unwrap() = Arc::new(new);
                self.reloaded.notify_one();
                self.metrics.config_reload_success.set(1);
                tracing::info!(path = %path.display(), "Config reloaded.");
                Ok(())
            }
            Err(error) => {
                self.metrics.config_reload_success.set(0);
                tracing::error!(error = %error, "Config reload failed; keeping the running config.");
                Err(error)
            }
        }
    }

    pub fn record(&self, decision: Decision) {
        self.decisions.record(decision, &self.metrics);
    }
}

fn grafana_client(config: &Config) -> Option<GrafanaClient> {
    config.grafana.as_ref().map(|grafana| GrafanaClient::new(grafana, &config.external_url))
}

/// Readings older than this verify nothing: a few missed samples, not one late scrape.
fn stale_after(config: &Config) -> Duration {
    config.sample_interval * 3 + Duration::from_secs(5)
}

/// The HTTP API. Built by a function so tests call it in-process.
pub fn router(app: Arc<App>) -> Router {
    let guard = |area: Area| middleware::from_fn_with_state((app.clone(), area), require_auth);
    // The webhook checks auth itself, before reading the body: the busiest route takes no
    // middleware, and reads the config once.
    let webhook = Router::new().route("/api/v1/alerts", post(crate::intake::receive_alerts));
    let api = Router::new()
        .route("/api/v1/captures", get(crate::api::list_captures))
        .route("/api/v1/captures/{id}", get(crate::api::get_capture))
        .route("/api/v1/captures/{id}/profile", get(crate::api::get_profile))
        .route("/api/v1/captures/{id}/flamegraph.svg", get(crate::api::get_flamegraph))
        .route("/api/v1/captures/{id}/diff", get(crate::api::get_diff))
        .route("/api/v1/decisions", get(crate::api::list_decisions))
        .route("/-/reload", post(reload))
        .route_layer(guard(Area::Api));
    let metrics = Router::new().route("/metrics", get(crate::api::metrics)).route_layer(guard(Area::Metrics));
    let health = Router::new()
        .route("/-/healthy", get(|| async { "alertprof is Healthy.\n" }))
        .route("/-/ready", get(|| async { "alertprof is Ready.\n" }))
        .route_layer(guard(Area::Health));
    let pages = crate::web::pages().route_layer(guard(Area::Page));
    Router::new()
        .merge(webhook)
        .merge(api)
        .merge(metrics)
        .merge(health)
        .merge(pages)
        .merge(crate::web::sign_in())
        .with_state(app)
}

/// Which endpoints a request is for, as far as auth goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// `/api/*` and `POST /-/reload`: always behind `auth` when it is set.
    Api,
    Metrics,
    Health,
    /// The web page: behind `auth` like the API, asking a browser to sign in.
    Page,
}

async fn reload(State(app): State<Arc<App>>) -> Response {
    match tokio::task::spawn_blocking(move || app.reload()).await {
        Ok(Ok(())) => (StatusCode::OK, "config reloaded\n").into_response(),
        Ok(Err(error)) => (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Asks for the configured bearer token or basic credentials where the config says so;
/// secrets are compared in constant time.
async fn require_auth(
    State((app, area)): State<(Arc<App>, Area)>,
    headers: HeaderMap,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    match auth_refusal(&app.config(), area, request.method(), &headers) {
        None => next.run(request).await,
        Some(refusal) => refusal,
    }
}

/// The answer to a request for `area` that lacks the credentials the config asks for, if
/// it does.
pub fn auth_refusal(config: &Config, area: Area, method: &Method, headers: &HeaderMap) -> Option<Response> {
    let auth = config.auth.as_ref()?;
    let needed = match area {
        Area::Api | Area::Page => true,
        Area::Metrics => auth.protect_metrics,
        Area::Health => auth.protect_health,
    };
    // A browser's session cookie reads, never writes: no other site can post through it.
    let reads = matches!(*method, Method::GET | Method::HEAD);
    if !needed
        || crate::api::authorized(&auth.credentials, headers)
        || (reads && crate::web::session_authorized(&auth.credentials, headers))
    {
        return None;
    }
    if area == Area::Page {
        return Some(crate::web::unauthorized(&auth.credentials));
    }
    let challenge = match auth.credentials {
        Credentials::Bearer(_) => "Bearer realm=\"alertprof\"",
        Credentials::Basic { .. } => "Basic realm=\"alertprof\"",
    };
    Some((StatusCode::UNAUTHORIZED, [("www-authenticate", challenge)], "unauthorized\n").into_response())
}

/// Takes jobs off the queue and runs each as a task, at most `max_in_flight` jobs at a
/// time, until `shutdown`; then waits up to `grace` for running jobs, cancels what is
/// left, and records queued jobs as dropped.
pub async fn run_workers(
    app: Arc<App>,
    mut queue_rx: mpsc::Receiver<Job>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let tracker = app.jobs.clone();
    let jobs = Arc::new(tokio::sync::Semaphore::new(app.config().gate.max_in_flight));
    let retention = {
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(RETENTION_EVERY);
            loop {
                tokio::select! {
                    _ = ticks.tick() => pipeline::enforce_retention(&app).await,
                    () = shutdown.cancelled() => break,
                }
            }
        })
    };
    let mut batch = Vec::with_capacity(BATCH);
    let mut left = Vec::new();
    'run: loop {
        let received = tokio::select! {
            received = queue_rx.recv_many(&mut batch, BATCH) => received,
            () = shutdown.cancelled() => break,
        };
        if received == 0 {
            break;
        }
        app.sync_queue_depth();
        let mut jobs_in_batch = batch.drain(..);
        while let Some(job) = jobs_in_batch.next() {
            // What the gate refuses at once (a duplicate, a cooldown) is decided here,
            // with no task to start: most of an alert storm.
            if let Some(decision) = pipeline::refused_at_once(&app, &job) {
                app.record(decision);
                continue;
            }
            let permit = tokio::select! {
                permit = jobs.clone().acquire_owned() => permit.expect("never closed"),
                () = shutdown.cancelled() => {
                    left.push(job);
                    left.extend(jobs_in_batch);
                    break 'run;
                }
            };
            let app = app.clone();
            tracker.spawn(async move {
                pipeline::run_job(&app, job, Some(permit)).await;
            });
        }
    }
    queue_rx.close();
    while let Some(job) = left.pop().or_else(|| queue_rx.try_recv().ok()) {
        app.record(pipeline::decision_for(&job, Outcome::Dropped, "alertprof shut down before the job ran"));
    }
    app.sync_queue_depth();
    retention.await.ok();
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "Captures still running after the grace period; cancelling them."
        );
        app.abort.cancel();
        tracker.wait().await;
    }
}

/// Runs the service until Ctrl-C or SIGTERM; SIGHUP reloads the config.
pub async fn serve(config_path: PathBuf) -> Result<(), AppError> {
    let config = Config::load(&config_path)?;
    let address = config.listen_address;
    let grace = config.capture.shutdown_grace;
    let (app, queue_rx) = App::new(config, Some(config_path))?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| AppError::Listen { address: address.to_string(), source })?;
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(app.clone(), shutdown.clone()));
    let sampling = tokio::spawn(run_sampling(app.clone(), shutdown.clone()));
    let workers = tokio::spawn(run_workers(app.clone(), queue_rx, shutdown.clone(), grace));
    tracing::info!(address = %address, version = env!("CARGO_PKG_VERSION"), "alertprof listening.");
    let server =
        axum::serve(listener, router(app.clone())).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    if let Err(error) = server.await {
        tracing::error!(error = %error, "HTTP server failed.");
        shutdown.cancel();
    }
    sampling.await.ok();
    workers.await.ok();
    tracing::info!("alertprof stopped.");
    Ok(())
}

async fn watch_signals(app: Arc<App>, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        tracing::error!("Cannot install signal handlers.");
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                let app = app.clone();
                tokio::task::spawn_blocking(move || app.reload()).await.ok();
            }
        }
    }
    tracing::info!("Shutting down: finishing captures in flight.");
    shutdown.cancel();
}
