//! alertprof catches performance spikes of Go services in the act: when an alert (or its
//! own watch loop) says CPU, memory or goroutines spike, it re-checks locally, captures
//! profiles of the service (its pprof endpoint, or the kernel's perf events), keeps them
//! safely and marks the moment in Grafana. `docs/ARCHITECTURE.md` follows one alert.
//!
//! In layers, each using only those below it (`.ci/layers` checks):
//! - Values and formats: [`model`] (kinds, alerts, triggers, decisions, captures, text),
//!   [`profile`] (profile.proto), [`http`] (the outgoing client), [`durable`] (atomic
//!   writes), [`bucket`] (the S3 bucket client shared by the store and the claims).
//! - [`config`]: the YAML, validated once into typed values.
//! - The stages, pure where they can be: [`intake`] (a payload into jobs), [`rules`]
//!   (which rules and targets; the `Job`), [`verify`] (local readings), [`gate`] (dedupe,
//!   cooldown, concurrency, the fleet's claims), [`capture`] (fetch and validate, or sample
//!   with [`perf`]: perf events symbolized on the host), [`store`] (keep, index,
//!   retention), [`analyze`] (top functions, diffs, flame graphs), [`annotate`] (Grafana),
//!   [`metrics`], [`recorder`] (each recorded target's recent profiles and its exit),
//!   [`pyroscope`] (kept profiles pushed from a queue on disk; links to their views).
//! - [`pipeline`]: the `App` composition root, one job end to end, and the loops.
//! - [`server`]: the router, auth, webhook, API, web pages, and `serve`; [`manual`]: the
//!   `capture` command.
//! - `testing` (tests only): fixtures shared by the unit and integration tests.

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
