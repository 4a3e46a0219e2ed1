//! The perf events of one capture: cpu-clock sampling with user call chains, one event per
//! thread and CPU for a process (inherited by threads it starts) or one per CPU for a
//! cgroup, all of one CPU writing into that CPU's ring buffer.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use perf_event::data::Record;
use perf_event::events::Software;
use perf_event::{Builder, Counter, ReadFormat, SampleFlag, Sampler};

use super::error::{Paranoid, PerfError};
use super::maps::gone;
use super::settings::PerfSettings;

/// Bytes of one CPU's ring buffer (plus its header page). At 99 Hz a sample with a deep
/// stack takes about 1 KiB, so this holds seconds of samples between two reads.
const RING_BYTES: usize = 256 << 10;

/// The open events of one capture.
pub(super) struct Events {
    /// One per CPU, in the order of `cpus`; each owns that CPU's ring buffer.
    samplers: Vec<Sampler>,
    /// The other events, each writing into its CPU's sampler's buffer (SET_OUTPUT).
    /// Held so they stay open.
    redirected: Vec<Counter>,
    cpus: Vec<usize>,
    /// Threads that have events of their own (a process's existing threads).
    threads: HashSet<u32>,
    /// Records the parser did not understand (a kernel newer than the parser), counted
    /// as lost.
    pub unparsed: u64,
}

impl Events {
    /// Events on every thread of `pid`, each inherited by the threads it starts. Lists the
    /// threads again after opening until no new one appears, so none started meanwhile is
    /// missed.
    pub fn open_process(pid: u32, settings: &PerfSettings) -> Result<Events, PerfError> {
        let mut events = Events::new(online_cpus()?);
        // Tried, whether or not they could be opened: a thread that ended (or a zombie
        // main thread) stays listed for a while.
        let mut tried = HashSet::new();
        loop {
            let threads = list_threads(&settings.proc_root, pid)?;
            let new: Vec<u32> = threads.into_iter().filter(|tid| tried.insert(*tid)).collect();
            if new.is_empty() {
                break;
            }
            for tid in new {
                events.open_thread(tid, settings)?;
            }
        }
        if events.threads.is_empty() {
            return Err(PerfError::NoSuchProcess { pid });
        }
        Ok(events)
    }

    /// Events on every CPU, filtered to the tasks of the cgroup at `dir`.
    pub fn open_cgroup(dir: &Path, settings: &PerfSettings) -> Result<Events, PerfError> {
        let cgroup =
            File::open(dir).map_err(|source| PerfError::NoSuchCgroup { path: dir.to_path_buf(), source })?;
        if !dir.join("cgroup.procs").exists() {
            let source = io::Error::new(io::ErrorKind::InvalidInput, "no cgroup.procs in it");
            return Err(PerfError::NotPerfCgroup { path: dir.to_path_buf(), source });
        }
        let mut events = Events::new(online_cpus()?);
        for index in 0..events.cpus.len() {
            let cpu = events.cpus[index];
            let counter =
                builder(settings).observe_cgroup(&cgroup).one_cpu(cpu).build().map_err(|error| {
                    match error.raw_os_error() {
                        Some(9 /* EBADF */) => {
                            PerfError::NotPerfCgroup { path: dir.to_path_buf(), source: error }
                        }
                        _ => open_error(error, format!("cgroup {} on CPU {cpu}", dir.display()), 1),
                    }
                })?;
            events.attach(index, counter)?;
        }
        Ok(events)
    }

    fn new(cpus: Vec<usize>) -> Events {
        Events { samplers: Vec::new(), redirected: Vec::new(), cpus, threads: HashSet::new(), unparsed: 0 }
    }

    /// Opens `tid`'s events, one per CPU. A thread that exited meanwhile is skipped.
    fn open_thread(&mut self, tid: u32, settings: &PerfSettings) -> Result<(), PerfError> {
        let mut opened = Vec::with_capacity(self.cpus.len());
        for &cpu in &self.cpus {
            match builder(settings).observe_pid(tid as i32).one_cpu(cpu).inherit(true).build() {
                Ok(counter) => opened.push(counter),
                Err(error) if error.raw_os_error() == Some(3 /* ESRCH */) => return Ok(()),
                Err(error) => {
                    let events = (self.threads.len() + 1) * self.cpus.len();
                    return Err(open_error(error, format!("thread {tid} on CPU {cpu}"), events));
                }
            }
        }
        for (index, counter) in opened.into_iter().enumerate() {
            self.attach(index, counter)?;
        }
        self.threads.insert(tid);
        Ok(())
    }

    /// Makes `counter` the ring buffer of CPU `cpus[index]`, or points it at that buffer.
    fn attach(&mut self, index: usize, counter: Counter) -> Result<(), PerfError> {
        let Some(sampler) = self.samplers.get(index) else {
            let cpu = self.cpus[index];
            let sampler =
                counter.sampled(RING_BYTES).map_err(|source| PerfError::RingBuffer { cpu, source })?;
            self.samplers.push(sampler);
            return Ok(());
        };
        // SAFETY: both are open perf event descriptors owned by this struct; SET_OUTPUT
        // takes a descriptor as its argument and touches no memory of ours.
        let status =
            unsafe { perf_event_open_sys::ioctls::SET_OUTPUT(counter.as_raw_fd(), sampler.as_raw_fd()) };
        if status < 0 {
            let source = io::Error::last_os_error();
            return Err(PerfError::Control { action: "share the ring buffer of", source });
        }
        self.redirected.push(counter);
        Ok(())
    }

