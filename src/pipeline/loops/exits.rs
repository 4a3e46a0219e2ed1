//! When a recorded process ends, its last profiles are kept: the recorder's latest heap and
//! goroutine snapshots and its CPU segments of the last minute merged, as captures with
//! `trigger.source: exit`, with one decision and one annotation.

use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, Utc};
use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use crate::capture::PprofClient;
use crate::capture::perf::RECORDED_SOURCE;
use crate::config::EXIT_RULE;
use crate::metrics::Metrics;
use crate::model::{
    CaptureMeta, CaptureRole, Decision, Outcome, PendingCapture, ProfileKind, Trigger, TriggerSource, Window,
};
use crate::pipeline::decisions::DecisionLog;
use crate::pipeline::job::JobSteps;
use crate::pipeline::job::capture::StagedCapture;
use crate::pipeline::job::from_recorder::{merge_into, snapshot_into};
use crate::pipeline::job::outcome::{outcome_of, with_captures};
use crate::pipeline::live::LiveConfig;
use crate::pipeline::queue::RunningJobs;
use crate::recorder::{Exit, Recording};

/// How far back a process's last CPU profile reaches.
const LAST_CPU: Duration = Duration::minutes(1);

pub struct ExitKeeper {
    pub steps: JobSteps,
    pub config: LiveConfig,
    pub decisions: DecisionLog,
    pub jobs: RunningJobs,
    pub metrics: Arc<Metrics>,
}

impl ExitKeeper {
    /// Keeps the last profiles of each recorded process that ends, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let Some(mut exits) = self.steps.recorder.take_exits() else { return };
        let keeper = Arc::new(self);
        loop {
            let exit = tokio::select! {
                exit = exits.recv() => match exit {
                    Some(exit) => exit,
                    None => break,
                },
                () = shutdown.cancelled() => break,
            };
            keeper.metrics.recorder.exit(&exit.target);
            let task = keeper.clone();
            if !keeper.jobs.spawn(async move { task.decisions.record(task.keep_last_profiles(exit).await) }) {
                break;
            }
        }
    }

    async fn keep_last_profiles(&self, exit: Exit) -> Decision {
        let target = exit.target.as_str();
        let decision = |outcome, reason: String| Decision {
            target: Some(target.into()),
            ..Decision::new(Utc::now(), TriggerSource::Exit, outcome, reason)
        };
        let Some(recording) = self.steps.recorder.get(target) else {
            return decision(
                Outcome::Refused,
                format!("{}; the target is no longer recorded", exit.ended.why),
            );
        };
        let staged = self.last_profiles(&exit, &recording).await;
        if staged.is_empty() {
            return decision(
                Outcome::CaptureFailed,
                format!("{}; the recorder has nothing of it to keep", exit.ended.why),
            );
        }
        let captures: Vec<CaptureMeta> =
            join_all(staged.into_iter().map(|s| self.steps.capturer.keep(s))).await;
        let (outcome, kept) = outcome_of(&captures, "its last ");
        let reason = format!("{}; {kept}", exit.ended.why);
        tracing::info!(target = %target, reason = %reason, "A recorded process ended; its last profiles kept.");
        if captures.iter().any(CaptureMeta::is_ok) {
            self.steps.retention.enforce().await;
        }
        let annotations = self.steps.annotator.exit(&captures, &exit.ended.why).await;
        Decision { annotations, ..with_captures(decision(outcome, reason), captures) }
    }

    /// The recorder's latest snapshots of the process, and its CPU and perf segments of its
    /// last minute merged, staged as captures.
    async fn last_profiles(&self, exit: &Exit, recording: &Recording) -> Vec<StagedCapture> {
        let last = exit.ended.last_alive;
        let window =
            Window { from: (last - LAST_CPU).max(exit.ended.since.unwrap_or(last - LAST_CPU)), to: last };
        let since = exit.ended.since;
        let of_this_process = |to: chrono::DateTime<Utc>| since.is_none_or(|since| to > since);
        let recorded = recording.config();
        let mut staged = Vec::new();
        for kind in [ProfileKind::Heap, ProfileKind::Goroutine].into_iter().filter(|&k| recorded.records(k)) {
            let Some(opened) =
                recording.tape.at_or_before(kind, last).filter(|o| of_this_process(o.segment.to))
            else {
                continue;
            };
            let mut pending = self.pending(exit, kind, 0);
            pending.window = Some(window);
            staged.push(snapshot_into(&self.steps.capturer, pending, opened, Instant::now()).await);
        }
        for kind in [ProfileKind::Cpu, ProfileKind::Perf].into_iter().filter(|&k| recorded.records(k)) {
            let segments: Vec<_> = recording
                .tape
                .overlapping(kind, window)
                .into_iter()
                .filter(|segment| segment.to <= last && of_this_process(segment.from))
                .collect();
            if !segments.is_empty() {
                let seconds = match kind {
                    ProfileKind::Cpu => recorded.cpu_seconds(),
                    _ => recorded.interval(kind).unwrap_or_default().as_secs() as u32,
                };
                let mut pending = self.pending(exit, kind, seconds);
                pending.window = Some(window);
                staged.push(merge_into(&self.steps.capturer, pending, segments, Instant::now()).await);
            }
        }
        staged
    }

    /// A capture of the exit rule of `kind`, with the URL it would have been fetched from.
    fn pending(&self, exit: &Exit, kind: ProfileKind, seconds: u32) -> PendingCapture {
        let trigger = Trigger {
            received_at: Some(exit.at),
            ..Trigger::local(TriggerSource::Exit, Some(exit.ended.last_alive))
        };
        let id = self.steps.capturer.name(EXIT_RULE, CaptureRole::Spike, kind);
        let mut pending = PendingCapture::new(id, &exit.target, EXIT_RULE, kind, trigger, Utc::now());
        let config = self.config.current();
        let base =
            config.target(&exit.target).and_then(|t| t.endpoint.clone()).and_then(|e| e.pprof_url.clone());
        pending.url = match base.filter(|_| kind.needs_pprof_url()) {
            Some(base) => PprofClient::profile_url(&base, kind, seconds).to_string(),
            None if kind == ProfileKind::Perf => RECORDED_SOURCE.to_string(),
            None => String::new(),
        };
        pending
    }
}
