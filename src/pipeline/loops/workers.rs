//! Takes jobs off the queue and runs them, at most `gate.max_in_flight` at a time, until
//! shutdown; then records the queued jobs as dropped and waits (within a grace) for those
//! running.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::model::{Outcome, Readings};
use crate::pipeline::decisions::DecisionLog;
use crate::pipeline::job::outcome::{decision_for, refusal_decision};
use crate::pipeline::job::{JobSteps, run_job};
use crate::pipeline::queue::{JobQueue, RunningJobs};
use crate::rules::Job;

/// Jobs taken off the queue at once.
const BATCH: usize = 64;

/// The queue's workers, and what they hand each job.
pub struct Workers {
    pub queue_rx: mpsc::Receiver<Job>,
    /// For the queue's depth, as jobs are taken off it.
    pub queue: JobQueue,
    pub steps: JobSteps,
    pub decisions: DecisionLog,
    pub jobs: RunningJobs,
    pub max_in_flight: usize,
}

impl Workers {
    /// Runs each job as a task until `shutdown`; then records queued jobs as dropped,
    /// waits up to `grace` for running jobs and cancels what is left.
    pub async fn run(mut self, shutdown: CancellationToken, grace: Duration) {
        let places = Arc::new(Semaphore::new(self.max_in_flight));
        let mut batch = Vec::with_capacity(BATCH);
        let mut left = Vec::new();
        'run: loop {
            let received = tokio::select! {
                received = self.queue_rx.recv_many(&mut batch, BATCH) => received,
                () = shutdown.cancelled() => break,
            };
            if received == 0 {
                break;
            }
            self.queue.sync_depth();
            let mut jobs_in_batch = batch.drain(..);
            while let Some(job) = jobs_in_batch.next() {
                // What the gate refuses at once (a duplicate, a cooldown) is decided here,
                // with no task to start: most of an alert storm.
                if let Some(decision) = self.refused_at_once(&job) {
                    self.decisions.record(decision);
                    continue;
                }
                let place = tokio::select! {
                    place = places.clone().acquire_owned() => place.expect("never closed"),
                    () = shutdown.cancelled() => {
                        left.push(job);
                        left.extend(jobs_in_batch);
                        break 'run;
                    }
                };
                let (steps, decisions) = (self.steps.clone(), self.decisions.clone());
                // Only `run` closes the running jobs, after this loop: the job runs.
                self.jobs.spawn(async move { decisions.record(run_job(&steps, job, Some(place)).await) });
            }
        }
        self.queue_rx.close();
        while let Some(job) = left.pop().or_else(|| self.queue_rx.try_recv().ok()) {
            self.decisions.record(decision_for(
                &job,
                Outcome::Dropped,
                "alertprof shut down before the job ran",
            ));
        }
        self.queue.sync_depth();
        self.jobs.finish(grace).await;
    }

    /// The decision for a job the gate refuses before anything else is done, if it does.
    /// An alert whose cgroup may be on another node is asked where it is first.
    fn refused_at_once(&self, job: &Job) -> Option<crate::model::Decision> {
        if job.endpoint.cgroup.is_some() {
            return None;
        }
        let refusal = self.steps.gate.check(job.dedupe.as_ref(), &job.cooldown_key(), Utc::now())?;
        Some(refusal_decision(job, refusal, Readings::new()))
    }
}
