//! Captures made of the recorder's profiles: a recorded target's CPU profile, merged from
//! the segments over the job's window (never a second request to its CPU profiler), and
//! the snapshot from just before the window, which the newest heap or goroutine profile is
//! compared with.

use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use tokio::task::spawn_blocking;

use super::capture::{Capturer, StagedCapture};
use crate::capture::MAX_UNZIP_RATIO;
use crate::durable::Hashed;
use crate::model::{PendingCapture, ProfileKind, Window};
use crate::recorder::{Opened, Recording, Segment, merge_segments, skipped_text};
use crate::rules::Job;

/// The window a job's captures of recorded kinds cover: from the trigger's start (an
/// alert's `startsAt`, a watch rule's first verified tick) minus the rule's lookback, to
/// `now` plus the rule's seconds. A baseline covers only what comes after `now`.
pub fn window(job: &Job, now: DateTime<Utc>) -> Window {
    let rule = job.rule();
    let (start, lookback) = match job.is_baseline() {
        true => (now, Duration::zero()),
        false => (
            job.trigger.starts_at.unwrap_or(now).min(now),
            rule.lookback.and_then(|l| Duration::from_std(l).ok()).unwrap_or_default(),
        ),
    };
    Window { from: start - lookback, to: now + Duration::seconds(rule.seconds.into()) }
}

/// A recorded target's CPU (or perf) profile over `pending`'s window: waits until the
/// recorder has recorded past its end, then merges the segments that overlap it.
pub async fn merged(
    capturer: &Capturer,
    recording: &Recording,
    mut pending: PendingCapture,
) -> StagedCapture {
    let (clock, kind) = (Instant::now(), pending.kind);
    let window = pending.window.expect("a capture from the recorder has a window");
    let config = recording.config();
    let period = config.interval(kind).unwrap_or_default();
    pending.seconds = Some(match kind {
        ProfileKind::Cpu => config.cpu_seconds(),
        _ => period.as_secs() as u32,
    });
    tracing::info!(id = %pending.id, from = %window.from, to = %window.to, "Capture from the recorder: waiting for its segments to reach the window's end.");
    // The segment running at the window's end ends within a period, and its download
    // within the capture's margin after that.
    let wait =
        (window.to - Utc::now()).to_std().unwrap_or_default() + period + capturer.client.timeout(kind, 0);
    let deadline = tokio::time::Instant::now() + wait;
    let reached = tokio::select! {
        reached = recording.tape.wait_until(kind, window.to, deadline) => reached,
        () = capturer.abort.cancelled() => {
            return StagedCapture::failed(pending, "stopped: alertprof is shutting down", clock);
        }
    };
    let segments = recording.tape.overlapping(kind, window);
    let what = if kind == ProfileKind::Cpu { "CPU".to_string() } else { kind.to_string() };
    if segments.is_empty() {
        let why = recording.trouble(kind).unwrap_or_else(|| "none was recorded".into());
        let (from, to) = (window.from.format("%H:%M:%S"), window.to.format("%H:%M:%S"));
        let reason = format!("the recorder has no {what} segment from {from} to {to}: {why}");
        return StagedCapture::failed(pending, reason, clock);
    }
    if !reached {
        let why = recording.trouble(kind).unwrap_or_else(|| "no segment came in time".into());
        tracing::warn!(id = %pending.id, why = %why, "The recorder did not reach the window's end; the capture covers less.");
    }
    merge_into(capturer, pending, segments, clock).await
}

/// Merges `segments` into the capture's staged file; the capture covers what they cover.
pub async fn merge_into(
    capturer: &Capturer,
    mut pending: PendingCapture,
    segments: Vec<Segment>,
    clock: Instant,
) -> StagedCapture {
    let staged = capturer.staging.file(pending.id.as_str());
    let dest = staged.path().to_path_buf();
    let limit = capturer.client.max_profile_bytes().saturating_mul(MAX_UNZIP_RATIO);
    let merged = match spawn_blocking(move || merge_segments(segments, limit, &dest)).await {
        Ok(Ok(merged)) => merged,
        Ok(Err(error)) => return merge_failed(pending, &error, clock),
        Err(error) => return merge_failed(pending, &error, clock),
    };
    if !merged.skipped.is_empty() {
        tracing::warn!(id = %pending.id, skipped = %skipped_text(&merged.skipped), "Segments left out of the merge.");
    }
    let (first, last) =
        (merged.used.first().expect("merged from one at least"), merged.used.last().expect("one"));
    (pending.started_at, pending.finished_at) = (first.from, last.to);
    pending.seconds = Some(merged.used.iter().map(|s| (s.to - s.from).num_seconds().max(0) as u32).sum());
    pending.segments = merged.used;
    StagedCapture::ready(pending, staged, merged.bytes, merged.sha256, clock)
}

fn merge_failed(pending: PendingCapture, why: &dyn std::fmt::Display, clock: Instant) -> StagedCapture {
    StagedCapture::failed(pending, format!("cannot merge the recorder's segments: {why}"), clock)
}

/// The recorder's snapshot of the pending capture's kind from just before its window (or,
/// if it reaches back less far, its earliest since). `None` if it has none taken before
/// `now`.
pub fn snapshot_before(
    recording: &Recording,
    kind: ProfileKind,
    window: Window,
    now: DateTime<Utc>,
) -> Option<Opened> {
    recording
        .tape
        .at_or_before(kind, window.from)
        .or_else(|| recording.tape.first_after(kind, window.from).filter(|o| o.segment.to < now))
}

/// Copies a recorded snapshot into the capture's staged file.
pub async fn snapshot_into(
    capturer: &Capturer,
    mut pending: PendingCapture,
    opened: Opened,
    clock: Instant,
) -> StagedCapture {
    let staged = capturer.staging.file(pending.id.as_str());
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
            (pending.started_at, pending.finished_at) = (segment.to, segment.to);
            pending.segments = vec![segment];
            StagedCapture::ready(pending, staged, bytes, sha256, clock)
        }
        Err(error) => {
            StagedCapture::failed(pending, format!("cannot copy the recorder's snapshot: {error}"), clock)
        }
    }
}
