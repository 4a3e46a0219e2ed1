//! Analyses of stored profiles (new captures' summaries, flame graphs and diffs asked for):
//! each bounded, and so is their number.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::analyze::Budget;
use crate::metrics::Counted;
use crate::store::ProfileStore;

/// Analyses running at once: one per core here.
const AT_ONCE: usize = 2;

/// Runs analyses of stored profiles off the async threads, a few at a time.
#[derive(Clone)]
pub struct Analyses {
    /// A turn is held until the work itself has ended, not only until nobody waits for it.
    turns: Arc<Semaphore>,
    store: Arc<ProfileStore>,
    /// Stops every analysis when the shutdown grace has passed.
    abort: CancellationToken,
    /// `alertprof_analyses_running`.
    running: Gauge,
}

impl Analyses {
    pub fn new(store: Arc<ProfileStore>, abort: CancellationToken, running: Gauge) -> Analyses {
        Analyses { turns: Arc::new(Semaphore::new(AT_ONCE)), store, abort, running }
    }

    /// Runs `work` within a budget of `time` per walk, one of a few at a time, stopped by
    /// shutdown or when this future is dropped (a client that went away).
    pub async fn run<T: Send + 'static>(
        &self,
        time: Duration,
        work: impl FnOnce(&ProfileStore, &Budget) -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        let turn = self.turns.clone().acquire_owned().await.expect("never closed");
        let cancel = self.abort.child_token();
        let _stop_if_dropped = cancel.clone().drop_guard();
        let budget = Budget::new(time).with_cancel(cancel);
        let (store, running) = (self.store.clone(), Counted::new(&self.running));
        tokio::task::spawn_blocking(move || {
            // Both are let go when the work ends, however it ends.
            let _held = (turn, running);
            work(store.as_ref(), &budget)
        })
        .await
    }
}
