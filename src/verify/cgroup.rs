//! cgroup readings for a process or a cgroup path: CPU usage and quota, memory usage,
//! working set and limit, on cgroup v1 (joined `cpu,cpuacct` or separate mounts), v2 and
//! hybrid hosts. Mounts come from `<proc_root>/self/mountinfo`, a process's cgroups from
//! `<proc_root>/PID/cgroup`; files are read under `cgroup_root`. A missing file is "no
//! reading" (`None`), never an error: unlimited is normal.

use std::fs;
use std::path::{Path, PathBuf};

/// v1 reports "unlimited" memory as a huge number (about 2^63 rounded to pages); anything
/// at or above this is no limit.
const V1_UNLIMITED: u64 = 1 << 62;

/// Where a mount of cgroup hierarchies usually is; mount points under it are re-rooted at
/// `cgroup_root`, so a fixture tree or a host's tree mounted elsewhere reads the same.
const DEFAULT_MOUNT: &str = "/sys/fs/cgroup";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The cgroup directories that hold a target's CPU and memory files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupDirs {
    /// `cpu.max` (v2) or `cpu.cfs_quota_us` (v1), with the mount root it may not climb past.
    pub cpu: Option<Dir>,
    /// `cpu.stat` (v2) or `cpuacct.usage` (v1).
    pub cpuacct: Option<Dir>,
    pub memory: Option<Dir>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dir {
    pub path: PathBuf,
    /// The mount point: limits are looked up from `path` up to here, since a pod's limit
    /// may sit on a parent cgroup.
    pub mount: PathBuf,
    pub version: Version,
}

/// Memory of a cgroup, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub usage: u64,
    /// Usage minus inactive file pages, as cAdvisor and the kubelet count it.
    pub working_set: u64,
    /// The lowest limit on the path to the root; `None` when unlimited.
    pub limit: Option<u64>,
}

/// One cgroup hierarchy mount.
#[derive(Debug, Clone)]
struct Mount {
    /// The cgroup path this mount shows as its root (`/` on a host, deeper in a container).
    root: String,
    point: PathBuf,
    version: Version,
    controllers: Vec<String>,
}

/// Reads cgroups under `cgroup_root`, finding mounts and memberships under `proc_root`.
#[derive(Debug, Clone)]
pub struct CgroupReader {
    cgroup_root: PathBuf,
    proc_root: PathBuf,
}

impl CgroupReader {
    pub fn new(cgroup_root: impl Into<PathBuf>, proc_root: impl Into<PathBuf>) -> CgroupReader {
        CgroupReader { cgroup_root: cgroup_root.into(), proc_root: proc_root.into() }
    }

