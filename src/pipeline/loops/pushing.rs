//! Pushes to Pyroscope: the push worker runs while the config has a `pyroscope` section
//! (started again with a new client when a reload changes the section, stopped when one
//! takes it out; the queue stays), and the recorder's segments are queued as they come,
//! with `pyroscope.recorder`.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::PyroscopeConfig;
use crate::pipeline::live::LiveConfig;
use crate::pipeline::pusher::Pusher;
use crate::pyroscope::{PushWorker, PyroscopeClient};
use crate::recorder::Added;

/// What the pushing loop uses.
pub struct Pushing {
    pub pusher: Pusher,
    /// The recorder's segments, as each is added.
    pub added_rx: mpsc::Receiver<Added>,
}

/// The worker pushing for one `pyroscope` section.
struct Worker {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Worker {
    /// Stops it, mid-push too (that push stays queued), and waits until it has.
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.ok();
    }
}

impl Pushing {
    /// Pushes until `shutdown`, following reloads.
    pub async fn run(mut self, config: LiveConfig, shutdown: CancellationToken) {
        let mut changes = config.changes();
        // The section the worker was last started for (or tried to be).
        let mut section: Option<PyroscopeConfig> = None;
        let mut worker: Option<Worker> = None;
        loop {
            let wanted = changes.borrow_and_update().pyroscope.clone();
            if wanted != section {
                if let Some(worker) = worker.take() {
                    worker.stop().await;
                    tracing::info!("Pyroscope settings changed; pushes go on with the new ones.");
                }
                if let Some(wanted) = &wanted {
                    worker = self.start(wanted, &shutdown).await;
                }
                section = wanted;
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break },
                Some(added) = self.added_rx.recv() => self.pusher.segment(added).await,
                () = shutdown.cancelled() => break,
            }
        }
        if let Some(worker) = worker {
            worker.stop().await;
        }
    }

    /// Starts a worker on the queue (opened now if it was not) with a client for `config`.
    async fn start(&self, config: &PyroscopeConfig, shutdown: &CancellationToken) -> Option<Worker> {
        let pusher = self.pusher.clone();
        let queue = match tokio::task::spawn_blocking(move || pusher.queue()).await {
            Ok(Ok(queue)) => queue,
            Ok(Err(error)) => {
                tracing::error!(error = %error, "Cannot open the Pyroscope queue; nothing is pushed.");
                return None;
            }
            Err(error) => {
                tracing::error!(error = %error, "Opening the Pyroscope queue failed; nothing is pushed.");
                return None;
            }
        };
        let client = PyroscopeClient::new(config);
        let waiting = queue.depth().entries;
        tracing::info!(url = %client.endpoint(), waiting, "Pushing kept profiles to Pyroscope.");
        let stop = shutdown.child_token();
        let task = tokio::spawn(PushWorker::new(queue, client).run(stop.clone()));
        Some(Worker { stop, task })
    }
}
