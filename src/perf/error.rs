//! Why a perf capture fails, and why one binary's frames stay unnamed; each says what to do.

use std::io;
use std::path::PathBuf;

/// Why sampling could not run or its profile could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    #[error(
        "perf_event_open was refused ({source}): sampling another process or a cgroup needs \
         CAP_PERFMON (or CAP_SYS_ADMIN, or root); kernel.perf_event_paranoid is {paranoid}. \
         Grant alertprof CAP_PERFMON (e.g. `setcap cap_perfmon+ep`, or the container's \
         capabilities) or run it as root"
    )]
    Permission { paranoid: Paranoid, source: io::Error },
    #[error(
        "process {pid} does not exist (it may have exited before the capture began); check the target's pid"
    )]
    NoSuchProcess { pid: u32 },
    #[error(
        "cgroup {} cannot be opened ({source}); give the absolute path of an existing cgroup v2 \
         directory, e.g. /sys/fs/cgroup/unified/<name> or /sys/fs/cgroup/<name>",
        path.display()
    )]
    NoSuchCgroup { path: PathBuf, source: io::Error },
    #[error(
        "{} is not a cgroup the kernel's perf events can filter on ({source}); give a cgroup v2 \
         directory (perf_event is implicit there) or one of a mounted v1 perf_event hierarchy",
        path.display()
    )]
    NotPerfCgroup { path: PathBuf, source: io::Error },
    #[error(
        "this kernel has no software cpu-clock perf event ({source}); it needs CONFIG_PERF_EVENTS, \
         and a container runtime's seccomp profile must allow perf_event_open"
    )]
    Unsupported { source: io::Error },
    #[error(
        "opening {events} perf events (one per thread and CPU) hit the limit of open files \
         ({source}); raise alertprof's RLIMIT_NOFILE (LimitNOFILE= in its systemd unit)"
    )]
    TooManyFiles { events: usize, source: io::Error },
    #[error("perf_event_open for {what} failed: {source}")]
    Open { what: String, source: io::Error },
    #[error(
        "cannot map the perf ring buffer of CPU {cpu} ({source}); raise RLIMIT_MEMLOCK or kernel.perf_event_mlock_kb"
    )]
    RingBuffer { cpu: usize, source: io::Error },
    #[error("cannot {action} the perf events: {source}")]
    Control { action: &'static str, source: io::Error },
    #[error("cannot read {}: {source}", path.display())]
    ReadProc { path: PathBuf, source: io::Error },
    #[error(
        "cannot read {} ({source}): reading another user's process needs CAP_SYS_PTRACE (or \
         root) besides CAP_PERFMON",
        path.display()
    )]
    ProcAccess { path: PathBuf, source: io::Error },
    #[error("the sampling frequency must be at least 1 Hz")]
    ZeroFrequency,
    #[error("cannot write the profile: {source}")]
    Write { source: io::Error },
}

impl PerfError {
    /// A failed read of a process's procfs files: refused, or otherwise.
    pub(super) fn proc(path: PathBuf, source: io::Error) -> PerfError {
        match source.kind() {
            io::ErrorKind::PermissionDenied => PerfError::ProcAccess { path, source },
            _ => PerfError::ReadProc { path, source },
        }
    }
}

/// `kernel.perf_event_paranoid` as read when perf events were refused, for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paranoid {
    Level(i32),
    Unreadable,
}

impl Paranoid {
    pub(super) fn read() -> Paranoid {
        std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .map_or(Paranoid::Unreadable, Paranoid::Level)
    }
}

impl std::fmt::Display for Paranoid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Paranoid::Level(level) => write!(f, "{level}"),
            Paranoid::Unreadable => f.write_str("unreadable"),
        }
    }
}

/// Why a Go binary's `.gopclntab` cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GoTableError {
    #[error("the section is cut short or cannot be read")]
    Truncated,
    #[error("it has Go 1.2–1.15's layout (magic 0xfffffffb), which alertprof does not read")]
    BeforeGo116,
    #[error("its magic {0:#x} is no Go version's")]
    UnknownMagic(u32),
    #[error("its header is malformed")]
    BadHeader,
    #[error("its function table runs past the section")]
    FunctionTableOutOfBounds,
    #[error("the binary has no .text section")]
    NoText,
}

/// Why the frames of one binary stay as bare addresses. The capture goes on.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("it was deleted (or replaced) after it was mapped, so the file on disk is not the one running")]
    Deleted,
    #[error(
        "cannot open it through the process's root ({source}); is alertprof in the host's PID namespace?"
    )]
    Open { source: io::Error },
    #[error("cannot read it: {source}")]
    Read { source: io::Error },
    #[error("not an ELF file alertprof can read: {source}")]
    NotElf { source: object::Error },
    #[error("its Go symbol table (.gopclntab) is unreadable ({source}), and it has no ELF symbols")]
    GoTable { source: GoTableError },
    #[error("it has no symbols (stripped, no Go table, no DWARF); ship its symbols or build it with them")]
    NoSymbols,
}
