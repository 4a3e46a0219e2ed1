//! The composition root: opens the store, the gate, the recorder and the rest, builds the
//! handles each loop and step uses, runs the loops until shutdown, and reloads the config.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::analyses::Analyses;
use super::annotator::Annotator;
use super::decisions::DecisionLog;
use super::inbox::Inbox;
use super::job::JobSteps;
use super::job::capture::Capturer;
use super::live::LiveConfig;
use super::loops::exits::ExitKeeper;
use super::loops::maintenance::Maintenance;
use super::loops::polling::run_polling;
use super::loops::pushing::Pushing;
use super::loops::recording::RecorderLoops;
use super::loops::sampling::Sampling;
use super::loops::workers::Workers;
use super::pusher::Pusher;
use super::queue::{JobQueue, RunningJobs};
use super::retention::Retention;
use crate::bucket::{Bucket, BucketError};
use crate::capture::PprofClient;
use crate::config::{Config, ConfigError};
use crate::gate::{Claims, Gate, GateError, holder_name};
use crate::metrics::Metrics;
use crate::pyroscope::QueueError;
use crate::recorder::Recorder;
use crate::rules::Job;
use crate::store::{ProfileStore, Staging, StoreError};
use crate::verify::Verifier;

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
    #[error("storage: cannot use {0}: {1}")]
    Bucket(String, BucketError),
    #[error("storage: {0}")]
    Pyroscope(#[from] QueueError),
}

/// The service's parts, built once. The HTTP server reads through it; the loops and job
/// steps get their own handles from it and never see it.
pub struct App {
    pub config: LiveConfig,
    /// Where `/-/reload` re-reads the config from; `None` in tests that build a config.
    config_path: Option<PathBuf>,
    pub store: Arc<ProfileStore>,
    pub inbox: Inbox,
    pub decisions: DecisionLog,
    pub metrics: Arc<Metrics>,
    pub recorder: Arc<Recorder>,
    /// Each target's readings, for the page's charts.
    pub verifier: Arc<Verifier>,
    pub analyses: Analyses,
    /// Webhook bodies being read at once: each may be up to `webhook.max_body_size`, and
    /// together they stay within `BODY_MEMORY`.
    pub bodies: Semaphore,
    steps: JobSteps,
    jobs: RunningJobs,
    /// The queue's receiving end, taken by the workers when the loops start.
    queue_rx: Mutex<Option<mpsc::Receiver<Job>>>,
    /// The claims of a shared bucket, pruned by maintenance.
    claims: Option<Arc<Claims>>,
    /// Queues kept profiles for Pyroscope; its loop pushes them.
    pusher: Pusher,
}

impl App {
    /// Opens the store (the local one, or the bucket of `storage.object_store`), staging,
    /// the gate state, the recorder and the Pyroscope queue under `storage.dir`, and makes
    /// the job queue.
    pub fn new(config: Config, config_path: Option<PathBuf>) -> Result<Arc<App>, AppError> {
        let bucket = shared_bucket(&config)?;
        let store = Arc::new(ProfileStore::open(&config.storage, bucket.clone())?);
        App::assemble(config, config_path, store, bucket)
    }

    /// The same, keeping profiles in `store`.
    pub fn with_store(
        config: Config,
        config_path: Option<PathBuf>,
        store: Arc<ProfileStore>,
    ) -> Result<Arc<App>, AppError> {
        let bucket = shared_bucket(&config)?;
        App::assemble(config, config_path, store, bucket)
    }

    fn assemble(
        config: Config,
        config_path: Option<PathBuf>,
        store: Arc<ProfileStore>,
        bucket: Option<Arc<Bucket>>,
    ) -> Result<Arc<App>, AppError> {
        let staging = Staging::open(&config.storage.dir.join(".tmp"))?;
        let gate = Arc::new(Gate::open(
            &config.storage.dir.join(".state"),
            config.gate.dedupe_ttl,
            config.gate.max_in_flight,
        )?);
        let recorder_dir = config.storage.dir.join(".recorder");
        let recorder =
            Arc::new(Recorder::open(&recorder_dir).map_err(|error| AppError::Recorder(recorder_dir, error))?);
        let claims =
            bucket.map(|bucket| Arc::new(Claims::new(bucket, holder_name(), config.gate.dedupe_ttl)));
        let metrics = Arc::new(Metrics::new());
        metrics.store_up.set(i64::from(store.trouble().is_none()));
        let live = LiveConfig::new(config.clone());
        let pusher = Pusher::new(live.clone(), metrics.pyroscope.clone())?;
        let abort = CancellationToken::new();
        let decisions = DecisionLog::new(metrics.clone());
        let (queue, queue_rx) = JobQueue::new(config.gate.queue_size, metrics.clone(), decisions.clone());
        let analyses = Analyses::new(store.clone(), abort.clone(), metrics.analyses_running.clone());
        let client = PprofClient::new(config.capture.clone());
        let capturer = Capturer::new(
            store.clone(),
            staging,
            client,
            gate.clone(),
            analyses.clone(),
            metrics.clone(),
            abort.clone(),
        )
        .pushing_with(pusher.clone());
        let verifier = Arc::new(Verifier::new(config.history, stale_after(&config)));
        let steps = JobSteps {
            gate: gate.clone(),
            claims: claims.clone(),
            verifier: verifier.clone(),
            recorder: recorder.clone(),
            capturer,
            annotator: Annotator::new(&config, metrics.clone(), abort.clone()),
            retention: Retention::new(store.clone(), metrics.clone()),
        };
        let bodies = (BODY_MEMORY / config.webhook.max_body_bytes.max(1)).clamp(1, 1024) as usize;
        Ok(Arc::new(App {
            inbox: Inbox::new(gate, queue, decisions.clone(), metrics.clone()),
            config: live,
            config_path,
            store,
            decisions,
            metrics,
            recorder,
            verifier,
            analyses,
            bodies: Semaphore::new(bodies),
            steps,
            jobs: RunningJobs::new(abort),
            queue_rx: Mutex::new(Some(queue_rx)),
            claims,
            pusher,
        }))
    }

