//! The sampling loop per target, watch rules and periodic baselines: each target is sampled
//! every `sample_interval` (or its shortest watch interval); after a sample, due watch rules
//! are evaluated and, when they trigger, run through the same job steps as alerts; due
//! baselines are taken the same way when the target is quiet.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Rule};
use crate::gate::CooldownKey;
use crate::metrics::Metrics;
use crate::model::{CaptureRole, Decision, Outcome, Trigger, TriggerSource};
use crate::pipeline::decisions::DecisionLog;
use crate::pipeline::job::outcome::{decision_for, refusal_decision};
use crate::pipeline::job::verify::quiet;
use crate::pipeline::job::{JobSteps, run_job};
use crate::pipeline::live::LiveConfig;
use crate::pipeline::queue::RunningJobs;
use crate::recorder::Seen;
use crate::rules::Job;
use crate::verify::sampler::{Probe, sample};
use crate::verify::{Sample, Verdict};

/// A scrape of a target's /metrics may take at most this long (and never longer than the
/// sampling interval).
const MAX_SCRAPE_TIME: Duration = Duration::from_secs(5);

/// How often a periodic baseline that is due is tried while the target is not quiet.
const BASELINE_RETRY: Duration = Duration::from_secs(60);

/// What the sampling loops use.
#[derive(Clone)]
pub struct Sampling {
    pub steps: JobSteps,
    pub decisions: DecisionLog,
    pub jobs: RunningJobs,
    pub metrics: Arc<Metrics>,
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

impl Sampling {
    /// Samples every target until `shutdown`; starts over with the new config on reload.
    pub async fn run(self, config: LiveConfig, shutdown: CancellationToken) {
        let mut changes = config.changes();
        loop {
            let config = changes.borrow_and_update().clone();
            self.steps.verifier.retain(|name| config.target(name).is_some());
            self.metrics.signal.clear();
            let round = shutdown.child_token();
            let tasks = TaskTracker::new();
            for index in 0..config.targets.len() {
                tasks.spawn(TargetSampler::new(self.clone(), config.clone(), index).run(round.clone()));
            }
            tasks.close();
            let reload = tokio::select! {
                changed = changes.changed() => changed.is_ok(),
                () = shutdown.cancelled() => false,
            };
            round.cancel();
            tasks.wait().await;
            if !reload {
                break;
            }
        }
    }
}

/// Whether a rule's run is its watch or its periodic baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Run {
    Watch,
    Baseline,
}

/// One rule's run on the target: `(rule index, which run)`.
type RunKey = (usize, Run);

/// One target's sampling loop and the state it owns.
struct TargetSampler {
    sampling: Sampling,
    config: Arc<Config>,
    index: usize,
    interval: Duration,
    /// The target's rules, with their index in the config.
    rules: Vec<usize>,
    /// When each run last ran, and the outcome it last came to.
    last_run: HashMap<RunKey, Instant>,
    last_outcome: HashMap<RunKey, Outcome>,
    /// Runs whose job is still running.
    running: Arc<Mutex<HashSet<RunKey>>>,
    /// The first tick of each watch rule's current run of verified ticks: the trigger's
    /// start, which a lookback reaches back from.
    verified_since: HashMap<usize, DateTime<Utc>>,
    samples: u64,
}

impl TargetSampler {
    fn new(sampling: Sampling, config: Arc<Config>, index: usize) -> TargetSampler {
        let rules = (0..config.rules.len()).filter(|&r| config.rules[r].targets.contains(&index)).collect();
        TargetSampler {
            interval: sampling_interval(&config, index),
            sampling,
            config,
            index,
            rules,
            last_run: HashMap::new(),
            last_outcome: HashMap::new(),
            running: Arc::default(),
            verified_since: HashMap::new(),
            samples: 0,
        }
    }

    fn rule_refs(&self) -> Vec<&Rule> {
        self.rules.iter().map(|&r| &self.config.rules[r]).collect()
    }

