//! Where a job's `perf` capture samples on this host (the alert's cgroup, or the target's
//! process by its pid, its port or its cgroup), and how.

use crate::capture::perf::PerfLookup;
use crate::perf::PerfSettings;
use crate::rules::Job;

/// Where to look for the process or cgroup of `job`.
pub fn lookup(job: &Job) -> PerfLookup {
    PerfLookup {
        cgroup: job.endpoint.cgroup.clone(),
        process: job.target().process.clone(),
        cgroup_root: job.config.cgroup_root.clone(),
        proc_root: job.config.proc_root.clone(),
    }
}

/// How a job's `perf` capture samples: the config's frequency, the rule's seconds, the
/// host's /proc.
pub fn settings(job: &Job) -> PerfSettings {
    let config = &job.config;
    PerfSettings {
        frequency_hz: config.capture.perf_frequency,
        duration: std::time::Duration::from_secs(job.rule().seconds.into()),
        proc_root: config.proc_root.clone(),
    }
}
