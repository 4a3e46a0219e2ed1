//! Process readings with the `procfs` crate, under a configurable `proc_root`: the PID
//! listening on a port (`net/tcp{,6}` socket inode → `PID/fd`), its CPU time, RSS and
//! threads, the CPUs it may run on, and host memory.

use std::path::{Path, PathBuf};

use procfs::net::{TcpNetEntry, TcpState};
use procfs::process::{FDTarget, Process};
use procfs::{FromBufReadSI, FromRead, Meminfo};

/// A process as read now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    pub pid: u32,
    /// Start time since boot (clock ticks): with the PID, tells a process from a later one
    /// that reused its PID.
    pub start_ticks: u64,
    /// User plus system CPU time, in nanoseconds.
    pub cpu_ns: u64,
    pub rss_bytes: u64,
    pub threads: u64,
    /// CPUs in its affinity list, if known.
    pub cpus_allowed: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct ProcReader {
    root: PathBuf,
}

impl ProcReader {
    pub fn new(root: impl Into<PathBuf>) -> ProcReader {
        ProcReader { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn sample(&self, pid: u32) -> Option<ProcessSample> {
        let process = Process::new_with_root(self.root.join(pid.to_string())).ok()?;
        let stat = process.stat().ok()?;
        let ticks = procfs::ticks_per_second().max(1);
        let status = process.status().ok();
        // A range the wrong way round (or a count past usize) means the list is unknown.
        let cpus_allowed = status.and_then(|s| s.cpus_allowed_list).and_then(|ranges| {
            ranges.iter().try_fold(0usize, |count, (low, high)| {
                count.checked_add(high.checked_sub(*low)? as usize + 1)
            })
        });
        Some(ProcessSample {
            pid,
            start_ticks: stat.starttime,
            cpu_ns: stat.utime.saturating_add(stat.stime).saturating_mul(1_000_000_000 / ticks),
            rss_bytes: stat.rss.saturating_mul(procfs::page_size()),
            threads: stat.num_threads.max(0) as u64,
            cpus_allowed,
        })
    }

    /// The PID whose socket listens on `port` (IPv4 or IPv6, any address).
    pub fn pid_listening_on(&self, port: u16) -> Option<u32> {
        let inodes: Vec<u64> = ["net/tcp", "net/tcp6"]
            .iter()
            .filter_map(|file| read_tcp(&self.root.join(file)))
            .flatten()
            .filter(|entry| entry.state == TcpState::Listen && entry.local_address.port() == port)
            .map(|entry| entry.inode)
            .filter(|inode| *inode != 0)
            .collect();
        if inodes.is_empty() {
            return None;
        }
        let processes = procfs::process::all_processes_with_root(&self.root).ok()?;
        for process in processes.flatten() {
            let Ok(fds) = process.fd() else { continue };
            let owns = fds
                .flatten()
                .any(|fd| matches!(fd.target, FDTarget::Socket(inode) if inodes.contains(&inode)));
            if owns {
                return u32::try_from(process.pid).ok();
            }
        }
        None
    }

    /// Host memory (`MemTotal`), in bytes.
    pub fn host_memory(&self) -> Option<u64> {
        Meminfo::from_file(self.root.join("meminfo")).ok().map(|m| m.mem_total)
    }

    /// Online CPUs of the host, counted from `stat`.
    pub fn host_cpus(&self) -> Option<usize> {
        let text = std::fs::read_to_string(self.root.join("stat")).ok()?;
        let count = text
            .lines()
            .filter(|line| line.starts_with("cpu") && line.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count();
        (count > 0).then_some(count)
    }
}

fn read_tcp(path: &Path) -> Option<Vec<TcpNetEntry>> {
    let file = std::fs::File::open(path).ok()?;
    let entries = procfs::net::TcpNetEntries::from_buf_read(
        std::io::BufReader::new(file),
        procfs::current_system_info(),
    )
    .ok()?;
    Some(entries.0)
}