    async fn run(mut self, stop: CancellationToken) {
        let config = self.config.clone();
        let target = &config.targets[self.index];
        // Targets with templated URLs have no one instance to sample.
        if target.endpoint.is_none() {
            return;
        }
        // A rule that reaches back verifies on readings as old as the recorder's (an alert
        // may come any time after its start).
        let reach = match self.rule_refs().iter().any(|rule| rule.lookback.is_some()) {
            true => target.recorder.as_ref().map(|recorder| recorder.keep).unwrap_or_default(),
            false => Duration::ZERO,
        };
        self.sampling.steps.verifier.set_reach(&target.name, reach);
        let rules: Vec<Rule> = self.rule_refs().into_iter().cloned().collect();
        let rules: Vec<&Rule> = rules.iter().collect();
        let new_probe = || Probe::new(target, &rules, &config.cgroup_root, &config.proc_root);
        let mut probe = new_probe();
        let client = self.sampling.steps.capturer.client.http().clone();
        let started = Instant::now();
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.cancelled() => break,
            }
            let timeout = self.interval.min(MAX_SCRAPE_TIME);
            let taken = tokio::select! {
                taken = sample(probe, &client, started.elapsed(), timeout) => taken,
                () = stop.cancelled() => break,
            };
            probe = match taken {
                Ok((back, readings)) => {
                    self.publish(&back, readings);
                    back
                }
                Err(error) => {
                    // A fault reading one target must not end its sampling for good.
                    tracing::error!(target = %target.name, error = %error, "Sampling failed; starting over at the next tick.");
                    new_probe()
                }
            };
            self.decide_runs(Utc::now());
        }
    }

    /// Tells the recorder what was seen of the process, `/metrics` the readings, and keeps
    /// them for verifying.
    fn publish(&mut self, probe: &Probe, readings: Sample) {
        self.samples += 1;
        let (name, now) = (&self.config.targets[self.index].name, Utc::now());
        let steps = &self.sampling.steps;
        if let Some(found) = probe.found() {
            steps.recorder.observe(name, Seen::Process(found), now);
        }
        if let Some(started) = probe.start_time() {
            steps.recorder.observe(name, Seen::StartTime(started), now);
        }
        for (signal, value) in &readings {
            let labels = vec![("target", name.to_string()), ("signal", signal.to_string())];
            match value {
                Ok(value) => drop(self.sampling.metrics.signal.get_or_create(&labels).set(*value)),
                Err(_) => drop(self.sampling.metrics.signal.remove(&labels)),
            }
        }
        steps.verifier.record(name, now, readings);
        steps.verifier.record_bases(name, probe.bases());
    }

    /// Each rule's due runs after a sample: its watch, if it has one, and its periodic
    /// baseline, once the target has been sampled twice.
    fn decide_runs(&mut self, now: DateTime<Utc>) {
        let config = self.config.clone();
        for rule_index in self.rules.clone() {
            let rule = &config.rules[rule_index];
            let watch = match rule.watch {
                Some(every) if self.due((rule_index, Run::Watch), every) => Some(self.watch(rule_index, now)),
                _ => None,
            };
            let baseline = rule
                .baseline
                .every
                .filter(|_| self.samples >= 2 && self.due((rule_index, Run::Baseline), BASELINE_RETRY))
                .and_then(|_| self.baseline(rule_index, now));
            for (key, job, go) in watch.into_iter().chain(baseline) {
                self.start(key, job, go);
            }
        }
    }

    /// Whether a run is due: `every` since it last ran (within half a tick), and its job
    /// not still running.
    fn due(&self, key: RunKey, every: Duration) -> bool {
        let since = self.last_run.get(&key).is_none_or(|last| last.elapsed() + self.interval / 2 >= every);
        since && !self.running.lock().unwrap().contains(&key)
    }

    fn job(
        &self,
        rule_index: usize,
        source: TriggerSource,
        role: CaptureRole,
        since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Job {
        let target = &self.config.targets[self.index];
        Job {
            config: self.config.clone(),
            rule: rule_index,
            target: self.index,
            trigger: Trigger { starts_at: since.or(Some(now)), ..Trigger::local(source, Some(now)) },
            dedupe: None,
            pending: None,
            endpoint: target.endpoint.clone().expect("a sampled target is not templated"),
            role,
        }
    }

    /// A watch rule: does its condition hold, and does the gate let it through?
    fn watch(&mut self, rule_index: usize, now: DateTime<Utc>) -> (RunKey, Job, Result<(), Decision>) {
        let rule = &self.config.rules[rule_index];
        let target = &self.config.targets[self.index];
        let verdict = self.sampling.steps.verifier.verify(&target.name, &rule.verify, now);
        let since = match &verdict {
            Verdict::Holds { .. } => Some(*self.verified_since.entry(rule_index).or_insert(now)),
            Verdict::NotVerified { .. } => self.verified_since.remove(&rule_index).and(None),
        };
        let job = self.job(rule_index, TriggerSource::Watch, CaptureRole::Spike, since, now);
        let go = match verdict {
            Verdict::NotVerified { reason, readings } => {
                Err(Decision { readings, ..decision_for(&job, Outcome::NotVerified, reason) })
            }
            Verdict::Holds { readings, why } => {
                match self.sampling.steps.gate.check(None, &job.cooldown_key(), now) {
                    Some(refusal) => Err(refusal_decision(&job, refusal, readings)),
                    None => {
                        tracing::info!(rule = %rule.name, target = %target.name, why = %why.join("; "), "Watch rule triggered.");
                        Ok(())
                    }
                }
            }
        };
        ((rule_index, Run::Watch), job, go)
    }

    /// A periodic baseline, if its own cooldown is over: is the target quiet?
    fn baseline(&self, rule_index: usize, now: DateTime<Utc>) -> Option<(RunKey, Job, Result<(), Decision>)> {
        let rule = &self.config.rules[rule_index];
        let target = &self.config.targets[self.index];
        let key =
            CooldownKey::new(&rule.name, CaptureRole::Baseline, std::borrow::Cow::Borrowed(&*target.name));
        if self.sampling.steps.gate.check(None, &key, now).is_some() {
            return None;
        }
        let job = self.job(rule_index, TriggerSource::Baseline, CaptureRole::Baseline, None, now);
        let go = quiet(&self.sampling.steps, &job, now).map(|_| ()).map_err(|decision| *decision);
        Some(((rule_index, Run::Baseline), job, go))
    }

    /// Every run ends in a decision: a refusal that repeats the previous outcome is counted
    /// and debug-logged, not listed; a job that goes ahead runs through the job steps.
    fn start(&mut self, key: RunKey, job: Job, go: Result<(), Decision>) {
        self.last_run.insert(key, Instant::now());
        let decisions = &self.sampling.decisions;
        let decision = match go {
            Err(decision) => decision,
            Ok(()) => {
                self.last_outcome.insert(key, Outcome::Captured);
                self.running.lock().unwrap().insert(key);
                let dropped = decision_for(&job, Outcome::Dropped, "alertprof shut down before the job ran");
                let (steps, task_decisions, running) =
                    (self.sampling.steps.clone(), decisions.clone(), self.running.clone());
                let spawned = self.sampling.jobs.spawn(async move {
                    task_decisions.record(run_job(&steps, job, None).await);
                    running.lock().unwrap().remove(&key);
                });
                if !spawned {
                    self.running.lock().unwrap().remove(&key);
                    decisions.record(dropped);
                }
                return;
            }
        };
        if self.last_outcome.insert(key, decision.outcome) == Some(decision.outcome) {
            decisions.record_repeat(&decision);
        } else {
            decisions.record(decision);
        }
    }
}
