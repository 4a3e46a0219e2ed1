//! What to sample and how, and what a capture saw.

use std::path::PathBuf;
use std::time::Duration;

use super::error::BinaryError;

/// What to sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PerfTarget {
    /// A process and all its threads, those there at the start and those it starts later.
    Pid(u32),
    /// Every process of a cgroup v2, by the absolute path of its directory
    /// (`/sys/fs/cgroup/unified/x` on a hybrid host, `/sys/fs/cgroup/x` on a v2-only one).
    Cgroup(PathBuf),
}

/// How to sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerfSettings {
    /// Samples a second of CPU time: a thread running flat out is sampled this often.
    /// 99 Hz (not 100) keeps the samples from beating with the target's own timers.
    pub frequency_hz: u32,
    /// How long to sample, unless cancelled or the process exits first.
    pub duration: Duration,
    /// Where procfs is mounted: `/proc`, the host's, so a container's files are read
    /// through `/proc/PID/root`. Tests point it elsewhere.
    pub proc_root: PathBuf,
}

impl Default for PerfSettings {
    fn default() -> PerfSettings {
        PerfSettings { frequency_hz: 99, duration: Duration::from_secs(10), proc_root: "/proc".into() }
    }
}

/// What a capture saw, returned with its profile: how much to trust it.
#[derive(Debug, Default)]
pub struct PerfSummary {
    /// Samples in the profile.
    pub samples: u64,
    /// Samples the kernel dropped because the ring buffer was full (`PERF_RECORD_LOST`),
    /// or that could not be parsed.
    pub lost: u64,
    /// Samples whose call chain stopped early: at the kernel's stack depth limit, or at a
    /// return address outside every mapping (a frame without a frame pointer).
    pub cut_short: u64,
    /// Locations left as bare addresses: their binary could not be read, had no symbol
    /// there, or was no file (JIT code, `[vdso]`).
    pub unsymbolized_locations: u64,
    /// Binaries whose frames stay unsymbolized, and why; the capture goes on without them.
    pub unreadable_binaries: Vec<UnreadableBinary>,
    /// Processes seen in samples: a cgroup's members, or a pid and the children it started.
    pub processes: usize,
    /// Threads seen in samples, those started during the capture too.
    pub threads: usize,
    /// How long sampling ran.
    pub duration: Duration,
    /// For a pid: it exited this long after sampling began, so the profile covers only
    /// that part.
    pub exited_after: Option<Duration>,
}

/// A binary whose frames could not be named.
#[derive(Debug)]
pub struct UnreadableBinary {
    /// The path as the process maps it (inside its mount namespace).
    pub path: PathBuf,
    pub error: BinaryError,
}
