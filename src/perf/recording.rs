//! The sampling loop: reads the ring buffers until the duration ends, the token is
//! cancelled or the process exits, and keeps each call chain resolved against the maps of
//! the moment it was taken, counted by distinct stack.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use perf_event::data::Record;
use tokio_util::sync::CancellationToken;

use super::error::PerfError;
use super::events::Events;
use super::maps::{MappingId, Mappings, NewMapping};
use super::settings::{PerfSettings, PerfTarget};

/// How often the ring buffers are read, and so how soon a cancel or exit is noticed.
const TICK: Duration = Duration::from_millis(50);

/// Values of a call chain at and above this are context markers (`PERF_CONTEXT_USER`…).
const PERF_CONTEXT_MAX: u64 = -4095i64 as u64;

/// `PROT_EXEC` of an MMAP2 record: only code mappings matter to call chains.
const PROT_EXEC: u32 = 4;

/// The kernel's default `kernel.perf_event_max_stack`, if it cannot be read.
const DEFAULT_MAX_STACK: usize = 127;

/// One frame of a sampled stack: its address and the mapping that held it then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Frame {
    pub address: u64,
    pub mapping: Option<MappingId>,
}

/// A distinct stack of one process, leaf first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct StackKey {
    pub pid: u32,
    pub frames: Vec<Frame>,
    /// The word at the top of the stack, if it points into code: the return address of a
    /// leaf that has not set up its frame (no frame pointer pushed), whose caller the
    /// frame-pointer walk skips. Whether it is one is up to the symbols.
    pub leaf_caller: Option<Frame>,
}

/// What sampling gathered, to be symbolized and written by a [`super::Symbolizer`].
#[derive(Debug)]
pub struct PerfRecording {
    pub(super) target: PerfTarget,
    pub(super) frequency_hz: u32,
    /// Wall clock at the start, for the profile's `time_nanos`.
    pub(super) started: SystemTime,
    pub(super) duration: Duration,
    /// Each distinct stack and its samples, counted as they come so a long capture holds
    /// one entry per stack, not per sample.
    pub(super) stacks: HashMap<StackKey, u64>,
    /// The mappings the stacks point into, and their binaries, open while the process was.
    pub(super) maps: Mappings,
    /// Process names by pid, from procfs and COMM records, for the cgroup labels.
    pub(super) comms: HashMap<u32, String>,
    pub(super) samples: u64,
    pub(super) lost: u64,
    pub(super) cut_short: u64,
    pub(super) threads: HashSet<u32>,
    pub(super) exited_after: Option<Duration>,
    /// `kernel.perf_event_max_stack`: a chain this long was cut by the kernel.
    max_stack: usize,
    /// Where a new process's maps are read from.
    proc_root: std::path::PathBuf,
    /// Monotonic start, for `duration` and `exited_after`.
    start: Instant,
}

impl PerfRecording {
    /// Samples taken.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Threads seen in samples.
    pub fn threads(&self) -> &HashSet<u32> {
        &self.threads
    }

    /// Whether the target process exited during sampling, and when.
    pub fn exited_after(&self) -> Option<Duration> {
        self.exited_after
    }

    pub(super) fn new(target: &PerfTarget, settings: &PerfSettings) -> PerfRecording {
        let max_stack = std::fs::read_to_string("/proc/sys/kernel/perf_event_max_stack")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(DEFAULT_MAX_STACK);
        PerfRecording {
            target: target.clone(),
            frequency_hz: settings.frequency_hz,
            started: SystemTime::now(),
            duration: Duration::ZERO,
            stacks: HashMap::new(),
            maps: Mappings::default(),
            comms: HashMap::new(),
            samples: 0,
            lost: 0,
            cut_short: 0,
            threads: HashSet::new(),
            exited_after: None,
            max_stack,
            proc_root: settings.proc_root.clone(),
            start: Instant::now(),
        }
    }

