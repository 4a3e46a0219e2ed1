//! alertprof catches performance spikes of Go services in the act: when an alert (or its
//! own watch loop) says CPU, memory or goroutines spike, it re-checks locally, fetches pprof
//! profiles from the service, keeps them safely and marks the moment in Grafana.
//!
//! The pipeline, one module a stage:
//! - [`intake`] — the Alertmanager webhook: parse, match, queue, answer at once.
//! - [`rules`] — which rules and targets an alert is for; the `Job`.
//! - [`verify`] — re-checks a rule's signals against local readings.
//! - [`gate`] — dedupe, cooldown, one CPU profile per target, captures in flight.
//! - [`capture`] — fetches, bounds and validates profiles from `/debug/pprof`.
//! - [`store`] — keeps profiles and metadata atomically; index and retention.
//! - [`analyze`] — top functions of each kept profile, as `go tool pprof -top`.
//! - [`annotate`] — Grafana annotations linking each kept profile.
//! - [`decision`] — one outcome with a reason for every alert × rule.
//!
//! Around it:
//! - [`config`] — the YAML, validated once into typed values.
//! - [`app`] — shared state, router, workers, reload and shutdown.
//! - [`api`] — the read-only HTTP endpoints and auth.
//! - [`web`] — the web page: captures, their profiles, decisions; browser sign-in.
//! - [`metrics`] — alertprof's own `/metrics`.
//! - [`http`] — the outgoing HTTP client.
//! - [`manual`] — `alertprof capture`: one capture from the command line.

pub mod analyze;
pub mod annotate;
pub mod api;
pub mod app;
pub mod capture;
pub mod config;
pub mod decision;
pub mod gate;
pub mod http;
pub mod intake;
pub mod manual;
pub mod metrics;
pub mod rules;
pub mod store;
pub mod verify;
pub mod web;
