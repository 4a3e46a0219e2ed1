//! alertprof catches performance spikes of Go services in the act: when an alert (or its
//! own watch loop) says CPU, memory or goroutines spike, it re-checks locally, fetches pprof
//! profiles from the service, keeps them safely and marks the moment in Grafana.
//!
//! In layers, each using only those below it (`.ci/layers` checks):
//! - Values and formats: [`model`] (kinds, alerts, triggers, decisions, captures, text),
//!   [`profile`] (profile.proto), [`http`] (the outgoing client), [`durable`] (atomic writes).
//! - [`config`] — the YAML, validated once into typed values.
//! - The stages, pure where they can be:
//!   [`intake`] (a payload into jobs and decisions), [`rules`] (which rules and targets; the
//!   `Job`), [`verify`] (local readings), [`gate`] (dedupe, cooldown, concurrency),
//!   [`capture`] (fetch and validate), [`store`] (keep, index, retention), [`analyze`]
//!   (top functions, diffs, flame graphs), [`annotate`] (Grafana), [`metrics`], [`recorder`]
//!   (each recorded target's recent profiles, and the end of its process), [`perf`] (CPU
//!   profiles sampled with perf events and symbolized on the host), [`pyroscope`] (kept
//!   profiles pushed to Pyroscope from a queue on disk; links to their views).
//! - [`pipeline`] — the `App` state, workers, one job end to end, watch, reload.
//! - [`server`] — the router, auth, webhook, API, web page, and `serve`.

pub mod analyze;
pub mod annotate;
pub mod bucket;
pub mod capture;
pub mod config;
pub mod durable;
pub mod gate;
pub mod http;
pub mod intake;
pub mod manual;
pub mod metrics;
pub mod model;
pub mod perf;
pub mod pipeline;
pub mod profile;
pub mod pyroscope;
pub mod recorder;
pub mod rules;
pub mod server;
pub mod store;
#[cfg(test)]
mod testing;
pub mod verify;

// The unit tests share files with the integration tests, which name the crate `alertprof`.
#[cfg(test)]
extern crate self as alertprof;

/// Process-wide set-up, once, before anything else: `main` calls it first, and so do the
/// tests and benchmarks. Installs rustls on ring as the TLS provider of every HTTP client,
/// alertprof's own and the object store's. Calling it again does nothing.
pub fn init() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(http::install_tls_provider);
}
