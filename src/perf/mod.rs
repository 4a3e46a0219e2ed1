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
mod settings;
mod symbols;

use std::io::Write;

use tokio_util::sync::CancellationToken;

pub use error::{BinaryError, GoTableError, Paranoid, PerfError};
pub use recording::PerfRecording;
pub use settings::{PerfSettings, PerfSummary, PerfTarget, UnreadableBinary};
pub use symbols::Symbolizer;

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
