//! Takes one sample of a target's signals: CPU and memory from its process and cgroup,
//! Go runtime numbers and named metrics from its `/metrics`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cgroup::{CgroupDirs, CgroupReader};
use super::procfs::{ProcReader, ProcessSample};
use super::reading::{NoReading, Sample, SampleError};
use super::target_metrics::{TargetMetrics, scrape};
use crate::config::{ProcessRef, Rule, Target};
use crate::model::{Bases, Basis, Signal, SignalKey};

/// A metric signal some rule reads from this target.
#[derive(Debug, Clone, PartialEq)]
struct MetricSignal {
    key: SignalKey,
    name: String,
    labels: BTreeMap<String, String>,
}

/// Everything needed to sample one target, and what the last sample left behind (CPU use
/// is a difference of two samples).
pub struct Probe {
    target: Target,
    metrics: Vec<MetricSignal>,
    cgroups: CgroupReader,
    procs: ProcReader,
    /// The process found for the target, with its start time against PID reuse.
    process: Option<(u32, u64)>,
    /// cgroup directories, found once per process.
    dirs: Option<CgroupDirs>,
    /// CPU time of the previous sample, to take the difference from.
    last_cpu: Option<CpuMark>,
    /// Host memory and CPUs, read once: they are the fallbacks of every sample.
    host: Option<(Option<u64>, Option<usize>)>,
    /// What the last sample found of the process: (PID, start ticks) or nothing there;
    /// `None` when there is no process to look for.
    found: Option<Option<(u32, u64)>>,
    /// `process_start_time_seconds` in the last scrape of the target's /metrics.
    start_time: Option<f64>,
    /// What 100% of each percent signal was in the last sample.
    bases: Bases,
}

/// CPU time used by the target at a wall-clock moment.
#[derive(Debug, Clone, Copy)]
struct CpuMark {
    used_ns: u64,
    wall: Duration,
    /// The process (PID, start time) it was read from; a new process starts over.
    whose: Option<(u32, u64)>,
}

/// Local readings: the signals, plus the memory limit `heap_percent` is taken against.
pub struct Local {
    pub sample: Sample,
    pub memory_limit: Option<u64>,
}

