//! The recording loops of one target: back-to-back CPU segments and snapshots at
//! intervals from its pprof endpoint, back-to-back perf segments of its process, each
//! segment renamed into the tape and the tape pruned; every outcome logged once per
//! change, counted, and told to the process's lifetime.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Url;
use tokio_util::sync::CancellationToken;

use super::{MAX_BACKOFF, Recording, Seen};
use crate::capture::perf::{PerfCaptureError, PerfLookup, PerfSampler, off_thread};
use crate::capture::{CaptureError, PprofClient};
use crate::config::RecorderConfig;
use crate::metrics::Metrics;
use crate::model::ProfileKind;
use crate::perf::PerfSettings;
use crate::store::Staging;

/// What the recording loops use of the service.
#[derive(Clone, Copy)]
pub struct Tools<'a> {
    /// Fails at once when the profiler is in use (`failing_when_in_use`).
    pub client: &'a PprofClient,
    pub perf: &'a PerfSampler,
    pub staging: &'a Staging,
    pub metrics: &'a Metrics,
}

/// Where a recorded target's profiles come from: its pprof endpoint, its process on this
/// host (for perf), or both.
#[derive(Debug, Clone, PartialEq)]
pub struct Sources {
    pub pprof: Option<Url>,
    pub perf: Option<PerfLookup>,
}

/// Records one target until `stop`: its CPU segments back to back (or for `cpu_duty` of
/// each period), each snapshot kind at its interval, and its perf segments back to back.
/// A perf segment being sampled at `stop` ends then and is kept.
pub async fn keep_recording(
    recording: Arc<Recording>,
    sources: Sources,
    tools: Tools<'_>,
    stop: CancellationToken,
) {
    let config = recording.config();
    tracing::info!(target = %recording.target, records = %config.describe(), "Recording.");
    let pprof = async {
        let Some(base) = &sources.pprof else { return };
        let snapshots = [ProfileKind::Heap, ProfileKind::Goroutine]
            .into_iter()
            .filter_map(|kind| config.interval(kind).map(|every| (kind, every)))
            .map(|(kind, every)| snapshot_loop(&recording, base, tools, kind, every, &config));
        let cpu = config.cpu.map(|period| cpu_loop(&recording, base, tools, period, &config));
        let all = futures_util::future::join(futures_util::future::join_all(snapshots), async {
            if let Some(cpu) = cpu {
                cpu.await;
            }
        });
        tokio::select! {
            _ = all => {}
            () = stop.cancelled() => {}
        }
    };
    let perf = async {
        if let (Some(lookup), Some(period)) = (&sources.perf, config.perf) {
            perf_loop(&recording, lookup, tools, period, &config, &stop).await;
        }
    };
    futures_util::future::join(pprof, perf).await;
}
async fn snapshot_loop(
    recording: &Recording,
    base: &Url,
    tools: Tools<'_>,
    kind: ProfileKind,
    every: Duration,
    config: &RecorderConfig,
) {
    let mut ticks = tokio::time::interval_at(recording.next_due(kind, every), every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let started = Utc::now();
        fetch(recording, base, tools, kind, 0, started, config).await.ok();
    }
}