    /// The cgroup directories of a process.
    pub fn dirs_of_pid(&self, pid: u32) -> CgroupDirs {
        let Ok(text) = fs::read_to_string(self.proc_root.join(pid.to_string()).join("cgroup")) else {
            return CgroupDirs::default();
        };
        let mut v1: Vec<(Vec<String>, String)> = Vec::new();
        let mut v2: Option<String> = None;
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            if id == "0" && controllers.is_empty() {
                v2 = Some(path.to_string());
            } else {
                let names =
                    controllers.split(',').map(|c| c.trim_start_matches("name=").to_string()).collect();
                v1.push((names, path.to_string()));
            }
        }
        let mounts = self.mounts();
        let v1_dir = |controller: &str| {
            let (_, path) = v1.iter().find(|(names, _)| names.iter().any(|n| n == controller))?;
            let mount = mounts
                .iter()
                .find(|m| m.version == Version::V1 && m.controllers.iter().any(|c| c == controller))?;
            self.dir_in(mount, path)
        };
        let v2_dir = |file: &str| {
            let path = v2.as_ref()?;
            let mount = mounts.iter().find(|m| m.version == Version::V2)?;
            // A `0::/` line on a hybrid host does not mean v2 has this controller.
            self.dir_in(mount, path).filter(|dir| dir.path.join(file).exists())
        };
        CgroupDirs {
            cpu: v1_dir("cpu").or_else(|| v2_dir("cpu.max").or_else(|| v2_dir("cpu.stat"))),
            cpuacct: v1_dir("cpuacct").or_else(|| v2_dir("cpu.stat")),
            memory: v1_dir("memory").or_else(|| v2_dir("memory.current")),
        }
    }

    /// The directories of a cgroup given by its path (relative to each hierarchy's root).
    pub fn dirs_of_path(&self, cgroup: &Path) -> CgroupDirs {
        let path = format!("/{}", cgroup.display());
        let mounts = self.mounts();
        let pick = |controller: &str, v2_file: &str| {
            let v1 = mounts
                .iter()
                .filter(|m| m.version == Version::V1 && m.controllers.iter().any(|c| c == controller))
                .find_map(|m| self.dir_in(m, &path).filter(|d| d.path.is_dir()));
            v1.or_else(|| {
                mounts
                    .iter()
                    .filter(|m| m.version == Version::V2)
                    .find_map(|m| self.dir_in(m, &path).filter(|d| d.path.join(v2_file).exists()))
            })
        };
        CgroupDirs {
            cpu: pick("cpu", "cpu.stat"),
            cpuacct: pick("cpuacct", "cpu.stat"),
            memory: pick("memory", "memory.current"),
        }
    }

    /// The directory of a cgroup (by its path) that perf events filter on: in a v1
    /// `perf_event` hierarchy where one is mounted, else in the v2 one (on a hybrid host,
    /// the unified hierarchy under `cgroup_root/unified`). `None` if neither holds it.
    pub fn perf_event_dir(&self, cgroup: &Path) -> Option<PathBuf> {
        let path = format!("/{}", cgroup.display());
        let mounts = self.mounts();
        let v1 = mounts
            .iter()
            .filter(|m| m.version == Version::V1 && m.controllers.iter().any(|c| c == "perf_event"));
        let v2 = mounts.iter().filter(|m| m.version == Version::V2);
        v1.chain(v2).find_map(|m| self.dir_in(m, &path).map(|dir| dir.path).filter(|dir| dir.is_dir()))
    }

    /// CPU quota in cores (`quota / period`), the lowest on the path up; `None` when
    /// unlimited.
    pub fn cpu_quota_cores(&self, dirs: &CgroupDirs) -> Option<f64> {
        let dir = dirs.cpu.as_ref()?;
        lowest_up(dir, |path| match dir.version {
            Version::V2 => {
                let text = read_trimmed(&path.join("cpu.max"))?;
                let (quota, period) = text.split_once(' ')?;
                let (quota, period) = (quota.parse::<f64>().ok()?, period.parse::<f64>().ok()?);
                (quota > 0.0 && period > 0.0).then(|| quota / period)
            }
            Version::V1 => {
                let quota: f64 = read_trimmed(&path.join("cpu.cfs_quota_us"))?.parse().ok()?;
                let period: f64 = read_trimmed(&path.join("cpu.cfs_period_us"))?.parse().ok()?;
                (quota > 0.0 && period > 0.0).then(|| quota / period)
            }
        })
    }

    /// CPU time the cgroup has used, in nanoseconds.
    pub fn cpu_usage_ns(&self, dirs: &CgroupDirs) -> Option<u64> {
        let dir = dirs.cpuacct.as_ref()?;
        match dir.version {
            Version::V2 => {
                stat_field(&dir.path.join("cpu.stat"), "usage_usec").map(|us: u64| us.saturating_mul(1000))
            }
            Version::V1 => read_trimmed(&dir.path.join("cpuacct.usage"))?.parse().ok(),
        }
    }

    /// CPUs the cgroup may run on (cpuset), if the cpuset controller says.
    pub fn cpuset_cpus(&self, dirs: &CgroupDirs) -> Option<f64> {
        let dir = dirs.cpu.as_ref()?;
        ["cpuset.cpus.effective", "cpuset.cpus"]
            .iter()
            .find_map(|file| read_trimmed(&dir.path.join(file)))
            .and_then(|list| count_cpu_list(&list))
            .map(|n| n as f64)
    }

    pub fn memory(&self, dirs: &CgroupDirs) -> Option<Memory> {
        let dir = dirs.memory.as_ref()?;
        let (usage_file, limit_file, inactive_keys): (&str, &str, &[&str]) = match dir.version {
            Version::V2 => ("memory.current", "memory.max", &["inactive_file"]),
            Version::V1 => {
                ("memory.usage_in_bytes", "memory.limit_in_bytes", &["total_inactive_file", "inactive_file"])
            }
        };
        let usage: u64 = read_trimmed(&dir.path.join(usage_file))?.parse().ok()?;
        let inactive =
            inactive_keys.iter().find_map(|key| stat_field(&dir.path.join("memory.stat"), key)).unwrap_or(0);
        let limit = lowest_up(dir, |path| {
            let text = read_trimmed(&path.join(limit_file))?;
            let limit: u64 = text.parse().ok()?; // v2 "max" fails to parse: no limit
            (limit < V1_UNLIMITED).then_some(limit as f64)
        });
        Some(Memory { usage, working_set: usage.saturating_sub(inactive), limit: limit.map(|l| l as u64) })
    }

    /// How many processes share the memory cgroup (`cgroup.procs`).
    pub fn process_count(&self, dirs: &CgroupDirs) -> Option<usize> {
        let dir = dirs.memory.as_ref().or(dirs.cpuacct.as_ref())?;
        let text = fs::read_to_string(dir.path.join("cgroup.procs")).ok()?;
        Some(text.lines().filter(|l| !l.trim().is_empty()).count())
    }

    fn dir_in(&self, mount: &Mount, cgroup_path: &str) -> Option<Dir> {
        // Inside a container the mount's root is the container's own cgroup; the paths in
        // /proc/PID/cgroup are relative to the host's root, so strip the mount's root.
        let relative = if mount.root == "/" {
            cgroup_path.trim_start_matches('/')
        } else {
            cgroup_path.strip_prefix(mount.root.as_str()).unwrap_or(cgroup_path).trim_start_matches('/')
        };
        if relative.split('/').any(|part| part == "..") {
            return None;
        }
        Some(Dir { path: mount.point.join(relative), mount: mount.point.clone(), version: mount.version })
    }

    /// cgroup mounts from mountinfo, re-rooted at `cgroup_root`; without mountinfo, the
    /// usual layouts under `cgroup_root`.
    fn mounts(&self) -> Vec<Mount> {
        let mut mounts = Vec::new();
        if let Ok(text) = fs::read_to_string(self.proc_root.join("self/mountinfo")) {
            for line in text.lines() {
                let Some((left, right)) = line.split_once(" - ") else {
                    continue;
                };
                let fields: Vec<&str> = left.split(' ').collect();
                let sys: Vec<&str> = right.split(' ').collect();
                if fields.len() < 5 || sys.len() < 3 {
                    continue;
                }
                let version = match sys[0] {
                    "cgroup" => Version::V1,
                    "cgroup2" => Version::V2,
                    _ => continue,
                };
                let controllers = match version {
                    Version::V1 => {
                        sys[2].split(',').map(|c| c.trim_start_matches("name=").to_string()).collect()
                    }
                    Version::V2 => Vec::new(),
                };
                mounts.push(Mount {
                    root: unescape(fields[3]),
                    point: self.reroot(&unescape(fields[4])),
                    version,
                    controllers,
                });
            }
        }
        if mounts.is_empty() {
            mounts = self.guess_mounts();
        }
        mounts
    }

    fn reroot(&self, point: &str) -> PathBuf {
        match Path::new(point).strip_prefix(DEFAULT_MOUNT) {
            Ok(rest) => self.cgroup_root.join(rest),
            Err(_) => PathBuf::from(point),
        }
    }

    fn guess_mounts(&self) -> Vec<Mount> {
        let root = &self.cgroup_root;
        if root.join("cgroup.controllers").exists() {
            return vec![Mount {
                root: "/".into(),
                point: root.clone(),
                version: Version::V2,
                controllers: vec![],
            }];
        }
        let mut mounts = Vec::new();
        for name in ["cpu,cpuacct", "cpu", "cpuacct", "memory", "cpuset"] {
            if root.join(name).is_dir() {
                let controllers = name.split(',').map(str::to_string).collect();
                mounts.push(Mount {
                    root: "/".into(),
                    point: root.join(name),
                    version: Version::V1,
                    controllers,
                });
            }
        }
        if root.join("unified/cgroup.controllers").exists() {
            mounts.push(Mount {
                root: "/".into(),
                point: root.join("unified"),
                version: Version::V2,
                controllers: vec![],
            });
        }
        mounts
    }
}