    /// Starts sampling. Enabling an event enables the copies threads inherited.
    pub fn enable(&mut self) -> Result<(), PerfError> {
        let control = |counter: &mut Counter| counter.enable();
        self.each(control).map_err(|source| PerfError::Control { action: "enable", source })
    }

    /// Stops sampling; what is in the ring buffers stays to be read.
    pub fn disable(&mut self) -> Result<(), PerfError> {
        let control = |counter: &mut Counter| counter.disable();
        self.each(control).map_err(|source| PerfError::Control { action: "disable", source })
    }

    fn each(&mut self, mut control: impl FnMut(&mut Counter) -> io::Result<()>) -> io::Result<()> {
        for sampler in &mut self.samplers {
            control(sampler.as_counter_mut())?;
        }
        self.redirected.iter_mut().try_for_each(control)
    }

    /// Hands every record in the ring buffers to `handle`, emptying them.
    pub fn drain(&mut self, mut handle: impl FnMut(Record<'_>)) {
        for sampler in &mut self.samplers {
            while let Some(record) = sampler.next_record() {
                match record.parse_record() {
                    Ok(parsed) => handle(parsed),
                    Err(_) => self.unparsed += 1,
                }
            }
        }
    }
}

/// The attributes of every event: cpu-clock every 1/frequency of CPU time (a fixed period
/// of nanoseconds, exact, where the kernel's frequency mode would adapt per thread and CPU
/// and undershoot), samples with the thread, the user call chain and the word at the top
/// of the user stack (a frameless leaf's return address, which the frame-pointer walk
/// skips), and the records that keep maps current. Kernel time is sampled too (it counts
/// as the user frame that made the system call, as in Go's profiles), but only user call
/// chains are taken.
fn builder<'a>(settings: &PerfSettings) -> Builder<'a> {
    let mut builder = Builder::new(Software::CPU_CLOCK);
    builder
        .sample_period(1_000_000_000 / u64::from(settings.frequency_hz.max(1)))
        .sample(SampleFlag::TID | SampleFlag::CALLCHAIN | SampleFlag::STACK_USER)
        .sample_stack_user(8)
        .read_format(ReadFormat::empty())
        .exclude_kernel(false)
        .exclude_callchain_kernel(true)
        .mmap(true)
        .mmap2(true)
        .comm(true)
        .task(true)
        .sample_id_all(true);
    builder
}

/// Opens and closes one event like a capture's, on this process.
pub(super) fn check_access() -> Result<(), PerfError> {
    let settings = PerfSettings::default();
    builder(&settings)
        .observe_self()
        .any_cpu()
        .build()
        .map(drop)
        .map_err(|error| open_error(error, "this process".into(), 1))
}

/// A `perf_event_open` failure, named for what to do about it.
fn open_error(error: io::Error, what: String, events: usize) -> PerfError {
    match error.raw_os_error() {
        Some(1 /* EPERM */ | 13 /* EACCES */) => PerfError::Permission { paranoid: Paranoid::read(), source: error },
        Some(2 /* ENOENT */ | 19 /* ENODEV */ | 38 /* ENOSYS */ | 95 /* EOPNOTSUPP */) => {
            PerfError::Unsupported { source: error }
        }
        Some(24 /* EMFILE */ | 23 /* ENFILE */) => PerfError::TooManyFiles { events, source: error },
        _ => PerfError::Open { what, source: error },
    }
}

/// The threads of `pid`, from `{proc_root}/PID/task`.
fn list_threads(proc_root: &Path, pid: u32) -> Result<Vec<u32>, PerfError> {
    let path = proc_root.join(pid.to_string()).join("task");
    let entries = match std::fs::read_dir(&path) {
        Ok(entries) => entries,
        Err(error) if gone(&error) => return Err(PerfError::NoSuchProcess { pid }),
        Err(source) => return Err(PerfError::proc(path, source)),
    };
    Ok(entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok()).collect())
}

/// The online CPUs, from `/sys/devices/system/cpu/online` (`0-3,6,8-9`).
fn online_cpus() -> Result<Vec<usize>, PerfError> {
    let path = Path::new("/sys/devices/system/cpu/online");
    let text = std::fs::read_to_string(path)
        .map_err(|source| PerfError::ReadProc { path: path.to_path_buf(), source })?;
    let cpus = parse_cpu_list(&text);
    if cpus.is_empty() {
        let source = io::Error::new(io::ErrorKind::InvalidData, format!("no CPU in {text:?}"));
        return Err(PerfError::ReadProc { path: path.to_path_buf(), source });
    }
    Ok(cpus)
}

fn parse_cpu_list(text: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|part| !part.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(first), Ok(last)) = (first.parse::<usize>(), last.parse::<usize>()) {
            cpus.extend(first..=last);
        }
    }
    cpus
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU lists as sysfs writes them: ranges and single CPUs.
    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,6,8-9\n"), vec![0, 1, 2, 3, 6, 8, 9]);
        assert_eq!(parse_cpu_list("0\n"), vec![0]);
        assert_eq!(parse_cpu_list(""), Vec::<usize>::new());
    }

    /// Refusals name what to do: permission names the capability and the sysctl's value.
    #[test]
    fn open_errors_say_what_to_do() {
        let refused = open_error(io::Error::from_raw_os_error(13), "x".into(), 1);
        let text = refused.to_string();
        assert!(text.contains("CAP_PERFMON") && text.contains("perf_event_paranoid is"), "{text}");
        let limit = open_error(io::Error::from_raw_os_error(24), "x".into(), 96);
        assert!(limit.to_string().contains("96 perf events"), "{limit}");
        assert!(matches!(
            open_error(io::Error::from_raw_os_error(2), "x".into(), 1),
            PerfError::Unsupported { .. }
        ));
    }
}
