//! Between intake and the workers: the bounded queue of jobs, taken whole or not at all,
//! and the jobs running, which shutdown waits for.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::decisions::DecisionLog;
use super::job::outcome::decision_for;
use crate::metrics::Metrics;
use crate::model::Outcome;
use crate::rules::Job;

/// Why jobs were not queued. None of them was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("queue full ({capacity} jobs); retry later")]
    Full { capacity: usize },
    #[error("alertprof is shutting down")]
    ShuttingDown,
}

/// The queue's sending end, shared by the webhook, the poller and the workers' gauge.
#[derive(Clone)]
pub struct JobQueue {
    tx: mpsc::Sender<Job>,
    /// Held while a payload larger than the whole queue goes in, so only one does at a time.
    spilling: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    /// Where a spilled payload's jobs go as dropped when shutdown comes first.
    decisions: DecisionLog,
}

impl JobQueue {
    /// A queue of `capacity` jobs; the receiver goes to the workers.
    pub fn new(
        capacity: usize,
        metrics: Arc<Metrics>,
        decisions: DecisionLog,
    ) -> (JobQueue, mpsc::Receiver<Job>) {
        let (tx, rx) = mpsc::channel(capacity);
        metrics.queue_capacity.set(capacity as i64);
        (JobQueue { tx, spilling: Arc::new(Semaphore::new(1)), metrics, decisions }, rx)
    }

    /// Queues jobs all at once, or none: a payload is queued whole or answered 503 for
    /// Alertmanager to retry. A payload with more jobs than the whole queue holds could never
    /// be queued whole: it is taken, and its jobs go in as places free up (one such payload
    /// at a time; another is answered 503 meanwhile).
    pub fn enqueue(&self, jobs: Vec<Job>) -> Result<(), QueueError> {
        let capacity = self.tx.max_capacity();
        match self.tx.try_reserve_many(jobs.len()) {
            Ok(permits) => permits.zip(jobs).for_each(|(permit, job)| permit.send(job)),
            Err(mpsc::error::TrySendError::Closed(())) => return Err(QueueError::ShuttingDown),
            Err(mpsc::error::TrySendError::Full(())) if jobs.len() <= capacity => {
                return Err(QueueError::Full { capacity });
            }
            Err(mpsc::error::TrySendError::Full(())) => {
                let turn =
                    self.spilling.clone().try_acquire_owned().map_err(|_| QueueError::Full { capacity })?;
                tracing::info!(
                    jobs = jobs.len(),
                    capacity,
                    "A payload larger than the queue goes in as places free up."
                );
                let queue = self.clone();
                tokio::spawn(async move {
                    let _turn = turn;
                    queue.spill(jobs).await;
                });
            }
        }
        self.sync_depth();
        Ok(())
    }

    /// Sends jobs one by one as places free up; those left at shutdown are dropped.
    async fn spill(&self, jobs: Vec<Job>) {
        let mut jobs = jobs.into_iter();
        while let Some(job) = jobs.next() {
            if let Err(mpsc::error::SendError(job)) = self.tx.send(job).await {
                let reason = "alertprof shut down before the job ran";
                let dropped =
                    std::iter::once(job).chain(jobs).map(|job| decision_for(&job, Outcome::Dropped, reason));
                self.decisions.record_all(dropped);
                break;
            }
            self.sync_depth();
        }
    }

    /// `alertprof_queue_depth`, as the queue holds now.
    pub fn sync_depth(&self) {
        let depth = self.tx.max_capacity() - self.tx.capacity();
        self.metrics.queue_depth.set(depth as i64);
    }
}

/// The jobs running, from alerts, watch rules and exits, so that shutdown can wait for
/// them.
#[derive(Clone)]
pub struct RunningJobs {
    tracker: TaskTracker,
    /// Held while a job is spawned or the tracker closed, so that no job starts after
    /// shutdown stopped waiting for jobs.
    spawning: Arc<Mutex<()>>,
    /// Cancels captures and annotations still running when the shutdown grace has passed.
    abort: CancellationToken,
}

impl RunningJobs {
    pub fn new(abort: CancellationToken) -> RunningJobs {
        RunningJobs { tracker: TaskTracker::new(), spawning: Arc::default(), abort }
    }

    /// Runs a job's work as a task shutdown waits for; `false` (and nothing runs) once
    /// shutdown has stopped taking jobs.
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) -> bool {
        let _spawning = self.spawning.lock().unwrap();
        if self.tracker.is_closed() {
            return false;
        }
        self.tracker.spawn(work);
        true
    }

    /// Takes no more jobs and waits up to `grace` for those running; then cancels what is
    /// left (captures fail, annotations stop) and waits for it to wind up.
    pub async fn finish(&self, grace: Duration) {
        {
            let _spawning = self.spawning.lock().unwrap();
            self.tracker.close();
        }
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_err() {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "Captures still running after the grace period; cancelling them."
            );
            self.abort.cancel();
            self.tracker.wait().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Once shutdown has stopped taking jobs (and stopped waiting for them), nothing more
    /// starts: a watch tick that fires just then gets `false` and records the job dropped.
    #[tokio::test]
    async fn no_job_starts_after_shutdown() {
        let jobs = RunningJobs::new(CancellationToken::new());
        let ran = Arc::new(AtomicBool::new(false));
        let before = ran.clone();
        assert!(jobs.spawn(async move { before.store(true, Ordering::SeqCst) }));
        jobs.finish(Duration::from_secs(5)).await;
        assert!(ran.load(Ordering::SeqCst), "a job started before shutdown is waited for");
        ran.store(false, Ordering::SeqCst);
        let after = ran.clone();
        assert!(!jobs.spawn(async move { after.store(true, Ordering::SeqCst) }));
        tokio::task::yield_now().await;
        assert!(!ran.load(Ordering::SeqCst));
    }
}
