//! Runs the recorder: one recording per recorded target, started, changed and stopped as
//! the config says (a reload leaves unchanged recordings running, without a gap).

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::capture::PprofClient;
use crate::capture::perf::{PerfLookup, PerfSampler};
use crate::config::{Config, RecorderConfig};
use crate::metrics::Metrics;
use crate::pipeline::live::LiveConfig;
use crate::recorder::{Recorder, Recording, Sources, Tools, keep_recording};
use crate::store::Staging;

/// What the recorder's loops use.
pub struct RecorderLoops {
    pub recorder: Arc<Recorder>,
    /// Fails at once when the profiler is in use: the recorder backs off then.
    pub client: PprofClient,
    /// Shared with the captures: a binary's symbols are read once.
    pub perf: PerfSampler,
    pub staging: Staging,
    pub metrics: Arc<Metrics>,
}

/// A recorded target as the config has it.
#[derive(Clone, PartialEq)]
struct Wanted {
    name: String,
    config: RecorderConfig,
    sources: Sources,
}

impl RecorderLoops {
    /// Records every recorded target until `shutdown`, following reloads.
    pub async fn run(self, config: LiveConfig, shutdown: CancellationToken) {
        let mut changes = config.changes();
        let tasks = TaskTracker::new();
        let mut running: HashMap<String, (Wanted, CancellationToken)> = HashMap::new();
        loop {
            let wanted = wanted(&changes.borrow_and_update().clone());
            let pairs: Vec<(String, RecorderConfig)> =
                wanted.iter().map(|w| (w.name.clone(), w.config.clone())).collect();
            let recordings: Vec<Arc<Recording>> = self.recorder.sync(&pairs, &self.metrics);
            running.retain(|name, (was, stop)| {
                let same = wanted.iter().any(|w| &w.name == name && w == was);
                if !same {
                    stop.cancel();
                }
                same
            });
            for (want, recording) in wanted.into_iter().zip(recordings) {
                if running.contains_key(&want.name) {
                    continue;
                }
                let stop = shutdown.child_token();
                let (sources, client, perf, staging, metrics) = (
                    want.sources.clone(),
                    self.client.clone(),
                    self.perf.clone(),
                    self.staging.clone(),
                    self.metrics.clone(),
                );
                running.insert(want.name.clone(), (want, stop.clone()));
                tasks.spawn(async move {
                    let tools = Tools { client: &client, perf: &perf, staging: &staging, metrics: &metrics };
                    keep_recording(recording, sources, tools, stop).await;
                });
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break },
                () = shutdown.cancelled() => break,
            }
        }
        running.values().for_each(|(_, stop)| stop.cancel());
        tasks.close();
        tasks.wait().await;
    }
}

/// The recorded targets of `config` (templated ones are not: they have no fixed place).
fn wanted(config: &Config) -> Vec<Wanted> {
    config
        .targets
        .iter()
        .filter_map(|target| {
            let endpoint = target.endpoint.as_ref()?;
            let recorder = target.recorder.clone()?;
            let perf = recorder.perf.map(|_| PerfLookup {
                cgroup: endpoint.cgroup.clone(),
                process: target.process.clone(),
                cgroup_root: config.cgroup_root.clone(),
                proc_root: config.proc_root.clone(),
            });
            Some(Wanted {
                name: target.name.to_string(),
                config: recorder,
                sources: Sources { pprof: endpoint.pprof_url.clone(), perf },
            })
        })
        .collect()
}
