//! Runs the recorder: one recording per recorded target, started, changed and stopped as
//! the config says (a reload leaves unchanged recordings running, without a gap), and
//! when a recorded process ends, its last profiles kept with one decision and one
//! annotation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, Utc};
use futures_util::future::join_all;
use reqwest::Url;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::App;
use super::capture::{Fetched, keep, name};
use super::job::{outcome_of, with_captures};
use super::recorded::{merge_into, snapshot_into};
use super::workers::enforce_retention;
use crate::capture::PprofClient;
use crate::config::{EXIT_RULE, RecorderConfig};
use crate::model::{AnnotationOutcome, CaptureMeta, Decision, ProfileKind, Trigger, TriggerSource, Window};
use crate::recorder::{Exit, Recording, Tools, record};

/// How far back a process's last CPU profile reaches.
const LAST_CPU: Duration = Duration::minutes(1);

/// Records every recorded target until `shutdown`, following reloads.
pub async fn run_recording(app: Arc<App>, shutdown: CancellationToken) {
    let mut reloads = app.reloads.subscribe();
    let client = app.client.failing_when_in_use();
    let tasks = TaskTracker::new();
    let mut running: HashMap<String, (RecorderConfig, Url, CancellationToken)> = HashMap::new();
    loop {
        let config = app.config();
        let wanted: Vec<(String, RecorderConfig, Url)> = config
            .targets
            .iter()
            .filter_map(|target| {
                let endpoint = target.endpoint.as_ref()?;
                Some((target.name.to_string(), target.recorder.clone()?, endpoint.pprof_url.clone()))
            })
            .collect();
        let recordings: Vec<Arc<Recording>> = app.recorder.sync(
            &wanted.iter().map(|(name, config, _)| (name.clone(), config.clone())).collect::<Vec<_>>(),
            &app.metrics,
        );
        running.retain(|name, (config, url, stop)| {
            let same = wanted.iter().any(|(n, c, u)| n == name && c == config && u == url);
            if !same {
                stop.cancel();
            }
            same
        });
        for ((name, recorder, url), recording) in wanted.into_iter().zip(recordings) {
            if running.contains_key(&name) {
                continue;
            }
            let stop = shutdown.child_token();
            running.insert(name, (recorder, url.clone(), stop.clone()));
            let (app, client) = (app.clone(), client.clone());
            tasks.spawn(async move {
                let tools = Tools { client: &client, staging: &app.staging, metrics: &app.metrics };
                record(recording, url, tools, stop).await;
            });
        }
        tokio::select! {
            changed = reloads.changed() => if changed.is_err() { break },
            () = shutdown.cancelled() => break,
        }
    }
    for (_, (_, _, stop)) in running {
        stop.cancel();
    }
    tasks.close();
    tasks.wait().await;
}

/// Keeps the last profiles of each recorded process that ends, until `shutdown`.
pub async fn run_exits(app: Arc<App>, shutdown: CancellationToken) {
    let Some(mut exits) = app.recorder.take_exits() else { return };
    loop {
        let exit = tokio::select! {
            exit = exits.recv() => match exit {
                Some(exit) => exit,
                None => break,
            },
            () = shutdown.cancelled() => break,
        };
        app.metrics.recorder.exit(&exit.target);
        let task_app = app.clone();
        let spawned = app.spawn_job(async move {
            let decision = keep_last_profiles(&task_app, exit).await;
            task_app.record(decision);
        });
        if !spawned {
            break;
        }
    }
}

