//! One kind from one target, in two steps. `fetch`: wait for a place in flight (and the
//! target's CPU profiler or tracer), download to staging and validate. `keep`: analyze,
//! within a budget and off the capture's places, and hand to the store, kept or failed.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use tokio::task::spawn_blocking;
use tokio_util::sync::CancellationToken;

use crate::analyze::stored::{self, AnalysisError};
use crate::analyze::{DIFF_KEPT, FunctionTable, Measure, TOP_KEPT, diff, top_line};
use crate::capture::PprofClient;
use crate::capture::perf::{PerfSampler, off_thread};
use crate::gate::Gate;
use crate::metrics::Metrics;
use crate::model::{CaptureId, CaptureMeta, CaptureRole, Diff, PendingCapture, ProfileKind, Summary};
use crate::perf::{PerfSettings, PerfTarget};
use crate::pipeline::analyses::Analyses;
use crate::pipeline::pusher::Pusher;
use crate::store::{ProfileStore, StagedFile, Staging};

/// A capture downloaded (or failed), not yet analyzed and kept.
pub struct StagedCapture {
    state: Staged,
    /// Since the first request, for `alertprof_capture_duration_seconds`.
    clock: Instant,
}

enum Staged {
    /// Its body is in staging, validated.
    Ready {
        pending: PendingCapture,
        body: StagedFile,
        bytes: u64,
        sha256: String,
        /// The capture to compare with instead of the latest baseline: the recorder's
        /// snapshot from before the window.
        compare_with: Option<CaptureId>,
    },
    Failed(CaptureMeta),
}

impl StagedCapture {
    pub fn ready(
        pending: PendingCapture,
        body: StagedFile,
        bytes: u64,
        sha256: String,
        clock: Instant,
    ) -> StagedCapture {
        StagedCapture { state: Staged::Ready { pending, body, bytes, sha256, compare_with: None }, clock }
    }

    pub fn failed(pending: PendingCapture, reason: impl Into<String>, clock: Instant) -> StagedCapture {
        StagedCapture { state: Staged::Failed(pending.failed(reason)), clock }
    }

    /// The capture's id and role, whatever came of it.
    pub fn id(&self) -> (&CaptureId, CaptureRole) {
        match &self.state {
            Staged::Ready { pending, .. } => (&pending.id, pending.role),
            Staged::Failed(meta) => (&meta.id, meta.role),
        }
    }

    pub fn is_ready(&self) -> bool {
        matches!(self.state, Staged::Ready { .. })
    }

    /// Compares it with `base` (kept first) rather than the latest baseline.
    pub fn compare_with(&mut self, base: CaptureId) {
        if let Staged::Ready { compare_with, .. } = &mut self.state {
            *compare_with = Some(base);
        }
    }

    /// Its pending capture, to say more of it before it is kept.
    pub fn pending_mut(&mut self) -> Option<&mut PendingCapture> {
        match &mut self.state {
            Staged::Ready { pending, .. } => Some(pending),
            Staged::Failed(_) => None,
        }
    }
}

/// Fetches and keeps captures: what a job's capture step uses of the service.
#[derive(Clone)]
pub struct Capturer {
    pub store: Arc<ProfileStore>,
    pub staging: Staging,
    /// The shared client; a job to a templated target pins its own.
    pub client: PprofClient,
    /// `perf` captures, with the symbol cache they share.
    pub perf: PerfSampler,
    /// One CPU profile or trace per target at a time, and a cap on captures in flight.
    gate: Arc<Gate>,
    analyses: Analyses,
    metrics: Arc<Metrics>,
    /// Cancels downloads still running when the shutdown grace has passed.
    pub abort: CancellationToken,
    /// Queues each kept profile for Pyroscope, when there is one.
    pusher: Option<Pusher>,
}

impl Capturer {
    pub fn new(
        store: Arc<ProfileStore>,
        staging: Staging,
        client: PprofClient,
        gate: Arc<Gate>,
        analyses: Analyses,
        metrics: Arc<Metrics>,
        abort: CancellationToken,
    ) -> Capturer {
        let perf = PerfSampler::default();
        Capturer { store, staging, client, perf, gate, analyses, metrics, abort, pusher: None }
    }