impl Probe {
    /// A probe for `target` reading the metric signals that `rules` ask of it.
    pub fn new(
        target: &Target,
        rules: &[&Rule],
        cgroup_root: &std::path::Path,
        proc_root: &std::path::Path,
    ) -> Probe {
        let mut metrics = Vec::new();
        for check in rules.iter().flat_map(|rule| &rule.verify) {
            if let Signal::Metric { name, labels } = &check.signal {
                let signal =
                    MetricSignal { key: check.signal.key(), name: name.clone(), labels: labels.clone() };
                if !metrics.contains(&signal) {
                    metrics.push(signal);
                }
            }
        }
        Probe {
            target: target.clone(),
            metrics,
            cgroups: CgroupReader::new(cgroup_root, proc_root),
            procs: ProcReader::new(proc_root),
            process: None,
            dirs: None,
            last_cpu: None,
            host: None,
            found: None,
            start_time: None,
            bases: Bases::new(),
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// What the last sample found of the target's process: (PID, start ticks), or `None`
    /// inside when it was not there; `None` when there is no process to look for.
    pub fn found(&self) -> Option<Option<(u32, u64)>> {
        self.found
    }

    /// What 100% of each percent signal was in the last sample, for reasons.
    pub fn bases(&self) -> &Bases {
        &self.bases
    }

    /// The process's start time as its last /metrics said.
    pub fn start_time(&self) -> Option<f64> {
        self.start_time
    }

    /// The target's process now, found again if it went away or its PID was reused.
    fn process(&mut self) -> Result<Option<ProcessSample>, NoReading> {
        let found = self.find_process();
        if matches!(self.target.process, Some(ProcessRef::Pid(_) | ProcessRef::ListenPort(_))) {
            self.found = Some(found.as_ref().ok().and(self.process));
        }
        found
    }

    fn find_process(&mut self) -> Result<Option<ProcessSample>, NoReading> {
        let pid = match &self.target.process {
            None | Some(ProcessRef::Cgroup(_) | ProcessRef::CgroupTemplate(_)) => return Ok(None),
            Some(ProcessRef::Pid(pid)) => *pid,
            Some(ProcessRef::ListenPort(port)) => {
                let cached = self.process.and_then(|(pid, start)| {
                    self.procs.sample(pid).filter(|s| s.start_ticks == start).map(|_| pid)
                });
                match cached.or_else(|| self.procs.pid_listening_on(*port)) {
                    Some(pid) => pid,
                    None => return Err(NoReading::NoListener(*port)),
                }
            }
        };
        let sample = self.procs.sample(pid).ok_or(NoReading::NoProcess(pid))?;
        if self.process != Some((pid, sample.start_ticks)) {
            self.process = Some((pid, sample.start_ticks));
            self.dirs = None;
        }
        Ok(Some(sample))
    }

    fn dirs(&mut self) -> CgroupDirs {
        if self.dirs.is_none() {
            self.dirs = Some(match (&self.target.process, self.process) {
                (Some(ProcessRef::Cgroup(path)), _) => self.cgroups.dirs_of_path(path),
                (_, Some((pid, _))) => self.cgroups.dirs_of_pid(pid),
                _ => CgroupDirs::default(),
            });
        }
        self.dirs.clone().unwrap_or_default()
    }

    /// (host memory, host CPUs), read on first use.
    fn host(&mut self) -> (Option<u64>, Option<usize>) {
        let procs = &self.procs;
        *self.host.get_or_insert_with(|| (procs.host_memory(), procs.host_cpus()))
    }

    /// CPU and memory from /proc and cgroups; `wall` is a monotonic clock reading.
    pub fn sample_local(&mut self, wall: Duration) -> Local {
        let mut sample = Sample::new();
        if self.target.process.is_none() {
            sample.insert(Signal::CpuPercent.key(), Err(NoReading::NoProcessConfigured));
            sample.insert(Signal::MemoryPercent.key(), Err(NoReading::NoProcessConfigured));
            return Local { sample, memory_limit: self.host().0 };
        }
        let process = match self.process() {
            Ok(process) => process,
            Err(why) => {
                self.last_cpu = None;
                sample.insert(Signal::CpuPercent.key(), Err(why.clone()));
                sample.insert(Signal::MemoryPercent.key(), Err(why.clone()));
                sample.insert(Signal::Threads.key(), Err(why));
                return Local { sample, memory_limit: None };
            }
        };
        let dirs = self.dirs();
        let (host_memory, host_cpus) = self.host();

        // CPU: the process's own time when known (on a bare host the cgroup is shared by
        // everything), else the cgroup's.
        let whose = self.process;
        let used = match &process {
            Some(p) => Some(p.cpu_ns),
            None => self.cgroups.cpu_usage_ns(&dirs),
        };
        let quota = self.cgroups.cpu_quota_cores(&dirs);
        let cores = quota
            .or_else(|| process.and_then(|p| p.cpus_allowed).map(|n| n as f64))
            .or_else(|| self.cgroups.cpuset_cpus(&dirs))
            .or_else(|| host_cpus.map(|n| n as f64))
            .unwrap_or(1.0);
        self.bases.insert(Signal::CpuPercent.key(), quota.map_or(Basis::Cpus(cores), Basis::Quota));
        let cpu = match (used, self.last_cpu) {
            (None, _) => Err(NoReading::NoCpuUsage),
            (Some(now_ns), Some(then)) if then.whose == whose && wall > then.wall => {
                let busy = now_ns.saturating_sub(then.used_ns) as f64;
                let elapsed = (wall - then.wall).as_nanos() as f64;
                Ok(busy / elapsed / cores * 100.0)
            }
            (Some(_), _) => Err(NoReading::FirstSample),
        };
        self.last_cpu = used.map(|used_ns| CpuMark { used_ns, wall, whose });
        sample.insert(Signal::CpuPercent.key(), cpu);

        // Memory: working set over the cgroup limit (host memory without one); a process
        // sharing its cgroup with others counts its own RSS.
        let cgroup_memory = self.cgroups.memory(&dirs);
        let cgroup_limit = cgroup_memory.and_then(|m| m.limit);
        let limit = cgroup_limit.or(host_memory);
        self.note_memory_basis(cgroup_limit, host_memory);
        let shared = self.cgroups.process_count(&dirs).is_none_or(|count| count > 1);
        let used = match (&process, cgroup_memory) {
            (Some(p), _) if shared || cgroup_memory.is_none() => Some(p.rss_bytes),
            (_, Some(memory)) => Some(memory.working_set),
            (Some(p), None) => Some(p.rss_bytes),
            (None, None) => None,
        };
        let memory = match (used, limit) {
            (Some(used), Some(limit)) if limit > 0 => Ok(used as f64 / limit as f64 * 100.0),
            (None, _) => Err(NoReading::NoMemoryUsage),
            _ => Err(NoReading::NoMemoryLimit),
        };
        sample.insert(Signal::MemoryPercent.key(), memory);
        if let Some(p) = process {
            sample.insert(Signal::Threads.key(), Ok(p.threads as f64));
        }
        Local { sample, memory_limit: limit }
    }

    /// Says what 100% of `memory_percent` is: the cgroup's memory limit, else the host's
    /// memory (none when neither is known).
    fn note_memory_basis(&mut self, cgroup_limit: Option<u64>, host_memory: Option<u64>) {
        let memory_basis = cgroup_limit.map(Basis::MemoryLimit).or(host_memory.map(Basis::HostMemory));
        match memory_basis {
            Some(basis) => drop(self.bases.insert(Signal::MemoryPercent.key(), basis)),
            None => drop(self.bases.remove(&Signal::MemoryPercent.key())),
        }
    }

    /// Adds what the target's `/metrics` says to a local sample.
    pub fn add_metrics(&mut self, local: &mut Local, scraped: Result<&TargetMetrics, NoReading>) {
        let sample = &mut local.sample;
        let metrics = match scraped {
            Ok(metrics) => metrics,
            Err(why) => {
                self.start_time = None;
                for key in [Signal::Goroutines.key(), Signal::HeapPercent.key()]
                    .into_iter()
                    .chain(self.metrics.iter().map(|m| m.key.clone()))
                {
                    sample.insert(key, Err(why.clone()));
                }
                sample.entry(Signal::Threads.key()).or_insert(Err(why));
                return;
            }
        };
        self.start_time = metrics.start_time();
        let found =
            |value: Option<f64>, name: &str| value.ok_or_else(|| NoReading::NotInMetrics(name.to_string()));
        sample.insert(Signal::Goroutines.key(), found(metrics.goroutines(), "go_goroutines"));
        if let Some(threads) = metrics.threads() {
            sample.insert(Signal::Threads.key(), Ok(threads));
        } else {
            sample.entry(Signal::Threads.key()).or_insert_with(|| found(None, "go_threads"));
        }
        let heap = found(metrics.heap_inuse_bytes(), "go_memstats_heap_inuse_bytes").and_then(|heap| {
            match local.memory_limit {
                Some(limit) if limit > 0 => Ok(heap / limit as f64 * 100.0),
                _ => Err(NoReading::NoMemoryLimit),
            }
        });
        sample.insert(Signal::HeapPercent.key(), heap);
        for metric in &self.metrics {
            sample.insert(
                metric.key.clone(),
                found(metrics.value(&metric.name, &metric.labels), metric.key.as_str()),
            );
        }
    }
}

/// Samples a target: local readings off the async threads, then its `/metrics`. A fault
/// while reading (a panic) comes back as an error, and the probe with it is gone.
pub async fn sample(
    probe: Probe,
    client: &reqwest::Client,
    wall: Duration,
    timeout: Duration,
) -> Result<(Probe, Sample), SampleError> {
    let (mut probe, mut local) = read_local(probe, wall).await?;
    match probe.target.metrics_url.as_ref().and_then(|spec| spec.fixed()).cloned() {
        Some(url) => match scrape(client, &url, timeout).await {
            Ok(metrics) => probe.add_metrics(&mut local, Ok(&metrics)),
            Err(error) => probe.add_metrics(&mut local, Err(NoReading::Scrape(Arc::new(error)))),
        },
        None => probe.add_metrics(&mut local, Err(NoReading::NoMetricsUrl)),
    }
    Ok((probe, local.sample))
}

/// Local readings off the async threads; a fault while reading (a panic) is an error.
async fn read_local(probe: Probe, wall: Duration) -> Result<(Probe, Local), SampleError> {
    off_thread(probe, move |probe| probe.sample_local(wall)).await
}

/// `read` of a probe off the async threads; a fault in it (a panic) is an error, and the
/// probe is gone with it.
async fn off_thread<T: Send + 'static>(
    mut probe: Probe,
    read: impl FnOnce(&mut Probe) -> T + Send + 'static,
) -> Result<(Probe, T), SampleError> {
    tokio::task::spawn_blocking(move || {
        let value = read(&mut probe);
        (probe, value)
    })
    .await
    .map_err(SampleError::from)
}

/// No local CPU or memory reading, for `why`.
fn no_local(why: NoReading) -> Local {
    let sample =
        Sample::from([(Signal::CpuPercent.key(), Err(why.clone())), (Signal::MemoryPercent.key(), Err(why))]);
    Local { sample, memory_limit: None }
}

/// Where to read a templated target's alert cgroup: the cgroup and the roots.
pub struct CgroupNow<'a> {
    pub cgroup: &'a Path,
    pub cgroup_root: &'a Path,
    pub proc_root: &'a Path,
}

