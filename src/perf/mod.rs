//! CPU profiles of a process or a cgroup that serves no pprof endpoint: alertprof samples it
//! with the kernel's perf events (user call chains through frame pointers), names the frames
//! from its binaries read on the host (Go's pclntab, ELF symbols, DWARF) and writes a pprof
//! profile. Needs `CAP_PERFMON` (or `CAP_SYS_ADMIN`, or root) and, for a container, the
//! host's PID namespace; see [`record`].

mod error;
mod events;
mod maps;
mod profile;
mod recording;
mod symbols;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use error::{BinaryError, GoTableError, Paranoid, PerfError};
pub use recording::PerfRecording;
pub use symbols::Symbolizer;

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

/// Samples `target` and writes its gzip'd pprof profile to `out`, with a fresh symbol
/// cache: [`sample`], then [`Symbolizer::write_profile`]. Blocks for the whole duration
/// (run it on a blocking thread); `cancel` ends sampling early and the samples so far are
/// still written.
///
/// Needs `CAP_PERFMON` (Linux 5.8+; else `CAP_SYS_ADMIN` or root) to sample another
/// user's process or a cgroup whatever `kernel.perf_event_paranoid` says, `CAP_SYS_PTRACE`
/// to read such a process's maps and binaries, and the host's PID namespace so pids and
/// `/proc/PID/root` are the target's. Root has all of it.
pub fn record(
    target: &PerfTarget,
    settings: &PerfSettings,
    cancel: &CancellationToken,
    out: &mut impl Write,
) -> Result<PerfSummary, PerfError> {
    let recording = sample(target, settings, cancel)?;
    Symbolizer::new().write_profile(recording, out)
}

/// Samples `target` for `settings.duration`, or until `cancel` fires or the process exits.
/// Blocks (run it on a blocking thread). Maps and binaries are taken while the process
/// lives, so symbolizing later works after it is gone.
///
/// A process that exits mid-capture gives a partial recording, not an error: what it ran
/// just before it ended is often what the alert was about. `exited_after` and a comment
/// in the profile say so. A pid that is gone before sampling starts is an error.
pub fn sample(
    target: &PerfTarget,
    settings: &PerfSettings,
    cancel: &CancellationToken,
) -> Result<PerfRecording, PerfError> {
    if settings.frequency_hz == 0 {
        return Err(PerfError::ZeroFrequency);
    }
    let events = match target {
        PerfTarget::Pid(pid) => events::Events::open_process(*pid, settings)?,
        PerfTarget::Cgroup(dir) => events::Events::open_cgroup(dir, settings)?,
    };
    recording::run(events, target, settings, cancel)
}

/// Whether this process may open perf events at all: opens a cpu-clock event on itself
/// and closes it. For a check at start-up, and for tests to tell a host without perf.
pub fn check_access() -> Result<(), PerfError> {
    events::check_access()
}