    /// The same, queueing kept profiles for Pyroscope with `pusher`.
    pub fn pushing_with(self, pusher: Pusher) -> Capturer {
        Capturer { pusher: Some(pusher), ..self }
    }

    /// A new capture of `kind` by `rule` in `role`, named by the store, starting now.
    pub fn name(&self, rule: &str, role: CaptureRole, kind: ProfileKind) -> CaptureId {
        self.store.new_id(Utc::now(), rule, role, kind)
    }

    /// Downloads `pending`'s profile from `base` with `client` while holding its places:
    /// one among the captures in flight, and the target's CPU profiler or tracer
    /// (`slot_key` names it) for those kinds.
    pub async fn fetch(
        &self,
        mut pending: PendingCapture,
        client: &PprofClient,
        base: &reqwest::Url,
        slot_key: &str,
    ) -> StagedCapture {
        let kind = pending.kind;
        let _slot = match kind.is_exclusive() {
            true => Some(self.gate.exclusive(slot_key, kind).await),
            false => None,
        };
        let _permit = self.gate.in_flight().await;
        let clock = Instant::now();
        self.metrics.captures_in_flight.inc();
        pending.started_at = Utc::now();
        tracing::info!(id = %pending.id, url = %pending.url, "Capture started.");
        let staged = self.staging.file(pending.id.as_str());
        let seconds = pending.seconds.unwrap_or_default();
        let fetched = client.fetch(base, kind, seconds, staged.path(), None, &self.abort).await;
        pending.finished_at = Utc::now();
        self.metrics.captures_in_flight.dec();
        match fetched {
            Ok(fetched) => StagedCapture::ready(pending, staged, fetched.bytes, fetched.sha256, clock),
            Err(error) => StagedCapture::failed(pending, error.to_string(), clock),
        }
    }

    /// Samples `target` with perf events for `pending`, while holding its places: one
    /// among the captures in flight, and the target's perf slot (`slot_key`).
    pub async fn sample_perf(
        &self,
        mut pending: PendingCapture,
        target: PerfTarget,
        settings: PerfSettings,
        slot_key: &str,
    ) -> StagedCapture {
        let _slot = self.gate.exclusive(slot_key, ProfileKind::Perf).await;
        let _permit = self.gate.in_flight().await;
        let clock = Instant::now();
        self.metrics.captures_in_flight.inc();
        pending.started_at = Utc::now();
        tracing::info!(id = %pending.id, source = %pending.url, "Capture started.");
        let staged = self.staging.file(pending.id.as_str());
        let (sampler, dest, cancel) = (self.perf.clone(), staged.path().to_path_buf(), self.abort.clone());
        let frequency = settings.frequency_hz;
        let sampled = off_thread(move || sampler.capture(&target, &settings, &cancel, &dest)).await;
        pending.finished_at = Utc::now();
        self.metrics.captures_in_flight.dec();
        match sampled {
            Ok(captured) => {
                pending.perf = Some(captured.stats(frequency));
                StagedCapture::ready(pending, staged, captured.bytes, captured.sha256, clock)
            }
            Err(error) => StagedCapture::failed(pending, error.to_string(), clock),
        }
    }

    /// Analyzes a staged profile (profile.proto kinds) and keeps the capture. Returns its
    /// metadata, kept or failed.
    pub async fn keep(&self, staged: StagedCapture) -> CaptureMeta {
        let StagedCapture { state, clock } = staged;
        let (meta, body) = match state {
            Staged::Ready { mut pending, body, bytes, sha256, compare_with } => {
                if pending.kind.is_pprof() {
                    (pending.summary, pending.diff) = self.analyze(&pending, &body, compare_with).await;
                }
                pending.pyroscope = self.pusher.as_ref().and_then(|pusher| pusher.series(&pending));
                (pending.kept(bytes, sha256), Some(body))
            }
            Staged::Failed(meta) => (meta, None),
        };
        let (store, pusher, fallback) = (self.store.clone(), self.pusher.clone(), meta.clone());
        let kept = match spawn_blocking(move || keep_and_queue(&store, pusher.as_ref(), meta, body)).await {
            Ok(kept) => kept,
            Err(error) => fallback.not_stored(format!("cannot store the profile: {error}")),
        };
        self.metrics.capture(kept.kind, kept.is_ok(), clock.elapsed().as_secs_f64(), kept.bytes());
        if kept.is_ok() {
            let top = kept.summary.as_ref().map(|summary| top_line(summary, kept.kind)).unwrap_or_default();
            tracing::info!(id = %kept.id, target = %kept.target, bytes = kept.bytes(), top = %top, "Profile stored.");
        } else {
            tracing::warn!(id = %kept.id, target = %kept.target, error = kept.error().unwrap_or(""), "Capture failed.");
        }
        kept
    }

