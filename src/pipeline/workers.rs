//! Takes jobs off the queue and runs them, at most `gate.max_in_flight` at a time, and
//! keeps the store and the gate state within their bounds while running.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::App;
use super::job::{decision_for, refused_at_once, run_job};
use crate::model::Outcome;
use crate::rules::Job;

/// Jobs taken off the queue at once.
const BATCH: usize = 64;
/// How often retention and gate maintenance run besides after each capture.
const MAINTAIN_EVERY: Duration = Duration::from_secs(60);
/// How often a shared store is listed for what other instances kept or deleted, at most.
const REFRESH_EVERY: Duration = Duration::from_secs(10);

/// Takes jobs off the queue and runs each as a task, at most `max_in_flight` jobs at a
/// time, until `shutdown`; then records queued jobs as dropped, waits up to `grace` for
/// running jobs and cancels what is left.
pub async fn run_workers(
    app: Arc<App>,
    mut queue_rx: mpsc::Receiver<Job>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let jobs = Arc::new(tokio::sync::Semaphore::new(app.config().gate.max_in_flight));
    let maintenance = {
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(MAINTAIN_EVERY);
            let mut next_refresh = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = ticks.tick() => {
                        enforce_retention(&app).await;
                        app.gate.maintain(Utc::now()).await;
                        prune_claims(&app).await;
                    }
                    () = tokio::time::sleep_until(next_refresh) => {
                        let started = tokio::time::Instant::now();
                        refresh(&app).await;
                        // A listing that takes long (a large bucket) is spaced out: the
                        // bucket is listed at most a fifth of the time.
                        next_refresh = tokio::time::Instant::now() + REFRESH_EVERY.max(started.elapsed() * 4);
                    }
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
            if let Some(decision) = refused_at_once(&app, &job) {
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
            let task_app = app.clone();
            // Only this function closes the job tracker, after this loop: the job runs.
            app.spawn_job(async move { run_job(&task_app, job, Some(permit)).await });
        }
    }
    queue_rx.close();
    while let Some(job) = left.pop().or_else(|| queue_rx.try_recv().ok()) {
        app.record(decision_for(&job, Outcome::Dropped, "alertprof shut down before the job ran"));
    }
    app.sync_queue_depth();
    maintenance.await.ok();
    app.finish_jobs(grace).await;
}

/// Deletes what is past the retention limits, off the async threads.
pub async fn enforce_retention(app: &App) {
    let store = app.store.clone();
    match tokio::task::spawn_blocking(move || store.enforce_retention()).await {
        Ok(Ok(0)) => {}
        Ok(Ok(deleted)) => app.metrics.retention_deleted(deleted),
        Ok(Err(error)) => tracing::error!(error = %error, "Retention failed."),
        Err(error) => tracing::error!(error = %error, "Retention task failed."),
    }
}

/// Takes in what other instances kept in a shared store, off the async threads.
async fn refresh(app: &App) {
    let store = app.store.clone();
    let refreshed = tokio::task::spawn_blocking(move || store.refresh()).await;
    app.metrics.store_up.set(i64::from(app.store.trouble().is_none()));
    match refreshed {
        Ok(Ok(_)) => {}
        // The store says when its trouble starts and ends.
        Ok(Err(error)) => tracing::debug!(error = %error, "Cannot refresh the capture index from the store."),
        Err(error) => tracing::error!(error = %error, "Store refresh task failed."),
    }
}

/// Deletes claims in a shared bucket that are over, off the async threads.
async fn prune_claims(app: &App) {
    let Some(claims) = app.claims.clone() else { return };
    match tokio::task::spawn_blocking(move || claims.prune(Utc::now())).await {
        Ok(Ok(0)) => {}
        Ok(Ok(pruned)) => tracing::debug!(pruned, "Claims that are over deleted from the bucket."),
        Ok(Err(error)) => tracing::warn!(error = %error, "Cannot prune the bucket's claims."),
        Err(error) => tracing::error!(error = %error, "Claim pruning task failed."),
    }
}
