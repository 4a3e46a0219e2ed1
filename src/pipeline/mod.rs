//! Wires the stages into the service: the shared `App` state, the job queue and its
//! workers, one job from gate to decision, the sampling and watch loop, the analyses of
//! kept captures, and reload. Everything here runs the stages; none of it speaks HTTP.

mod capture;
mod decisions;
pub mod insight;
mod job;
pub mod manual;
mod poll;
mod record;
mod recorded;
mod watch;
mod workers;

pub use decisions::DecisionLog;
pub use job::{decision_for, quiet, refusal_decision, run_job};
pub use record::{run_exits, run_recording};
pub use watch::{run_sampling, sampling_interval};
pub use workers::run_workers;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::analyze::Budget;
use crate::annotate::GrafanaClient;
use crate::capture::PprofClient;
use crate::config::{Config, ConfigError};
use crate::gate::{Claims, Gate, GateError, holder_name};
use crate::intake::{IntakeError, intake, parse};
use crate::metrics::{Counted, Metrics};
use crate::model::{Decision, Outcome};
use crate::recorder::Recorder;
use crate::rules::Job;
use crate::store::{Bucket, LocalStore, ObjectStoreBackend, ProfileStore, Staging, StoreError};
use crate::verify::Verifier;

/// Decisions kept for the API.
const DECISIONS_KEPT: usize = 1000;
/// Analyses running at once: one per core here.
const ANALYSES_AT_ONCE: usize = 2;
/// Memory for webhook bodies being read at once.
const BODY_MEMORY: u64 = 32 << 20;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("storage: {0}")]
    Gate(#[from] GateError),
    #[error("storage: cannot open the recorder's directory {0}: {1}")]
    Recorder(PathBuf, std::io::Error),
}

/// Why jobs were not queued. None of them was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("queue full ({capacity} jobs); retry later")]
    Full { capacity: usize },
    #[error("alertprof is shutting down")]
    ShuttingDown,
}

