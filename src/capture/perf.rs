//! `perf` captures: the kernel's perf events sample a process or a cgroup for the capture's
//! seconds, and the profile is written here, symbolized from the binaries on the host with
//! one cache shared by every capture (a binary is read once per build).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::config::ProcessRef;
use crate::durable::Hashed;
use crate::model::PerfStats;
use crate::perf::{PerfError, PerfSettings, PerfSummary, PerfTarget, Symbolizer};
use crate::verify::cgroup::CgroupReader;
use crate::verify::procfs::ProcReader;

/// What a perf capture merged from the recorder's segments says it was taken from.
pub const RECORDED_SOURCE: &str = "perf:recorder";

/// Why there is nothing to sample with perf on this host.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NoPerfTarget {
    #[error("the target has no process to sample (process: {{pid | listen_port | cgroup}})")]
    NoProcess,
    #[error("no process listens on port {0}")]
    NotListening(u16),
    #[error("cgroup /{0} is not on this host (or not in a hierarchy perf events can filter on)")]
    NoCgroup(PathBuf),
}

/// Where a target's process is looked for on this host.
#[derive(Debug, Clone, PartialEq)]
pub struct PerfLookup {
    /// The alert's cgroup, relative to `cgroup_root`; it wins over `process`.
    pub cgroup: Option<PathBuf>,
    pub process: Option<ProcessRef>,
    pub cgroup_root: PathBuf,
    pub proc_root: PathBuf,
}

impl PerfLookup {
    /// The process or cgroup to sample, as the host has it now. Blocks (reads /proc and
    /// the mounts).
    pub fn find(&self) -> Result<PerfTarget, NoPerfTarget> {
        let cgroup_dir = |path: &PathBuf| {
            let reader = CgroupReader::new(&self.cgroup_root, &self.proc_root);
            reader
                .perf_event_dir(path)
                .map(PerfTarget::Cgroup)
                .ok_or_else(|| NoPerfTarget::NoCgroup(path.clone()))
        };
        if let Some(cgroup) = &self.cgroup {
            return cgroup_dir(cgroup);
        }
        match &self.process {
            Some(ProcessRef::Pid(pid)) => Ok(PerfTarget::Pid(*pid)),
            Some(ProcessRef::ListenPort(port)) => {
                let pid = ProcReader::new(&self.proc_root).pid_listening_on(*port);
                pid.map(PerfTarget::Pid).ok_or(NoPerfTarget::NotListening(*port))
            }
            Some(ProcessRef::Cgroup(path)) => cgroup_dir(path),
            Some(ProcessRef::CgroupTemplate(_)) | None => Err(NoPerfTarget::NoProcess),
        }
    }

    /// What a `perf` capture's metadata says it was taken from: `perf:pid/1234`,
    /// `perf:cgroup/kubepods/pod1/ctr`.
    pub fn source(&self, target: &PerfTarget) -> String {
        match target {
            PerfTarget::Pid(pid) => format!("perf:pid/{pid}"),
            PerfTarget::Cgroup(dir) => {
                let shown = dir.strip_prefix(&self.cgroup_root).unwrap_or(dir);
                format!("perf:cgroup/{}", shown.display())
            }
        }
    }
}

/// Why a `perf` capture failed.
#[derive(Debug, thiserror::Error)]
pub enum PerfCaptureError {
    #[error(transparent)]
    NotFound(#[from] NoPerfTarget),
    #[error(transparent)]
    Sampling(#[from] PerfError),
    #[error("cannot write {}: {source}", path.display())]
    Write { path: std::path::PathBuf, source: std::io::Error },
    #[error("the sampling task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What a `perf` capture kept: its size and digest, and how far to trust it.
#[derive(Debug)]
pub struct PerfCaptured {
    pub bytes: u64,
    pub sha256: String,
    pub summary: PerfSummary,
}

impl PerfCaptured {
    /// What the capture's metadata keeps of the sampling: how far to trust the profile.
    pub fn stats(&self, frequency_hz: u32) -> PerfStats {
        let summary = &self.summary;
        PerfStats {
            frequency_hz,
            samples: summary.samples,
            lost: summary.lost,
            cut_short: summary.cut_short,
            unsymbolized_locations: summary.unsymbolized_locations,
            unreadable_binaries: summary
                .unreadable_binaries
                .iter()
                .map(|binary| format!("{}: {}", binary.path.display(), binary.error))
                .collect(),
            processes: summary.processes,
            threads: summary.threads,
            exited_after_ms: summary.exited_after.map(|after| after.as_millis() as u64),
        }
    }
}

/// Runs blocking perf work (looking a target up, sampling) on a blocking thread, for async
/// callers; a fault there (a panic) is an error of its own.
pub async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PerfCaptureError> + Send + 'static,
) -> Result<T, PerfCaptureError> {
    tokio::task::spawn_blocking(work).await?
}

/// Samples with perf events, and names the frames with a cache shared by every capture.
#[derive(Clone, Default)]
pub struct PerfSampler {
    /// Held while a profile is written: symbolizing is short next to sampling.
    symbols: Arc<Mutex<Symbolizer>>,
}

impl PerfSampler {
    /// Samples `target` and writes its gzip'd profile to `dest`. Blocks for the capture's
    /// seconds (run it on a blocking thread); `cancel` ends sampling early and what was
    /// sampled is still written.
    pub fn capture(
        &self,
        target: &PerfTarget,
        settings: &PerfSettings,
        cancel: &CancellationToken,
        dest: &Path,
    ) -> Result<PerfCaptured, PerfCaptureError> {
        let recording = crate::perf::sample(target, settings, cancel)?;
        self.write(recording, dest)
    }

    /// Finds what `lookup` names on this host now, then samples it as `capture` does.
    pub fn find_and_capture(
        &self,
        lookup: &PerfLookup,
        settings: &PerfSettings,
        cancel: &CancellationToken,
        dest: &Path,
    ) -> Result<PerfCaptured, PerfCaptureError> {
        self.capture(&lookup.find()?, settings, cancel, dest)
    }

    fn write(
        &self,
        recording: crate::perf::PerfRecording,
        dest: &Path,
    ) -> Result<PerfCaptured, PerfCaptureError> {
        let cannot_write = |source| PerfCaptureError::Write { path: dest.to_path_buf(), source };
        let mut out =
            Hashed::new(std::io::BufWriter::new(std::fs::File::create(dest).map_err(cannot_write)?));
        let summary = self.symbols.lock().unwrap().write_profile(recording, &mut out)?;
        let (_, bytes, sha256) = out.finish().map_err(cannot_write)?;
        Ok(PerfCaptured { bytes, sha256, summary })
    }
}
