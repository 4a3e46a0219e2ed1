//! Retention, run after captures are kept and by the minute's maintenance.

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::store::ProfileStore;

#[derive(Clone)]
pub struct Retention {
    store: Arc<ProfileStore>,
    metrics: Arc<Metrics>,
}

impl Retention {
    pub fn new(store: Arc<ProfileStore>, metrics: Arc<Metrics>) -> Retention {
        Retention { store, metrics }
    }

    /// Deletes what is past the retention limits, off the async threads.
    pub async fn enforce(&self) {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.enforce_retention()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(deleted)) => self.metrics.retention_deleted(deleted),
            Ok(Err(error)) => tracing::error!(error = %error, "Retention failed."),
            Err(error) => tracing::error!(error = %error, "Retention task failed."),
        }
    }
}
