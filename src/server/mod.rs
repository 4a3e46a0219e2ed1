//! HTTP in and out of the pipeline: the router (built by a function, so tests call it
//! in-process), auth, the webhook, the read API, the web page, and `serve`, which runs it
//! all until a signal says stop.

pub mod api;
pub mod auth;
mod listen;
pub mod web;
pub mod webhook;

pub use listen::BodyTimeout;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::pipeline::{App, AppError};
use auth::Area;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    App(#[from] AppError),
    #[error("cannot listen on {address}: {source}")]
    Listen { address: SocketAddr, source: std::io::Error },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// The HTTP API and web page.
pub fn router(app: Arc<App>) -> Router {
    let guard = |area: Area| middleware::from_fn_with_state((app.clone(), area), auth::require);
    // The webhook checks auth itself, before reading the body: the busiest route takes no
    // middleware, and reads the config once.
    let webhook = Router::new().route("/api/v1/alerts", post(webhook::receive_alerts));
    let api = Router::new()
        .route("/api/v1/captures", get(api::list_captures))
        .route("/api/v1/captures/{id}", get(api::get_capture))
        .route("/api/v1/captures/{id}/profile", get(api::get_profile))
        .route("/api/v1/captures/{id}/flamegraph.svg", get(api::get_flamegraph))
        .route("/api/v1/captures/{id}/diff", get(api::get_diff))
        .route("/api/v1/decisions", get(api::list_decisions))
        .route("/api/v1/recorder", get(api::recorder))
        .route("/-/reload", post(reload))
        .route_layer(guard(Area::Api));
    let metrics = Router::new().route("/metrics", get(api::metrics)).route_layer(guard(Area::Metrics));
    let health = Router::new()
        .route("/-/healthy", get(|| async { "alertprof is Healthy.\n" }))
        .route("/-/ready", get(|| async { "alertprof is Ready.\n" }))
        .route_layer(guard(Area::Health));
    // The pages ask for the same credentials with a sign-in page of their own.
    let pages = web::pages(app.clone());
    Router::new()
        .merge(webhook)
        .merge(api)
        .merge(metrics)
        .merge(health)
        .merge(pages)
        .merge(web::sign_in())
        .with_state(app)
}

/// `POST /-/reload`: 200, or 400 with every problem of the new config (the running one
/// stays).
async fn reload(State(app): State<Arc<App>>) -> Response {
    match tokio::task::spawn_blocking(move || app.reload()).await {
        Ok(Ok(())) => (StatusCode::OK, "config reloaded\n").into_response(),
        Ok(Err(error)) => (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
        Err(error) => api::ApiError::internal("Reload", error).into_response(),
    }
}

/// Runs the service until Ctrl-C or SIGTERM; SIGHUP reloads the config.
pub async fn serve(config_path: PathBuf) -> Result<(), ServeError> {
    // Signals first: a SIGHUP while starting must not end the process (its default action);
    // it is taken as a reload once the service runs.
    let signals = Signals::install().map_err(ServeError::Signals)?;
    let config = Config::load(&config_path)?;
    let address = config.listen_address;
    let grace = config.capture.shutdown_grace;
    let app = App::new(config, Some(config_path))?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Listen { address, source })?;
    // The address bound, which differs from the configured one for port 0.
    let bound = listener.local_addr().map_err(|source| ServeError::Listen { address, source })?;
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(app.clone(), signals, shutdown.clone()));
    let background = {
        let (app, shutdown) = (app.clone(), shutdown.clone());
        tokio::spawn(async move { app.run(shutdown, grace).await })
    };
    tracing::info!(address = %bound, version = env!("CARGO_PKG_VERSION"), "alertprof listening.");
    serve_http(app.clone(), listener, shutdown.clone()).await;
    background.await.ok();
    tracing::info!("alertprof stopped.");
    Ok(())
}

/// Serves the HTTP API and web page of `app` on `listener` until `shutdown`, within the
/// config's bounds; connections still open `capture.shutdown_grace` after it are closed.
pub async fn serve_http(app: Arc<App>, listener: tokio::net::TcpListener, shutdown: CancellationToken) {
    let config = app.config();
    let open = app.metrics.http_connections.clone();
    listen::serve(listener, router(app), config.http.clone(), open, shutdown, config.capture.shutdown_grace)
        .await
}

/// The signals the service acts on, registered as it starts.
struct Signals {
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals { term: signal(SignalKind::terminate())?, hup: signal(SignalKind::hangup())? })
    }
}

async fn watch_signals(app: Arc<App>, mut signals: Signals, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = signals.term.recv() => break,
            _ = signals.hup.recv() => {
                let app = app.clone();
                tokio::task::spawn_blocking(move || app.reload()).await.ok();
            }
        }
    }
    tracing::info!("Shutting down: finishing captures in flight.");
    shutdown.cancel();
}
