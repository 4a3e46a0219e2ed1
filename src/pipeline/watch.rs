//! The sampling loop per target, watch rules and periodic baselines: each target is sampled
//! every `sample_interval` (or its shortest watch interval); after a sample, due watch rules
//! are evaluated and, when they trigger, run through the same pipeline as alerts; due
//! baselines are taken the same way when the target is quiet.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::App;
use super::job::{decision_for, quiet, refusal_decision, run_job};
use crate::config::Config;
use crate::model::{Decision, Outcome, Trigger, TriggerSource};
use crate::recorder::Seen;
use crate::rules::Job;
use crate::verify::Verdict;
use crate::verify::sampler::{Probe, sample};

/// A scrape of a target's /metrics may take at most this long (and never longer than the
/// sampling interval).
const MAX_SCRAPE_TIME: Duration = Duration::from_secs(5);

/// How often a periodic baseline that is due is tried while the target is not quiet.
const BASELINE_RETRY: Duration = Duration::from_secs(60);

/// Samples every target until `shutdown`; starts over with the new config on reload.
pub async fn run_sampling(app: Arc<App>, shutdown: CancellationToken) {
    let mut reloads = app.reloads.subscribe();
    loop {
        let config = app.config();
        app.verifier.retain(|name| config.target(name).is_some());
        app.metrics.signal.clear();
        let round = shutdown.child_token();
        let tasks = TaskTracker::new();
        for index in 0..config.targets.len() {
            tasks.spawn(sample_target(app.clone(), config.clone(), index, round.clone()));
        }
        tasks.close();
        let reload = tokio::select! {
            changed = reloads.changed() => changed.is_ok(),
            () = shutdown.cancelled() => false,
        };
        round.cancel();
        tasks.wait().await;
        if !reload {
            break;
        }
    }
}

/// How often a target is sampled: `sample_interval`, or faster for a watch rule on it.
pub fn sampling_interval(config: &Config, target: usize) -> Duration {
    config
        .rules
        .iter()
        .filter(|rule| rule.targets.contains(&target))
        .filter_map(|rule| rule.watch)
        .fold(config.sample_interval, Duration::min)
}

