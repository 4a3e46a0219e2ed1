//! Before any request: is the alert this instance's (its cgroup on this node), does the
//! rule's condition hold on local readings (or, for a baseline, is the target quiet), and
//! where may the requests go (a templated target's host resolved and checked).

use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::outcome::decision_for;
use super::steps::JobSteps;
use crate::capture::PprofClient;
use crate::model::endpoint::check_resolved;
use crate::model::{Decision, EndpointError, Outcome, Readings, Refusal, TriggerSource};
use crate::rules::Job;
use crate::verify::Verdict;
use crate::verify::cgroup::CgroupReader;
use crate::verify::sampler::{CgroupNow, sample_now};

/// How long a templated target's /metrics may take when verified on arrival.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request may not go where a templated target's labels lead.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: std::io::Error },
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
}

/// The readings a job goes on with and why its condition holds, or the decision that it
/// does not.
pub type Verified = Result<(Readings, Vec<String>), Box<Decision>>;

/// An alert whose cgroup (from its labels) is not on this node is another instance's.
pub async fn elsewhere(job: &Job) -> Option<Decision> {
    let cgroup = job.endpoint.cgroup.clone()?;
    let reader = CgroupReader::new(&job.config.cgroup_root, &job.config.proc_root);
    let path = cgroup.clone();
    let dirs = tokio::task::spawn_blocking(move || reader.dirs_of_path(&path)).await.unwrap_or_default();
    if dirs.cpu.is_some() || dirs.cpuacct.is_some() || dirs.memory.is_some() {
        return None;
    }
    let reason = format!("cgroup /{} is not on this node", cgroup.display());
    Some(decision_for(job, Outcome::Elsewhere, reason))
}

/// For a spike, whether the rule's signals hold; for a baseline, whether the target is
/// quiet.
pub async fn verify(steps: &JobSteps, job: &Job, now: DateTime<Utc>) -> Verified {
    if job.is_baseline() {
        return quiet(steps, job, now).map(|readings| (readings, Vec::new()));
    }
    let (rule, target) = (job.rule(), job.target());
    let verdict = if job.endpoint.per_alert() && !rule.verify.is_empty() {
        on_arrival(steps, job).await
    } else if rule.lookback.is_some() {
        let from = super::from_recorder::window(job, now).from;
        steps.verifier.verify_since(&target.name, &rule.verify, from, now)
    } else {
        steps.verifier.verify(&target.name, &rule.verify, now)
    };
    match verdict {
        Verdict::Holds { readings, why } => Ok((readings, why)),
        Verdict::NotVerified { reason, readings } => {
            Err(Box::new(Decision { readings, ..decision_for(job, Outcome::NotVerified, reason) }))
        }
    }
}

/// For a baseline: the readings, if the rule's signals are quiet on the target — each one
/// read and none triggering (a baseline taken during a spike would hide it) — and, for a
/// periodic one, the rule out of its cooldown. Else the decision saying why not.
pub fn quiet(steps: &JobSteps, job: &Job, now: DateTime<Utc>) -> Result<Readings, Box<Decision>> {
    let (rule, target) = (job.rule(), job.target());
    let not_quiet = |why: String, readings: Readings| {
        let reason = format!("not quiet, no baseline: {why}");
        Box::new(Decision { readings, ..decision_for(job, Outcome::NotVerified, reason) })
    };
    let spike_cooldown = crate::gate::CooldownKey::new(
        &rule.name,
        crate::model::CaptureRole::Spike,
        job.endpoint.gate_target(&target.name),
    );
    if job.trigger.source == TriggerSource::Baseline
        && let Some(Refusal::Cooldown { until }) = steps.gate.check(None, &spike_cooldown, now)
    {
        return Err(not_quiet(
            format!("the rule captured a spike; in cooldown until {}", crate::model::text::time(&until)),
            Readings::new(),
        ));
    }
    // A templated target has no local readings: its alert resolving is what says quiet.
    if job.endpoint.per_alert() {
        return Ok(Readings::new());
    }
    let readings = steps.verifier.readings(&target.name);
    let mut loud = Vec::new();
    for check in &rule.verify {
        let key = check.signal.key();
        if !readings.contains_key(&key) {
            loud.push(format!("no reading of {key}"));
        } else if let Verdict::Holds { why, .. } =
            steps.verifier.verify(&target.name, std::slice::from_ref(check), now)
        {
            loud.extend(why);
        }
    }
    if loud.is_empty() { Ok(readings) } else { Err(not_quiet(loud.join("; "), readings)) }
}

/// Verifies a templated target on its instance's /metrics and, with the alert's cgroup on
/// this node, on the cgroup's readings, read now.
async fn on_arrival(steps: &JobSteps, job: &Job) -> Verdict {
    let (rule, target) = (job.rule(), job.target());
    let url = job.endpoint.metrics_url.as_ref();
    let shared = steps.capturer.client.http().clone();
    let http = match url {
        Some(url) => match checked_addresses(url, job).await {
            Ok(Some((host, addresses))) => crate::http::builder()
                .resolve_to_addrs(&host, &addresses)
                .build()
                .expect("the HTTP client builds"),
            Ok(None) => shared,
            Err(why) => {
                return Verdict::NotVerified {
                    reason: format!("no reading: refused {url}: {why}"),
                    readings: Readings::new(),
                };
            }
        },
        None => shared,
    };
    let config = &job.config;
    let cgroup = job.endpoint.cgroup.as_deref().map(|cgroup| CgroupNow {
        cgroup,
        cgroup_root: &config.cgroup_root,
        proc_root: &config.proc_root,
    });
    let sample = sample_now(target, &[rule], url, &http, SCRAPE_TIMEOUT, cgroup).await;
    let (sample, bases) = sample;
    steps.verifier.judge_sample(&rule.verify, sample, &bases)
}

/// For a templated URL with a host name: the addresses it resolves to, once checked
/// against the allow list (no link-local or metadata address), to pin the connection to.
/// `None` when there is nothing to pin (fixed URLs; IP literals were checked at intake).
async fn checked_addresses(
    url: &reqwest::Url,
    job: &Job,
) -> Result<Option<(String, Vec<SocketAddr>)>, Refused> {
    let Some(host) = url.domain().filter(|_| job.endpoint.templated) else { return Ok(None) };
    let port = url.port_or_known_default().unwrap_or(80);
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| Refused::Resolve { host: host.to_string(), source })?
        .collect();
    let ips: Vec<std::net::IpAddr> = addresses.iter().map(SocketAddr::ip).collect();
    check_resolved(&ips, &job.target().allowed_targets)?;
    Ok(Some((host.to_string(), addresses)))
}

/// The pprof client for a job: the shared one, or one pinned to checked addresses.
pub async fn pinned_client(shared: &PprofClient, job: &Job) -> Result<PprofClient, Refused> {
    let Some(pprof_url) = &job.endpoint.pprof_url else { return Ok(shared.clone()) };
    Ok(match checked_addresses(pprof_url, job).await? {
        Some((host, addresses)) => shared.pinned(&host, &addresses),
        None => shared.clone(),
    })
}