async fn cpu_loop(
    recording: &Recording,
    base: &Url,
    tools: Tools<'_>,
    period: Duration,
    config: &RecorderConfig,
) {
    let seconds = config.cpu_seconds();
    let mut backoff = period;
    tokio::time::sleep_until(recording.next_due(ProfileKind::Cpu, period)).await;
    loop {
        let next = tokio::time::Instant::now() + period;
        let started = Utc::now();
        match fetch(recording, base, tools, ProfileKind::Cpu, seconds, started, config).await {
            Err(error) if error.is_in_use() => {
                let until = Utc::now() + chrono::Duration::from_std(backoff).unwrap_or_default();
                let first = recording
                    .kinds
                    .lock()
                    .unwrap()
                    .get(&ProfileKind::Cpu)
                    .is_none_or(|s| s.backing_off_until.is_none());
                if first {
                    tracing::warn!(
                        target = %recording.target,
                        wait_s = backoff.as_secs(),
                        "Someone else holds the target's CPU profiler (a continuous profiler, a person with go tool pprof); the recorder backs off."
                    );
                }
                recording.update(ProfileKind::Cpu, |state| state.backing_off_until = Some(until));
                tools.metrics.recorder.backing_off.get_or_create(&target_label(&recording.target)).set(1);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            result => {
                backoff = period;
                // Told by the recording's state, which outlives this loop (a reload starts
                // the loop again, maybe while it was backing off).
                let mut was_backing_off = false;
                recording.update(ProfileKind::Cpu, |state| {
                    was_backing_off = state.backing_off_until.take().is_some();
                });
                if was_backing_off {
                    tracing::info!(target = %recording.target, "The target's CPU profiler is free again; recording CPU.");
                    tools.metrics.recorder.backing_off.get_or_create(&target_label(&recording.target)).set(0);
                }
                // After a failure, wait out the period rather than asking again at once.
                if result.is_err() || seconds < period.as_secs() as u32 {
                    tokio::time::sleep_until(next).await;
                }
            }
        }
    }
}

fn target_label(target: &str) -> Vec<(&'static str, String)> {
    vec![("target", target.to_string())]
}

/// Fetches one profile into the tape: validated, then renamed into place.
async fn fetch(
    recording: &Recording,
    base: &Url,
    tools: Tools<'_>,
    kind: ProfileKind,
    seconds: u32,
    started: DateTime<Utc>,
    config: &RecorderConfig,
) -> Result<(), CaptureError> {
    let target = &recording.target;
    recording.started.lock().unwrap().insert(kind, tokio::time::Instant::now());
    let staged = tools.staging.file(&format!("recorder-{target}-{kind}-{}", started.timestamp_millis()));
    let never = CancellationToken::new();
    let fetched = tools.client.fetch(base, kind, seconds, staged.path(), None, &never).await;
    let finished = Utc::now();
    let result = match fetched {
        Ok(_) => {
            let from = if kind == ProfileKind::Cpu { started } else { finished };
            recording
                .tape
                .add(kind, from, finished, staged.path())
                .map(|segment| recording.tell_added(&segment))
                .map_err(|source| CaptureError::Write { path: staged.path().to_path_buf(), source })
        }
        Err(error) => Err(error),
    };
    let seen = match &result {
        Ok(()) => Some(Seen::Answered),
        Err(error) if error.is_refused() => Some(Seen::Refused),
        Err(error) => error.answered().then_some(Seen::Answered),
    };
    if let Some(seen) = seen {
        recording.observe(seen, finished);
    }
    let outcome = match &result {
        Ok(()) => Outcome::Kept,
        Err(error) if error.is_in_use() => Outcome::InUse,
        Err(error) => Outcome::Failed(error.to_string()),
    };
    settle(recording, tools, kind, outcome, finished, config);
    result
}

/// Samples the target's perf segments back to back, each `period` long, until `stop`:
/// its process (or cgroup) looked for again for each, so a restarted process is found.
/// After a failure it waits out the period before it tries again.
async fn perf_loop(
    recording: &Recording,
    lookup: &PerfLookup,
    tools: Tools<'_>,
    period: Duration,
    config: &RecorderConfig,
    stop: &CancellationToken,
) {
    if !sleep_until(recording.next_due(ProfileKind::Perf, period), stop).await {
        return;
    }
    while !stop.is_cancelled() {
        let next = tokio::time::Instant::now() + period;
        if perf_segment(recording, lookup, tools, period, config, stop).await.is_err()
            && !sleep_until(next, stop).await
        {
            return;
        }
    }
}

/// Sleeps until `deadline`: `false` if `stop` came first.
async fn sleep_until(deadline: tokio::time::Instant, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep_until(deadline) => true,
        () = stop.cancelled() => false,
    }
}

