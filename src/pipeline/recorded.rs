//! Captures made of the recorder's profiles: a recorded target's CPU profile, merged from
//! the segments over the job's window (never a second request to its CPU profiler), and
//! the snapshot from just before the window, which the newest heap or goroutine profile is
//! compared with.

use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use tokio::task::spawn_blocking;

use super::App;
use super::capture::{Fetched, id_rule, pending};
use crate::capture::{MAX_UNZIP_RATIO, PprofClient};
use crate::durable::Hashed;
use crate::model::{CaptureMeta, CaptureStatus, ProfileKind, Readings, Window};
use crate::recorder::{Opened, Recording, Segment, merge_segments};
use crate::rules::Job;

/// The window a job's captures of recorded kinds cover: from the trigger's start (an
/// alert's `startsAt`, a watch rule's first verified tick) minus the rule's lookback, to
/// `now` plus the rule's seconds. A baseline covers only what comes after `now`.
pub(super) fn window(job: &Job, now: DateTime<Utc>) -> Window {
    let rule = job.rule();
    let start = match job.baseline {
        true => now,
        false => job.trigger.starts_at.unwrap_or(now).min(now),
    };
    let lookback = match job.baseline {
        true => Duration::zero(),
        false => rule.lookback.and_then(|l| Duration::from_std(l).ok()).unwrap_or_default(),
    };
    Window { from: start - lookback, to: now + Duration::seconds(rule.seconds.into()) }
}

/// A recorded target's CPU profile over `window`: waits until the recorder has recorded
/// past its end, then merges the segments that overlap it.
pub(super) async fn merged_cpu(
    app: &App,
    job: &Job,
    recording: &Recording,
    window: Window,
    readings: &Readings,
) -> Fetched {
    let clock = Instant::now();
    let config = recording.config();
    let seconds = config.cpu_seconds();
    let url = PprofClient::profile_url(&job.endpoint.pprof_url, ProfileKind::Cpu, seconds);
    let mut meta =
        match pending(app, job, ProfileKind::Cpu, readings, url.to_string(), id_rule(job, false)).await {
            Ok(meta) => meta,
            Err(meta) => return Fetched::unnamed(meta, clock),
        };
    meta.window = Some(window);
    tracing::info!(
        id = %meta.id,
        from = %window.from,
        to = %window.to,
        "Capture from the recorder: waiting for its CPU segments to reach the window's end."
    );
    // The segment running at the window's end ends within a period, and its download
    // within the capture's margin after that.
    let wait = (window.to - Utc::now()).to_std().unwrap_or_default()
        + config.cpu.unwrap_or_default()
        + app.client.timeout(ProfileKind::Cpu, 0);
    let deadline = tokio::time::Instant::now() + wait;
    let reached = tokio::select! {
        reached = recording.tape.wait_until(ProfileKind::Cpu, window.to, deadline) => reached,
        () = app.abort.cancelled() => {
            return Fetched::failed(meta, "stopped: alertprof is shutting down".into(), clock);
        }
    };
    let segments = recording.tape.overlapping(ProfileKind::Cpu, window);
    if segments.is_empty() {
        let why = recording.trouble(ProfileKind::Cpu).unwrap_or_else(|| "none was recorded".into());
        let error = format!(
            "the recorder has no CPU segment from {} to {}: {why}",
            window.from.format("%H:%M:%S"),
            window.to.format("%H:%M:%S")
        );
        return Fetched::failed(meta, error, clock);
    }
    if !reached {
        let why = recording.trouble(ProfileKind::Cpu).unwrap_or_else(|| "no segment came in time".into());
        tracing::warn!(id = %meta.id, why = %why, "The recorder did not reach the window's end; the capture covers less.");
    }
    merge_into(app, meta, segments, clock).await
}

/// Merges `segments` into the capture's staged file; the capture covers what they cover.
pub(super) async fn merge_into(
    app: &App,
    mut meta: CaptureMeta,
    segments: Vec<Segment>,
    clock: Instant,
) -> Fetched {
    let staged = app.staging.file(&meta.id);
    let (dest, limit) =
        (staged.path().to_path_buf(), app.config().capture.max_profile_bytes.saturating_mul(MAX_UNZIP_RATIO));
    let merged = spawn_blocking(move || merge_segments(segments, limit, &dest))
        .await
        .unwrap_or_else(|error| Err(error.to_string()));
    let merged = match merged {
        Ok(merged) => merged,
        Err(error) => {
            return Fetched::failed(meta, format!("cannot merge the recorder's segments: {error}"), clock);
        }
    };
    if !merged.skipped.is_empty() {
        tracing::warn!(id = %meta.id, skipped = %merged.skipped.join("; "), "Segments left out of the merge.");
    }
    let (first, last) =
        (merged.used.first().expect("merged from one at least"), merged.used.last().expect("one"));
    (meta.started_at, meta.finished_at) = (first.from, last.to);
    meta.seconds = Some(merged.used.iter().map(|s| (s.to - s.from).num_seconds().max(0) as u32).sum());
    meta.segments = merged.used;
    meta.status = CaptureStatus::Ok;
    meta.bytes = merged.bytes;
    meta.sha256 = Some(merged.sha256);
    Fetched { meta, staged: Some(staged), clock, compare_with: None }
}

/// The recorder's snapshot of `kind` from just before `window` (or, if it reaches back less
/// far, its earliest since), kept as a capture the newest is compared with. `None` if it
/// has none taken before `now`.
pub(super) async fn before_window(
    app: &App,
    job: &Job,
    recording: &Recording,
    kind: ProfileKind,
    window: Window,
    readings: &Readings,
    now: DateTime<Utc>,
) -> Option<Fetched> {
    let clock = Instant::now();
    let opened = recording
        .tape
        .at_or_before(kind, window.from)
        .or_else(|| recording.tape.first_after(kind, window.from).filter(|o| o.segment.to < now))?;
    let url = PprofClient::profile_url(&job.endpoint.pprof_url, kind, 0);
    let meta = match pending(app, job, kind, readings, url.to_string(), id_rule(job, true)).await {
        Ok(meta) => meta,
        Err(meta) => return Some(Fetched::unnamed(meta, clock)),
    };
    Some(snapshot_into(app, meta, opened, window, true, clock).await)
}

/// Copies a recorded snapshot into the capture's staged file; `before` if it is the one
/// from before the window.
pub(super) async fn snapshot_into(
    app: &App,
    mut meta: CaptureMeta,
    opened: Opened,
    window: Window,
    before: bool,
    clock: Instant,
) -> Fetched {
    let staged = app.staging.file(&meta.id);
    let dest = staged.path().to_path_buf();
    let segment = opened.segment.reference();
    let copied = spawn_blocking(move || {
        let mut copy = Hashed::new(std::fs::File::create(&dest)?);
        std::io::copy(&mut { opened.file }, &mut copy)?;
        copy.finish().map(|(_, bytes, sha256)| (bytes, sha256))
    })
    .await
    .unwrap_or_else(|error| Err(std::io::Error::other(error.to_string())));
    match copied {
        Ok((bytes, sha256)) => {
            (meta.started_at, meta.finished_at) = (segment.to, segment.to);
            meta.before_window = before;
            meta.window = Some(window);
            meta.segments = vec![segment];
            meta.status = CaptureStatus::Ok;
            meta.bytes = bytes;
            meta.sha256 = Some(sha256);
            Fetched { meta, staged: Some(staged), clock, compare_with: None }
        }
        Err(error) => Fetched::failed(meta, format!("cannot copy the recorder's snapshot: {error}"), clock),
    }
}