/// How long CPU use is measured over when it is read on the alert's arrival.
pub const CPU_NOW_OVER: Duration = Duration::from_secs(1);

/// A sample taken now, for targets that are not sampled (templated ones): what their
/// instance's `/metrics` says, and with the alert's cgroup on this node, its CPU (over
/// `CPU_NOW_OVER`) and memory.
pub async fn sample_now(
    target: &Target,
    rules: &[&Rule],
    url: Option<&reqwest::Url>,
    client: &reqwest::Client,
    timeout: Duration,
    cgroup: Option<CgroupNow<'_>>,
) -> (Sample, Bases) {
    let (mut local, bases) = match cgroup {
        Some(at) => {
            let local_target =
                Target { process: Some(ProcessRef::Cgroup(at.cgroup.to_path_buf())), ..target.clone() };
            let probe = Probe::new(&local_target, rules, at.cgroup_root, at.proc_root);
            let wants_cpu =
                rules.iter().flat_map(|rule| &rule.verify).any(|check| check.signal == Signal::CpuPercent);
            let start = Instant::now();
            let read = async {
                let (probe, first) = read_local(probe, start.elapsed()).await?;
                if !wants_cpu {
                    return Ok((first, probe.bases));
                }
                tokio::time::sleep(CPU_NOW_OVER).await;
                read_local(probe, start.elapsed()).await.map(|(probe, second)| (second, probe.bases))
            };
            read.await.unwrap_or_else(|error: SampleError| {
                (no_local(NoReading::Fault(Arc::new(error))), Bases::new())
            })
        }
        None => (no_local(NoReading::NoLocalProcess), Bases::new()),
    };
    let mut probe = Probe::new(target, rules, Path::new("/nonexistent"), Path::new("/nonexistent"));
    match url {
        Some(url) => match scrape(client, url, timeout).await {
            Ok(metrics) => probe.add_metrics(&mut local, Ok(&metrics)),
            Err(error) => probe.add_metrics(&mut local, Err(NoReading::Scrape(Arc::new(error)))),
        },
        None => probe.add_metrics(&mut local, Err(NoReading::NoMetricsUrl)),
    }
    (local.sample, bases)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// A fault while reading (a panic) comes back as an error for the sampling loop to log
    /// and start over from, not as a panic that ends the loop; a new probe samples again.
    #[tokio::test]
    async fn a_fault_is_an_error() {
        crate::init();
        let text = "targets: [{name: t, pprof_url: \"http://127.0.0.1:1\", process: {pid: 1}}]";
        let config = Config::parse(text, std::path::Path::new(".")).unwrap();
        let root = std::path::Path::new("/nonexistent");
        let probe = || Probe::new(&config.targets[0], &[], root, root);
        let client = crate::http::client();
        // A read that panics, as a bug in reading would, on the path every sample takes.
        let faulty = off_thread(probe(), |_| -> Local { panic!("a fault while reading") });
        let error = faulty.await.err().unwrap();
        assert!(error.to_string().contains("a fault while reading"), "{error}");
        let (_, taken) =
            sample(probe(), &client, Duration::from_secs(2), Duration::from_secs(1)).await.unwrap();
        assert!(taken[&Signal::CpuPercent.key()].is_err(), "no process 1 under {root:?}: {taken:?}");
    }
}