/// Why a payload of alerts was not taken. Nothing of it was queued, recorded or counted.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error(transparent)]
    Intake(#[from] IntakeError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// What a payload of alerts came to.
#[derive(Debug, Clone, Copy)]
pub struct Taken {
    pub accepted: usize,
    pub ignored: usize,
}

/// Everything the handlers and workers share.
pub struct App {
    /// Swapped whole on reload; jobs keep the snapshot they were made with.
    config: RwLock<Arc<Config>>,
    /// Where `/-/reload` re-reads the config from; `None` in tests that build a config.
    config_path: Option<PathBuf>,
    pub store: Arc<dyn ProfileStore>,
    /// Where bodies are downloaded before the store keeps them: local, whatever the store.
    pub staging: Staging,
    /// Shared with the blocking tasks that write its state.
    pub gate: Arc<Gate>,
    pub client: PprofClient,
    /// Rebuilt on reload; `None` without a `grafana` section.
    grafana: RwLock<Option<GrafanaClient>>,
    pub verifier: Verifier,
    pub decisions: DecisionLog,
    pub metrics: Metrics,
    queue_tx: mpsc::Sender<Job>,
    /// Every running job, from alerts and watch rules, so shutdown can wait for them.
    jobs: TaskTracker,
    /// Held while a job is spawned or the tracker closed, so that no job starts after
    /// shutdown stopped waiting for jobs.
    spawning: Mutex<()>,
    /// Cancels captures and annotations still running when the shutdown grace has passed.
    pub abort: CancellationToken,
    /// Counts reloads: sampling starts over with the new config, the recorder follows it.
    pub reloads: tokio::sync::watch::Sender<u64>,
    /// Each recorded target's recent profiles.
    pub recorder: Recorder,
    /// With a shared bucket: claims that make every instance capture an alert once.
    pub claims: Option<Arc<Claims>>,
    /// Analyses of profiles running at once (new captures, flame graphs and diffs asked
    /// for): each is bounded, and so is their number. A turn is held until the work
    /// itself has ended, not only until nobody waits for it.
    analysis: Arc<tokio::sync::Semaphore>,
    /// Held while a payload larger than the whole queue goes in, so only one does at a time.
    spilling: Arc<tokio::sync::Semaphore>,
    /// Webhook bodies being read at once: each may be up to `webhook.max_body_size`, and
    /// together they stay within `BODY_MEMORY`.
    pub bodies: tokio::sync::Semaphore,
}

impl App {
    /// Opens the store (the local one, or the bucket of `storage.object_store`), staging
    /// and gate state under `storage.dir`, and makes the job queue; the receiver goes to
    /// `run_workers`.
    pub fn new(
        config: Config,
        config_path: Option<PathBuf>,
    ) -> Result<(Arc<App>, mpsc::Receiver<Job>), AppError> {
        let bucket = shared_bucket(&config)?;
        let store: Arc<dyn ProfileStore> = match &bucket {
            Some(bucket) => Arc::new(ObjectStoreBackend::open(&config.storage, bucket.clone())),
            None => Arc::new(LocalStore::open(&config.storage)?),
        };
        App::assemble(config, config_path, store, bucket)
    }

    /// The same, keeping profiles in `store`.
    pub fn with_store(
        config: Config,
        config_path: Option<PathBuf>,
        store: Arc<dyn ProfileStore>,
    ) -> Result<(Arc<App>, mpsc::Receiver<Job>), AppError> {
        let bucket = shared_bucket(&config)?;
        App::assemble(config, config_path, store, bucket)
    }

    /// `bucket`: the shared bucket of `storage.object_store`, where the claims are kept.
    fn assemble(
        config: Config,
        config_path: Option<PathBuf>,
        store: Arc<dyn ProfileStore>,
        bucket: Option<Arc<Bucket>>,
    ) -> Result<(Arc<App>, mpsc::Receiver<Job>), AppError> {
        let staging = Staging::open(&config.storage.dir.join(".tmp"))?;
        let gate = Gate::open(
            &config.storage.dir.join(".state"),
            config.gate.dedupe_ttl,
            config.gate.max_in_flight,
        )?;
        let recorder_dir = config.storage.dir.join(".recorder");
        let recorder =
            Recorder::open(&recorder_dir).map_err(|error| AppError::Recorder(recorder_dir, error))?;
        let claims =
            bucket.map(|bucket| Arc::new(Claims::new(bucket, holder_name(), config.gate.dedupe_ttl)));
        let (queue_tx, queue_rx) = mpsc::channel(config.gate.queue_size);
        let metrics = Metrics::new();
        metrics.queue_capacity.set(config.gate.queue_size as i64);
        let bodies = (BODY_MEMORY / config.webhook.max_body_bytes.max(1)).clamp(1, 1024) as usize;
        let app = App {
            client: PprofClient::new(config.capture.clone()),
            verifier: Verifier::new(config.history, stale_after(&config)),
            grafana: RwLock::new(grafana_client(&config)),
            config: RwLock::new(Arc::new(config)),
            config_path,
            store,
            staging,
            gate: Arc::new(gate),
            decisions: DecisionLog::new(DECISIONS_KEPT),
            metrics,
            queue_tx,
            jobs: TaskTracker::new(),
            spawning: Mutex::new(()),
            abort: CancellationToken::new(),
            reloads: tokio::sync::watch::channel(0).0,
            recorder,
            claims,
            analysis: Arc::new(tokio::sync::Semaphore::new(ANALYSES_AT_ONCE)),
            bodies: tokio::sync::Semaphore::new(bodies),
            spilling: Arc::new(tokio::sync::Semaphore::new(1)),
        };
        Ok((Arc::new(app), queue_rx))
    }

    pub fn grafana(&self) -> Option<GrafanaClient> {
        self.grafana.read().unwrap().clone()
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap().clone()
    }

    /// Queues jobs all at once, or none: a payload is queued whole or answered 503 for
    /// Alertmanager to retry. A payload with more jobs than the whole queue holds could never
    /// be queued whole: it is taken, and its jobs go in as places free up (one such payload
    /// at a time; another is answered 503 meanwhile).
    pub fn enqueue(self: &Arc<Self>, jobs: Vec<Job>) -> Result<(), QueueError> {
        let capacity = self.queue_tx.max_capacity();
        match self.queue_tx.try_reserve_many(jobs.len()) {
            Ok(permits) => {
                for (permit, job) in permits.zip(jobs) {
                    permit.send(job);
                }
            }
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
                let app = self.clone();
                tokio::spawn(async move {
                    let _turn = turn;
                    let mut jobs = jobs.into_iter();
                    while let Some(job) = jobs.next() {
                        if let Err(mpsc::error::SendError(job)) = app.queue_tx.send(job).await {
                            let reason = "alertprof shut down before the job ran";
                            let dropped = std::iter::once(job)
                                .chain(jobs)
                                .map(|job| decision_for(&job, Outcome::Dropped, reason));
                            app.decisions.record_all(dropped, &app.metrics);
                            break;
                        }
                        app.sync_queue_depth();
                    }
                });
            }
        }
        self.sync_queue_depth();
        Ok(())
    }

    /// Takes a webhook-format payload (from the webhook, or made from Alertmanager's API):
    /// intake against the local gate, its jobs queued all or none, its alerts counted and
    /// its decisions recorded. A refused payload changes nothing, not even the counts.
    pub fn take_payload(self: &Arc<Self>, config: &Arc<Config>, body: &[u8]) -> Result<Taken, PayloadError> {
        let payload = parse(body)?;
        let now = chrono::Utc::now();
        let hold =
            |dedupe: &str, rule: &str, target: &str| self.gate.hold(dedupe, rule, target, now).map(Some);
        let taken = intake(config, &payload, hold)?;
        self.enqueue(taken.jobs)?;
        for alert in &payload.alerts {
            self.metrics.alert_received(&alert.status);
        }
        self.decisions.record_all(taken.decisions, &self.metrics);
        Ok(Taken { accepted: taken.accepted, ignored: taken.ignored })
    }

    pub fn sync_queue_depth(&self) {
        let depth = self.queue_tx.max_capacity() - self.queue_tx.capacity();
        self.metrics.queue_depth.set(depth as i64);
    }

    /// Runs a job's work as a task shutdown waits for; `false` (and nothing runs) once
    /// shutdown has stopped taking jobs.
    pub fn spawn_job(&self, work: impl Future<Output = ()> + Send + 'static) -> bool {
        let _spawning = self.spawning.lock().unwrap();
        if self.jobs.is_closed() {
            return false;
        }
        self.jobs.spawn(work);
        true
    }

    /// Takes no more jobs and waits up to `grace` for those running; then cancels what is
    /// left (captures fail, annotations stop) and waits for it to wind up.
    pub async fn finish_jobs(&self, grace: Duration) {
        {
            let _spawning = self.spawning.lock().unwrap();
            self.jobs.close();
        }
        if tokio::time::timeout(grace, self.jobs.wait()).await.is_err() {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "Captures still running after the grace period; cancelling them."
            );
            self.abort.cancel();
            self.jobs.wait().await;
        }
    }

    /// Re-reads the config file; on any problem the running config stays.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let Some(path) = &self.config_path else {
            return Ok(());
        };
        match Config::load(path) {
            Ok(new) => {
                let old = self.config();
                for (what, changed) in [
                    ("listen_address", old.listen_address != new.listen_address),
                    ("http", old.http != new.http),
                    ("storage", old.storage != new.storage),
                    ("gate", old.gate != new.gate),
                    ("capture", old.capture != new.capture),
                    ("webhook.max_body_size", old.webhook.max_body_bytes != new.webhook.max_body_bytes),
                ] {
                    if changed {
                        tracing::warn!(setting = what, "Changed setting takes effect only after a restart.");
                    }
                }
                *self.grafana.write().unwrap() = grafana_client(&new);
                *self.config.write().unwrap() = Arc::new(new);
                self.reloads.send_modify(|count| *count += 1);
                self.metrics.config_reload_success.set(1);
                tracing::info!(path = %path.display(), "Config reloaded.");
                Ok(())
            }
            Err(error) => {
                self.metrics.config_reload_success.set(0);
                tracing::error!(error = %error, "Config reload failed; keeping the running config.");
                Err(error)
            }
        }
    }

    /// Runs an analysis of profiles off the async threads, within a budget of `time` per
    /// walk: one of a few at a time, counted in `alertprof_analyses_running` while it runs,
    /// and stopped by shutdown or when this future is dropped (a client that went away).
    pub async fn analyze<T: Send + 'static>(
        &self,
        time: Duration,
        work: impl FnOnce(&dyn ProfileStore, &Budget) -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        let turn = self.analysis.clone().acquire_owned().await.expect("never closed");
        let cancel = self.abort.child_token();
        let _stop_if_dropped = cancel.clone().drop_guard();
        let budget = Budget::new(time).with_cancel(cancel);
        let (store, running) = (self.store.clone(), Counted::new(&self.metrics.analyses_running));
        tokio::task::spawn_blocking(move || {
            // Both are let go when the work ends, however it ends.
            let _held = (turn, running);
            work(store.as_ref(), &budget)
        })
        .await
    }

    /// Logs, counts and keeps a decision.
    pub fn record(&self, decision: Decision) {
        self.decisions.record(decision, &self.metrics);
    }
}