    /// The queue's receiving end, for whoever takes jobs off it: the workers, once.
    pub fn take_queue(&self) -> Option<mpsc::Receiver<Job>> {
        self.queue_rx.lock().unwrap().take()
    }

    /// The gate: dedupe, cooldowns and captures in flight.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.steps.gate
    }

    /// The running config.
    pub fn config(&self) -> Arc<Config> {
        self.config.current()
    }

    /// Runs everything but the HTTP server until `shutdown`: the workers, sampling and watch
    /// rules, the recorder, the keeping of recorded processes' last profiles, polling,
    /// maintenance and the pushes to Pyroscope. Returns once all have wound up (running jobs get `grace`).
    pub async fn run(&self, shutdown: CancellationToken, grace: Duration) {
        let Some(queue_rx) = self.take_queue() else { return };
        let steps = &self.steps;
        let config = &self.config;
        let workers = Workers {
            queue_rx,
            queue: self.inbox.queue.clone(),
            steps: steps.clone(),
            decisions: self.decisions.clone(),
            jobs: self.jobs.clone(),
            max_in_flight: config.current().gate.max_in_flight,
        };
        let sampling = Sampling {
            steps: steps.clone(),
            decisions: self.decisions.clone(),
            jobs: self.jobs.clone(),
            metrics: self.metrics.clone(),
        };
        let recording = RecorderLoops {
            recorder: self.recorder.clone(),
            client: steps.capturer.client.failing_when_in_use(),
            perf: steps.capturer.perf.clone(),
            staging: steps.capturer.staging.clone(),
            metrics: self.metrics.clone(),
        };
        let exits = ExitKeeper {
            steps: steps.clone(),
            config: config.clone(),
            decisions: self.decisions.clone(),
            jobs: self.jobs.clone(),
            metrics: self.metrics.clone(),
        };
        let maintenance = Maintenance {
            store: self.store.clone(),
            retention: steps.retention.clone(),
            gate: steps.gate.clone(),
            claims: self.claims.clone(),
            metrics: self.metrics.clone(),
        };
        let pushing = Pushing { pusher: self.pusher.clone(), added_rx: self.recorder.take_added() };
        let tasks = [
            tokio::spawn(pushing.run(config.clone(), shutdown.clone())),
            tokio::spawn(sampling.run(config.clone(), shutdown.clone())),
            tokio::spawn(recording.run(config.clone(), shutdown.clone())),
            tokio::spawn(exits.run(shutdown.clone())),
            tokio::spawn(run_polling(
                config.clone(),
                self.inbox.clone(),
                self.metrics.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(maintenance.run(shutdown.clone())),
        ];
        // The workers last: they wait for the running jobs the others started.
        workers.run(shutdown, grace).await;
        for task in tasks {
            task.await.ok();
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
                self.steps.annotator.reconfigure(&new);
                self.config.replace(new);
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
}

/// The bucket of `storage.object_store`, if there is one, for the store and the claims.
fn shared_bucket(config: &Config) -> Result<Option<Arc<Bucket>>, AppError> {
    let Some(object_store) = &config.storage.object_store else { return Ok(None) };
    Bucket::open(object_store)
        .map(|bucket| Some(Arc::new(bucket)))
        .map_err(|error| AppError::Bucket(object_store.url(), error))
}

/// Readings older than this verify nothing: a few missed samples, not one late scrape.
fn stale_after(config: &Config) -> Duration {
    config.sample_interval * 3 + Duration::from_secs(5)
}