/// The recorder's latest heap and goroutine snapshots of a process that ended, and its CPU
/// segments of the last minute merged, kept as captures with `trigger.source: exit`.
async fn keep_last_profiles(app: &App, exit: Exit) -> Decision {
    let target = exit.target.as_str();
    let decision = |outcome, reason: String| Decision {
        target: Some(target.into()),
        ..Decision::new(Utc::now(), TriggerSource::Exit, outcome, reason)
    };
    let Some(recording) = app.recorder.get(target) else {
        return decision(
            crate::model::Outcome::Refused,
            format!("{}; the target is no longer recorded", exit.ended.why),
        );
    };
    let last = exit.ended.last_alive;
    let from = (last - LAST_CPU).max(exit.ended.since.unwrap_or(last - LAST_CPU));
    let window = Window { from, to: last };
    let trigger = Trigger { received_at: Some(exit.at), ..Trigger::local(TriggerSource::Exit, Some(last)) };
    let base = app.config().target(target).and_then(|t| t.endpoint.clone()).map(|e| e.pprof_url.clone());
    let url = |kind: ProfileKind, seconds: u32| {
        base.as_ref()
            .map(|base| PprofClient::profile_url(base, kind, seconds).to_string())
            .unwrap_or_default()
    };
    let config = recording.config();
    let since = exit.ended.since;
    let of_this_process = |to: chrono::DateTime<Utc>| since.is_none_or(|since| to > since);
    let mut fetched: Vec<Fetched> = Vec::new();
    for kind in [ProfileKind::Heap, ProfileKind::Goroutine].into_iter().filter(|&k| config.records(k)) {
        let Some(opened) = recording.tape.at_or_before(kind, last).filter(|o| of_this_process(o.segment.to))
        else {
            continue;
        };
        let meta = CaptureMeta::pending(target, EXIT_RULE, kind, trigger.clone(), url(kind, 0), Utc::now());
        let clock = Instant::now();
        match name(app, meta, EXIT_RULE.to_string()).await {
            Ok(meta) => fetched.push(snapshot_into(app, meta, opened, window, false, clock).await),
            Err(meta) => fetched.push(Fetched::unnamed(meta, clock)),
        }
    }
    if config.records(ProfileKind::Cpu) {
        let segments: Vec<_> = recording
            .tape
            .overlapping(ProfileKind::Cpu, window)
            .into_iter()
            .filter(|segment| segment.to <= last && of_this_process(segment.from))
            .collect();
        if !segments.is_empty() {
            let meta = CaptureMeta::pending(
                target,
                EXIT_RULE,
                ProfileKind::Cpu,
                trigger.clone(),
                url(ProfileKind::Cpu, config.cpu_seconds()),
                Utc::now(),
            );
            let clock = Instant::now();
            match name(app, meta, EXIT_RULE.to_string()).await {
                Ok(mut meta) => {
                    meta.window = Some(window);
                    fetched.push(merge_into(app, meta, segments, clock).await);
                }
                Err(meta) => fetched.push(Fetched::unnamed(meta, clock)),
            }
        }
    }
    if fetched.is_empty() {
        return decision(
            crate::model::Outcome::CaptureFailed,
            format!("{}; the recorder has nothing of it to keep", exit.ended.why),
        );
    }
    let captures = join_all(fetched.into_iter().map(|fetched| keep(app, fetched))).await;
    let (outcome, kept) = outcome_of(&captures, "its last ");
    let reason = format!("{}; {kept}", exit.ended.why);
    tracing::info!(target = %target, reason = %reason, "A recorded process ended; its last profiles kept.");
    if captures.iter().any(CaptureMeta::is_ok) {
        enforce_retention(app).await;
    }
    let annotations = annotate_exit(app, &captures, &exit.ended.why).await;
    Decision { annotations, ..with_captures(decision(outcome, reason), captures) }
}

/// One annotation for a process's end: what held its memory, and links to its last
/// profiles.
async fn annotate_exit(app: &App, captures: &[CaptureMeta], why: &str) -> Vec<AnnotationOutcome> {
    let Some(grafana) = app.grafana() else { return Vec::new() };
    let kept: Vec<&CaptureMeta> = captures.iter().filter(|c| c.is_ok()).collect();
    let Some(annotation) = grafana.exit_annotation(&kept, why) else { return Vec::new() };
    let first = kept[0].id.clone();
    let outcome = match grafana.annotate(&annotation, &app.abort).await {
        Ok(id) => {
            app.metrics.annotation("ok");
            AnnotationOutcome { capture: first, id: Some(id), error: None }
        }
        Err(error) => {
            app.metrics.annotation(error.result());
            tracing::warn!(error = %error, "Grafana annotation failed.");
            AnnotationOutcome { capture: first, id: None, error: Some(error.to_string()) }
        }
    };
    vec![outcome]
}