    /// Learns a process: its maps and name from procfs.
    pub(super) fn learn(&mut self, pid: u32) -> Result<(), PerfError> {
        self.maps.load(&self.proc_root, pid)?;
        if let Ok(comm) = std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("comm")) {
            self.comms.insert(pid, comm.trim_end().to_string());
        }
        Ok(())
    }

    /// Takes in one record from a ring buffer.
    fn add(&mut self, record: Record<'_>) -> Result<(), PerfError> {
        match record {
            Record::Sample(sample) => {
                let (Some(pid), Some(tid)) = (sample.pid(), sample.tid()) else { return Ok(()) };
                let chain = sample.callchain().unwrap_or_default();
                let top = sample
                    .stack_user()
                    .and_then(|stack| Some(u64::from_le_bytes(stack.get(..8)?.try_into().ok()?)));
                self.add_sample(pid, tid, chain, top)?;
            }
            Record::Mmap2(mmap) if mmap.prot & PROT_EXEC != 0 => {
                let path = Path::new(mmap.filename_os()).to_path_buf();
                let mapping = NewMapping {
                    start: mmap.addr,
                    end: mmap.addr + mmap.len,
                    pgoff: mmap.pgoff,
                    path,
                    deleted: false,
                };
                self.maps.add(&self.proc_root, mmap.pid, mapping);
            }
            Record::Lost(lost) => self.lost += lost.lost,
            Record::LostSamples(lost) => self.lost += lost.lost,
            Record::Comm(comm) => {
                self.comms.insert(comm.pid, comm.comm_os().to_string_lossy().into_owned());
            }
            Record::Fork(fork) if fork.pid != fork.ppid && self.maps.knows(fork.ppid) => {
                self.maps.fork(fork.ppid, fork.pid);
            }
            Record::Exit(exit) if exit.pid == exit.tid && self.target == PerfTarget::Pid(exit.pid) => {
                self.exited_after.get_or_insert(self.start.elapsed());
            }
            _ => {}
        }
        Ok(())
    }

    /// Notes a pid target gone or a zombie: it may have exited before the events were
    /// enabled, which sends no EXIT record.
    fn check_exit(&mut self) {
        let PerfTarget::Pid(pid) = self.target else { return };
        if self.exited_after.is_none() && !alive(&self.proc_root, pid) {
            self.exited_after = Some(self.start.elapsed());
        }
    }

    pub(super) fn add_sample(
        &mut self,
        pid: u32,
        tid: u32,
        chain: &[u64],
        stack_top: Option<u64>,
    ) -> Result<(), PerfError> {
        if !self.maps.knows(pid) {
            self.learn(pid)?;
        }
        let addresses: Vec<u64> =
            chain.iter().copied().filter(|address| *address < PERF_CONTEXT_MAX).collect();
        let frames: Vec<Frame> = addresses
            .iter()
            .map(|&address| Frame { address, mapping: self.maps.find(pid, address) })
            .collect();
        let outermost_unmapped = frames.last().is_some_and(|frame| frame.mapping.is_none());
        if addresses.len() >= self.max_stack || outermost_unmapped {
            self.cut_short += 1;
        }
        let leaf_caller = stack_top
            .filter(|_| !frames.is_empty())
            .and_then(|address| Some(Frame { address, mapping: Some(self.maps.find(pid, address)?) }));
        self.samples += 1;
        self.threads.insert(tid);
        *self.stacks.entry(StackKey { pid, frames, leaf_caller }).or_default() += 1;
        Ok(())
    }
}

/// Samples through `events` until the duration ends, `cancel` fires or a pid target exits.
pub(super) fn run(
    mut events: Events,
    target: &PerfTarget,
    settings: &PerfSettings,
    cancel: &CancellationToken,
) -> Result<PerfRecording, PerfError> {
    let mut recording = PerfRecording::new(target, settings);
    events.enable()?;
    recording.start = Instant::now();
    recording.started = SystemTime::now();
    // Maps are read once the events run, so a mapping made in between arrives as a record.
    for pid in initial_processes(target)? {
        recording.learn(pid)?;
    }
    let deadline = recording.start + settings.duration;
    let mut failed = None;
    loop {
        events.drain(|record| {
            if failed.is_none() {
                failed = recording.add(record).err();
            }
        });
        recording.check_exit();
        let now = Instant::now();
        if failed.is_some() || cancel.is_cancelled() || now >= deadline || recording.exited_after.is_some() {
            break;
        }
        std::thread::sleep(TICK.min(deadline - now));
    }
    events.disable()?;
    events.drain(|record| {
        if failed.is_none() {
            failed = recording.add(record).err();
        }
    });
    if let Some(error) = failed {
        return Err(error);
    }
    recording.lost += events.unparsed;
    recording.duration = recording.start.elapsed();
    Ok(recording)
}

/// Whether `pid` runs: its `stat` is there and it is not a zombie, unless only its main
/// thread ended (`pthread_exit`) and others run on.
fn alive(proc_root: &Path, pid: u32) -> bool {
    let dir = proc_root.join(pid.to_string());
    let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else { return false };
    let state = stat.rfind(')').and_then(|end| stat[end + 1..].split_whitespace().next());
    match state {
        Some("Z" | "X" | "x") => std::fs::read_dir(dir.join("task")).is_ok_and(|tasks| tasks.count() > 1),
        _ => true,
    }
}

/// The processes whose maps are read at the start: the pid, or the cgroup's members.
fn initial_processes(target: &PerfTarget) -> Result<Vec<u32>, PerfError> {
    match target {
        PerfTarget::Pid(pid) => Ok(vec![*pid]),
        PerfTarget::Cgroup(dir) => {
            let path = dir.join("cgroup.procs");
            let text =
                std::fs::read_to_string(&path).map_err(|source| PerfError::ReadProc { path, source })?;
            Ok(text.lines().filter_map(|line| line.trim().parse().ok()).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process runs while its stat is there and it is no zombie, or a zombie leader with
    /// threads left; a zombie alone, or no stat, has exited.
    #[test]
    fn exited_processes_are_told_from_running_ones() {
        let root = tempfile::tempdir().unwrap();
        let process = |pid: u32, state: &str, threads: &[u32]| {
            let dir = root.path().join(pid.to_string());
            std::fs::create_dir_all(dir.join("task")).unwrap();
            std::fs::write(dir.join("stat"), format!("{pid} (a (b) c) {state} 1 1 1")).unwrap();
            for thread in threads {
                std::fs::create_dir_all(dir.join("task").join(thread.to_string())).unwrap();
            }
        };
        process(10, "R", &[10]);
        process(11, "Z", &[11]);
        process(12, "Z", &[12, 13]);
        process(14, "S", &[14]);
        assert!(alive(root.path(), 10));
        assert!(!alive(root.path(), 11));
        assert!(alive(root.path(), 12));
        assert!(alive(root.path(), 14));
        assert!(!alive(root.path(), 15));
    }
}
