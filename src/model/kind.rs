//! The profile kinds alertprof can fetch, and what each means on the wire and on disk.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One kind of profile: those a Go service serves under `/debug/pprof` (or
/// `/debug/fgprof`), and `perf`, which alertprof samples itself with the kernel's perf
/// events, for any process, endpoint or not. Written by its name (`cpu`,
/// `goroutine_text`) in configs, metadata and URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileKind {
    Cpu,
    Heap,
    Allocs,
    Block,
    Mutex,
    Threadcreate,
    Goroutine,
    GoroutineText,
    Trace,
    Fgprof,
    /// A CPU profile of a process or a cgroup, sampled from outside (software `cpu-clock`,
    /// frame-pointer call chains) and symbolized from its binaries.
    Perf,
}

/// How a body of a kind is checked before it is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// gzip-compressed profile.proto.
    Pprof,
    /// Go's execution trace, starting `go 1.`.
    Trace,
    /// `goroutine?debug=2` stack dump, starting `goroutine `.
    GoroutineText,
}

impl ProfileKind {
    pub const ALL: [ProfileKind; 11] = [
        ProfileKind::Cpu,
        ProfileKind::Heap,
        ProfileKind::Allocs,
        ProfileKind::Block,
        ProfileKind::Mutex,
        ProfileKind::Threadcreate,
        ProfileKind::Goroutine,
        ProfileKind::GoroutineText,
        ProfileKind::Trace,
        ProfileKind::Fgprof,
        ProfileKind::Perf,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ProfileKind::Cpu => "cpu",
            ProfileKind::Heap => "heap",
            ProfileKind::Allocs => "allocs",
            ProfileKind::Block => "block",
            ProfileKind::Mutex => "mutex",
            ProfileKind::Threadcreate => "threadcreate",
            ProfileKind::Goroutine => "goroutine",
            ProfileKind::GoroutineText => "goroutine_text",
            ProfileKind::Trace => "trace",
            ProfileKind::Fgprof => "fgprof",
            ProfileKind::Perf => "perf",
        }
    }

    pub fn parse(name: &str) -> Option<ProfileKind> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Whether the capture runs for `seconds` on the target.
    pub fn is_timed(self) -> bool {
        matches!(self, ProfileKind::Cpu | ProfileKind::Trace | ProfileKind::Fgprof | ProfileKind::Perf)
    }

    /// Go allows one CPU profile (and one trace) per process at a time; a second request
    /// answers 500 `cpu profiling already in use`. fgprof samples goroutines, not the CPU
    /// profiler, so it is not exclusive. Two perf captures of one target would sample it
    /// twice over: one at a time too.
    pub fn is_exclusive(self) -> bool {
        matches!(self, ProfileKind::Cpu | ProfileKind::Trace | ProfileKind::Perf)
    }

    /// Whether it is fetched from the target's pprof endpoint: every kind but `perf`.
    pub fn needs_pprof_url(self) -> bool {
        self != ProfileKind::Perf
    }

    /// Whether a recorder keeps it as back-to-back segments, merged over a window (CPU
    /// time), rather than as snapshots.
    pub fn is_continuous(self) -> bool {
        matches!(self, ProfileKind::Cpu | ProfileKind::Perf)
    }

    /// Path and query to append to the target's pprof base URL.
    pub fn request_path(self, seconds: u32) -> String {
        match self {
            ProfileKind::Cpu => format!("/debug/pprof/profile?seconds={seconds}"),
            ProfileKind::Trace => format!("/debug/pprof/trace?seconds={seconds}"),
            ProfileKind::Fgprof => format!("/debug/fgprof?seconds={seconds}"),
            ProfileKind::GoroutineText => "/debug/pprof/goroutine?debug=2".to_string(),
            other => format!("/debug/pprof/{}", other.name()),
        }
    }

    /// Whether its body is a gzip'd profile.proto: the kinds that have a summary, a flame
    /// graph and diffs, and that `go tool pprof` opens.
    pub fn is_pprof(self) -> bool {
        self.format() == BodyFormat::Pprof
    }

    /// Whether growth in this kind is read by cum rather than flat: every stack of a
    /// goroutine or threadcreate profile ends where the runtime parks or creates (flat is
    /// all `runtime.gopark`), so the code that started them shows only by cum.
    pub fn grows_by_cum(self) -> bool {
        matches!(self, ProfileKind::Goroutine | ProfileKind::Threadcreate)
    }

    /// The command that opens a stored profile of this kind.
    pub fn open_command(self, file: &str) -> String {
        match self.format() {
            BodyFormat::Pprof => format!("go tool pprof -http=: {file}"),
            BodyFormat::Trace => format!("go tool trace {file}"),
            BodyFormat::GoroutineText => format!("less {file}"),
        }
    }

    pub fn format(self) -> BodyFormat {
        match self {
            ProfileKind::Trace => BodyFormat::Trace,
            ProfileKind::GoroutineText => BodyFormat::GoroutineText,
            _ => BodyFormat::Pprof,
        }
    }

    /// File extension of the stored profile, with its leading dot.
    pub fn extension(self) -> &'static str {
        match self.format() {
            BodyFormat::Pprof => ".pb.gz",
            BodyFormat::Trace => ".trace",
            BodyFormat::GoroutineText => ".txt",
        }
    }
}

/// A name that is no profile kind's; the message lists the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown kind {0:?} (known: {known})", known = known_kinds())]
pub struct UnknownKind(pub String);

fn known_kinds() -> String {
    ProfileKind::ALL.map(ProfileKind::name).join(", ")
}

impl std::str::FromStr for ProfileKind {
    type Err = UnknownKind;
    fn from_str(name: &str) -> Result<ProfileKind, UnknownKind> {
        ProfileKind::parse(name).ok_or_else(|| UnknownKind(name.to_string()))
    }
}

impl fmt::Display for ProfileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind's name parses back to it, and the request paths are Go's.
    #[test]
    fn names_and_paths() {
        for kind in ProfileKind::ALL {
            assert_eq!(ProfileKind::parse(kind.name()), Some(kind));
        }
        assert_eq!(ProfileKind::parse("bogus"), None);
        assert_eq!(
            "bogus".parse::<ProfileKind>().unwrap_err().to_string(),
            "unknown kind \"bogus\" (known: cpu, heap, allocs, block, mutex, threadcreate, \
             goroutine, goroutine_text, trace, fgprof, perf)"
        );
        assert_eq!(ProfileKind::Cpu.request_path(7), "/debug/pprof/profile?seconds=7");
        assert_eq!(ProfileKind::Heap.request_path(7), "/debug/pprof/heap");
        assert_eq!(ProfileKind::GoroutineText.request_path(7), "/debug/pprof/goroutine?debug=2");
        assert_eq!(ProfileKind::Fgprof.request_path(3), "/debug/fgprof?seconds=3");
        assert_eq!(ProfileKind::Trace.extension(), ".trace");
        for kind in ProfileKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("{:?}", kind.name()));
            assert_eq!(serde_json::from_str::<ProfileKind>(&json).unwrap(), kind);
        }
    }
}