async fn sample_target(app: Arc<App>, config: Arc<Config>, index: usize, stop: CancellationToken) {
    let target = &config.targets[index];
    // Targets with templated URLs have no one instance to sample.
    let Some(endpoint) = target.endpoint.clone() else { return };
    let rules: Vec<_> =
        config.rules.iter().enumerate().filter(|(_, rule)| rule.targets.contains(&index)).collect();
    let rule_refs: Vec<_> = rules.iter().map(|(_, rule)| *rule).collect();
    let interval = sampling_interval(&config, index);
    // A rule that reaches back verifies on readings as old as the recorder's (an alert may
    // come any time after its start).
    let reach = match rule_refs.iter().any(|rule| rule.lookback.is_some()) {
        true => target.recorder.as_ref().map(|recorder| recorder.keep).unwrap_or_default(),
        false => Duration::ZERO,
    };
    app.verifier.set_reach(&target.name, reach);
    let new_probe = || Probe::new(target, &rule_refs, &config.cgroup_root, &config.proc_root);
    let mut probe = new_probe();
    let client = app.client.http().clone();
    let started = Instant::now();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // When each watch rule (false) and periodic baseline (true) of a rule last ran, the
    // outcome it last came to, and whether its job is still running.
    let mut last_run: HashMap<(usize, bool), Instant> = HashMap::new();
    let mut last_outcome: HashMap<(usize, bool), Outcome> = HashMap::new();
    let running: Arc<Mutex<HashSet<(usize, bool)>>> = Default::default();
    // The first tick of each watch rule's current run of verified ticks: the trigger's
    // start, which a lookback reaches back from.
    let mut verified_since: HashMap<usize, chrono::DateTime<Utc>> = HashMap::new();
    let mut samples: u64 = 0;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => break,
        }
        let taken = tokio::select! {
            taken = sample(probe, &client, started.elapsed(), interval.min(MAX_SCRAPE_TIME)) => taken,
            () = stop.cancelled() => break,
        };
        let readings = match taken {
            Ok((back, readings)) => {
                probe = back;
                readings
            }
            Err(error) => {
                // A fault reading one target must not end its sampling for good.
                tracing::error!(target = %target.name, error = %error, "Sampling failed; starting over at the next tick.");
                probe = new_probe();
                continue;
            }
        };
        samples += 1;
        let now = Utc::now();
        // What the recorder tells a process's end by.
        if let Some(found) = probe.found() {
            app.recorder.observe(&target.name, Seen::Process(found), now);
        }
        if let Some(started) = probe.start_time() {
            app.recorder.observe(&target.name, Seen::StartTime(started), now);
        }
        for (signal, value) in &readings {
            let labels = vec![("target", target.name.to_string()), ("signal", signal.clone())];
            match value {
                Ok(value) => {
                    app.metrics.signal.get_or_create(&labels).set(*value);
                }
                Err(_) => {
                    app.metrics.signal.remove(&labels);
                }
            }
        }
        app.verifier.record(&target.name, now, readings);

        for (rule_index, rule) in &rules {
            let rule_index = *rule_index;
            let job = |source: TriggerSource, baseline: bool, since: Option<chrono::DateTime<Utc>>| Job {
                config: config.clone(),
                rule: rule_index,
                target: index,
                trigger: Trigger { starts_at: since.or(Some(now)), ..Trigger::local(source, Some(now)) },
                dedupe: None,
                pending: None,
                endpoint: endpoint.clone(),
                baseline,
            };
            let due = |key: (usize, bool), every: Duration| {
                let due = last_run.get(&key).is_none_or(|last| last.elapsed() + interval / 2 >= every);
                due && !running.lock().unwrap().contains(&key)
            };
            // A watch rule: does its condition hold, and does the gate let it through?
            let watch = rule.watch.filter(|&every| due((rule_index, false), every)).map(|_| {
                let verdict = app.verifier.verify(&target.name, &rule.verify, now);
                let since = match &verdict {
                    Verdict::Holds { .. } => Some(*verified_since.entry(rule_index).or_insert(now)),
                    Verdict::NotVerified { .. } => verified_since.remove(&rule_index).and(None),
                };
                let job = job(TriggerSource::Watch, false, since);
                let go = match verdict {
                    Verdict::NotVerified { reason, readings } => {
                        Err(Decision { readings, ..decision_for(&job, Outcome::NotVerified, reason) })
                    }
                    Verdict::Holds { readings, why } => {
                        match app.gate.check(None, &rule.name, &target.name, now) {
                            Some(refusal) => Err(refusal_decision(&job, refusal, readings)),
                            None => {
                                tracing::info!(rule = %rule.name, target = %target.name, why = %why.join("; "), "Watch rule triggered.");
                                Ok(())
                            }
                        }
                    }
                };
                (job, go)
            });
            // A periodic baseline: is one due (the gate's baseline cooldown is over), and is
            // the target quiet? Tried once the target has been sampled twice.
            let baseline = rule
                .baseline
                .every
                .filter(|_| samples >= 2 && due((rule_index, true), BASELINE_RETRY))
                .map(|_| job(TriggerSource::Baseline, true, None))
                .filter(|job| app.gate.check(None, &job.gate_rule(), &target.name, now).is_none())
                .map(|job| {
                    let go = quiet(&app, &job, now).map(|_| ()).map_err(|decision| *decision);
                    (job, go)
                });
            for (job, go) in watch.into_iter().chain(baseline) {
                let key = (rule_index, job.baseline);
                last_run.insert(key, Instant::now());
                match go {
                    // Every run ends in a decision; one that repeats the previous outcome is
                    // counted and debug-logged, not listed.
                    Err(decision) => {
                        if last_outcome.insert(key, decision.outcome) == Some(decision.outcome) {
                            app.decisions.record_repeat(&decision, &app.metrics);
                        } else {
                            app.record(decision);
                        }
                    }
                    Ok(()) => {
                        last_outcome.insert(key, Outcome::Captured);
                        running.lock().unwrap().insert(key);
                        let dropped =
                            decision_for(&job, Outcome::Dropped, "alertprof shut down before the job ran");
                        let (task_app, task_running) = (app.clone(), running.clone());
                        let spawned = app.spawn_job(async move {
                            run_job(&task_app, job, None).await;
                            task_running.lock().unwrap().remove(&key);
                        });
                        if !spawned {
                            running.lock().unwrap().remove(&key);
                            app.record(dropped);
                        }
                    }
                }
            }
        }
    }
}