/// Runs everything but the HTTP server until `shutdown`: the workers, sampling and watch
/// rules, the recorder, and the keeping of recorded processes' last profiles. Returns once
/// all have wound up (running jobs get `grace`).
pub async fn run_background(
    app: Arc<App>,
    queue_rx: mpsc::Receiver<Job>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let tasks = [
        tokio::spawn(run_sampling(app.clone(), shutdown.clone())),
        tokio::spawn(run_recording(app.clone(), shutdown.clone())),
        tokio::spawn(run_exits(app.clone(), shutdown.clone())),
        tokio::spawn(poll::run_polling(app.clone(), shutdown.clone())),
        tokio::spawn(run_workers(app, queue_rx, shutdown, grace)),
    ];
    for task in tasks {
        task.await.ok();
    }
}

/// The bucket of `storage.object_store`, if there is one.
fn shared_bucket(config: &Config) -> Result<Option<Arc<Bucket>>, StoreError> {
    config.storage.object_store.as_ref().map(ObjectStoreBackend::bucket).transpose()
}

fn grafana_client(config: &Config) -> Option<GrafanaClient> {
    config.grafana.as_ref().map(|grafana| GrafanaClient::new(grafana, &config.external_url))
}

/// Readings older than this verify nothing: a few missed samples, not one late scrape.
fn stale_after(config: &Config) -> Duration {
    config.sample_interval * 3 + Duration::from_secs(5)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Once shutdown has stopped taking jobs (and stopped waiting for them), nothing more
    /// starts: a watch tick that fires just then gets `false` and records the job dropped.
    #[tokio::test]
    async fn no_job_starts_after_shutdown() {
        crate::init();
        let dir = tempfile::tempdir().unwrap();
        let text = format!("storage: {{dir: {:?}}}", dir.path().display().to_string());
        let (app, _queue_rx) = App::new(Config::parse(&text, dir.path()).unwrap(), None).unwrap();
        let ran = Arc::new(AtomicBool::new(false));
        let before = ran.clone();
        assert!(app.spawn_job(async move { before.store(true, Ordering::SeqCst) }));
        app.finish_jobs(Duration::from_secs(5)).await;
        assert!(ran.load(Ordering::SeqCst), "a job started before shutdown is waited for");
        ran.store(false, Ordering::SeqCst);
        let after = ran.clone();
        assert!(!app.spawn_job(async move { after.store(true, Ordering::SeqCst) }));
        tokio::task::yield_now().await;
        assert!(!ran.load(Ordering::SeqCst));
    }
}