    /// The top functions of a validated, staged profile and, for a spike, what grew against
    /// `compare_with` or else the latest baseline of its target and kind. `None`s (and a
    /// log line) if that fails: the capture is kept regardless.
    async fn analyze(
        &self,
        pending: &PendingCapture,
        body: &StagedFile,
        compare_with: Option<CaptureId>,
    ) -> (Option<Summary>, Option<Diff>) {
        let (subject, path) = (Subject::of(pending), body.path().to_path_buf());
        let analyzed = self.analyses.run(crate::analyze::CAPTURE_ANALYSIS_TIME, move |store, budget| {
            let table = match FunctionTable::read(|| std::fs::File::open(&path), budget) {
                Ok(table) => table,
                Err(error) => {
                    tracing::warn!(id = %subject.id, error = %error, "Cannot summarize the profile.");
                    return (None, None);
                }
            };
            if let Some(why) = &table.cut_short {
                tracing::warn!(id = %subject.id, why = %why, "Analysis cut short.");
            }
            let summary = table.summary(TOP_KEPT, Measure::for_kind(subject.kind));
            let diff = subject.diff(store, &table, compare_with, budget);
            (Some(summary), diff)
        });
        analyzed.await.unwrap_or_default()
    }
}

/// Keeps a capture and, once it is kept, queues its profile for Pyroscope if it goes
/// there: held before the store takes it, so that a store that moves or uploads the file
/// leaves it to queue. Blocking.
fn keep_and_queue(
    store: &ProfileStore,
    pusher: Option<&Pusher>,
    mut meta: CaptureMeta,
    body: Option<StagedFile>,
) -> CaptureMeta {
    let held = match (pusher, &body) {
        (Some(pusher), Some(body)) if meta.pyroscope.is_some() => {
            let held = pusher.hold(body.path(), meta.id.as_str());
            if held.is_none() {
                // It will not be pushed: no link to a view that would stay empty.
                meta.pyroscope = None;
            }
            held.map(|held| (pusher, held))
        }
        _ => None,
    };
    let kept = store.keep(meta, body);
    if let Some((pusher, held)) = held.filter(|_| kept.is_ok()) {
        pusher.capture_kept(&kept, held);
    }
    kept
}

/// What a new capture's analysis needs to know of it.
struct Subject {
    id: CaptureId,
    target: String,
    kind: ProfileKind,
    role: CaptureRole,
}

impl Subject {
    fn of(pending: &PendingCapture) -> Subject {
        Subject {
            id: pending.id.clone(),
            target: pending.target.clone(),
            kind: pending.kind,
            role: pending.role,
        }
    }

    /// What grew against `compare_with`, or for a spike the latest baseline of its target
    /// and kind, if there is one.
    fn diff(
        &self,
        store: &ProfileStore,
        table: &FunctionTable,
        compare_with: Option<CaptureId>,
        budget: &crate::analyze::Budget,
    ) -> Option<Diff> {
        let before_window = compare_with.is_some();
        let base = match compare_with {
            Some(base) => base,
            None if self.role == CaptureRole::Spike => {
                stored::latest_baseline_of(store, &self.target, self.kind, &self.id)?.id
            }
            None => return None,
        };
        let measure = Measure::for_kind(self.kind);
        stored::function_table(store, &base, budget)
            .and_then(|base_table| {
                diff(table, &base_table, &base, DIFF_KEPT, measure)
                    .map(|diff| Diff { before_window, ..diff })
                    .map_err(|error| AnalysisError::NotApplicable(error.to_string()))
            })
            .inspect_err(|error| {
                tracing::warn!(id = %self.id, base = %base, error = %error, "Cannot compare with the earlier profile.")
            })
            .ok()
    }
}