/// The lowest value `read` finds from `dir` up to its mount point.
fn lowest_up(dir: &Dir, read: impl Fn(&Path) -> Option<f64>) -> Option<f64> {
    let mut lowest: Option<f64> = None;
    let mut current = Some(dir.path.as_path());
    while let Some(path) = current {
        if let Some(value) = read(path) {
            lowest = Some(lowest.map_or(value, |l| l.min(value)));
        }
        if path == dir.mount {
            break;
        }
        current = path.parent().filter(|parent| parent.starts_with(&dir.mount));
    }
    lowest
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// A `key value` line of a stat file.
fn stat_field(path: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}

/// Counts a cpu list like `0-3,8,10-11`.
pub fn count_cpu_list(list: &str) -> Option<usize> {
    let mut count = 0;
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((low, high)) => {
                let (low, high): (usize, usize) = (low.parse().ok()?, high.parse().ok()?);
                count = high.checked_sub(low)?.checked_add(1)?.checked_add(count)?;
            }
            None => {
                part.parse::<usize>().ok()?;
                count = count.checked_add(1)?;
            }
        }
    }
    (count > 0).then_some(count)
}

/// mountinfo escapes spaces and such as `\040`.
fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&code, 8) {
                Ok(byte) => out.push(byte as char),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&code);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