/// Samples one perf segment into the tape. Sampling blocks, so it runs on a blocking
/// thread; `stop` ends it early, and what was sampled is kept.
async fn perf_segment(
    recording: &Recording,
    lookup: &PerfLookup,
    tools: Tools<'_>,
    period: Duration,
    config: &RecorderConfig,
    stop: &CancellationToken,
) -> Result<(), PerfCaptureError> {
    let (target, kind) = (&recording.target, ProfileKind::Perf);
    recording.started.lock().unwrap().insert(kind, tokio::time::Instant::now());
    let started = Utc::now();
    let staged = tools.staging.file(&format!("recorder-{target}-{kind}-{}", started.timestamp_millis()));
    let settings = PerfSettings {
        frequency_hz: config.perf_frequency,
        duration: period,
        proc_root: lookup.proc_root.clone(),
    };
    let sampled = {
        let (sampler, lookup, stop, path) =
            (tools.perf.clone(), lookup.clone(), stop.clone(), staged.path().to_path_buf());
        off_thread(move || sampler.find_and_capture(&lookup, &settings, &stop, &path)).await
    };
    let finished = Utc::now();
    let result = sampled.and_then(|_| {
        let kept = recording.tape.add(kind, started, finished, staged.path());
        kept.map(|segment| recording.tell_added(&segment))
            .map_err(|source| PerfCaptureError::Write { path: staged.path().to_path_buf(), source })
    });
    let outcome = match &result {
        Ok(()) => Outcome::Kept,
        Err(error) => Outcome::Failed(error.to_string()),
    };
    settle(recording, tools, kind, outcome, finished, config);
    result
}

/// How one request of the recorder ended.
enum Outcome {
    Kept,
    /// Someone else holds the CPU profiler.
    InUse,
    Failed(String),
}

/// Takes in how one request of `kind` ended: logged once per change and counted; then the tape pruned and its reach exported.
fn settle(
    recording: &Recording,
    tools: Tools<'_>,
    kind: ProfileKind,
    outcome: Outcome,
    finished: DateTime<Utc>,
    config: &RecorderConfig,
) {
    let target = &recording.target;
    match outcome {
        Outcome::Kept => {
            tools.metrics.recorder.fetch(target, kind, "ok");
            let recovered = recording.kinds.lock().unwrap().get_mut(&kind).and_then(|s| s.error.take());
            if let Some((error, since)) = recovered {
                tracing::info!(target = %target, kind = %kind, since = %since, was = %error, "Recording again.");
            }
        }
        Outcome::InUse => {
            tools.metrics.recorder.fetch(target, kind, "in_use");
            // It answered: what failed before is over, and the back-off says the rest.
            recording.update(kind, |state| state.error = None);
        }
        Outcome::Failed(error) => {
            tools.metrics.recorder.fetch(target, kind, "failed");
            let changed = recording
                .kinds
                .lock()
                .unwrap()
                .get(&kind)
                .and_then(|s| s.error.as_ref())
                .is_none_or(|(last, _)| *last != error);
            if changed {
                tracing::warn!(target = %target, kind = %kind, error = %error, "Recording failed; trying again each period.");
            }
            recording.update(kind, |state| {
                let since = state.error.as_ref().map_or(finished, |(_, since)| *since);
                state.error = Some((error, since));
            });
        }
    }
    let pruned = recording.tape.prune(finished, config.keep, config.max_bytes);
    if pruned > 0 {
        tracing::debug!(target = %target, pruned, "Recorder pruned.");
    }
    export(recording, tools.metrics, finished);
}

/// The tape's size and reach, to /metrics.
fn export(recording: &Recording, metrics: &Metrics, now: DateTime<Utc>) {
    let mut oldest: Option<DateTime<Utc>> = None;
    for kind in RecorderConfig::KINDS {
        let held = recording.tape.held(kind);
        let labels = vec![("target", recording.target.clone()), ("kind", kind.name().to_string())];
        metrics.recorder.segments.get_or_create(&labels).set(held.segments as i64);
        oldest = match (oldest, held.oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    let labels = target_label(&recording.target);
    metrics.recorder.bytes.get_or_create(&labels).set(recording.tape.bytes() as i64);
    let reach = oldest.map_or(0, |oldest| (now - oldest).num_seconds().max(0));
    metrics.recorder.reach.get_or_create(&labels).set(reach);
}
