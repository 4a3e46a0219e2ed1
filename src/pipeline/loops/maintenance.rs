//! Keeps the store and the gate state within their bounds while running: retention and
//! the gate's pruning every minute, the shared bucket's claims pruned, and a shared store
//! listed for what other instances kept or deleted.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::gate::{Claims, Gate};
use crate::metrics::Metrics;
use crate::pipeline::retention::Retention;
use crate::store::ProfileStore;

/// How often retention and gate maintenance run besides after each capture.
const MAINTAIN_EVERY: Duration = Duration::from_secs(60);
/// How often a shared store is listed for what other instances kept or deleted, at most.
const REFRESH_EVERY: Duration = Duration::from_secs(10);

pub struct Maintenance {
    pub store: Arc<ProfileStore>,
    pub retention: Retention,
    pub gate: Arc<Gate>,
    pub claims: Option<Arc<Claims>>,
    pub metrics: Arc<Metrics>,
}

impl Maintenance {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(MAINTAIN_EVERY);
        let mut next_refresh = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    self.retention.enforce().await;
                    self.gate.maintain(Utc::now()).await;
                    self.prune_claims().await;
                }
                () = tokio::time::sleep_until(next_refresh), if self.store.shared() => {
                    let started = tokio::time::Instant::now();
                    self.refresh().await;
                    // A listing that takes long (a large bucket) is spaced out: the
                    // bucket is listed at most a fifth of the time.
                    next_refresh = tokio::time::Instant::now() + REFRESH_EVERY.max(started.elapsed() * 4);
                }
                () = shutdown.cancelled() => break,
            }
        }
    }

    /// Takes in what other instances kept in a shared store, off the async threads.
    async fn refresh(&self) {
        let store = self.store.clone();
        let refreshed = tokio::task::spawn_blocking(move || store.refresh()).await;
        self.metrics.store_up.set(i64::from(self.store.trouble().is_none()));
        match refreshed {
            Ok(Ok(_)) => {}
            // The store says when its trouble starts and ends.
            Ok(Err(error)) => {
                tracing::debug!(error = %error, "Cannot refresh the capture index from the store.")
            }
            Err(error) => tracing::error!(error = %error, "Store refresh task failed."),
        }
    }

    /// Deletes claims in a shared bucket that are over, off the async threads.
    async fn prune_claims(&self) {
        let Some(claims) = self.claims.clone() else { return };
        match tokio::task::spawn_blocking(move || claims.prune(Utc::now())).await {
            Ok(Ok(0)) => {}
            Ok(Ok(pruned)) => tracing::debug!(pruned, "Claims that are over deleted from the bucket."),
            Ok(Err(error)) => tracing::warn!(error = %error, "Cannot prune the bucket's claims."),
            Err(error) => tracing::error!(error = %error, "Claim pruning task failed."),
        }
    }
}
