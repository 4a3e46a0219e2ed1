//! A cgroup made in the host's live tree (`/sys/fs/cgroup`) for one test, with a CPU quota
//! and a memory limit: a process moved into it runs as a container does, as a node agent
//! sees it through the host's tree. v1 (cpu and cpuacct joined or apart, memory) and v2
//! hierarchies; needs root. Removed on drop, its processes moved back to the root first.

use std::path::{Path, PathBuf};

/// The live cgroup tree.
const ROOT: &str = "/sys/fs/cgroup";

pub struct LiveCgroup {
    /// The cgroup's path below the hierarchies' root, as `/proc/PID/cgroup` and cAdvisor's
    /// `id` label name it, e.g. `/alertprof-test-123/ctr`.
    pub id: String,
    /// One per hierarchy that holds the cpu, cpuacct or memory controller.
    made: Vec<Made>,
}

/// What was made in one hierarchy, to undo.
struct Made {
    mount: PathBuf,
    /// The directories made, parent first.
    dirs: Vec<PathBuf>,
}

impl Made {
    fn leaf(&self) -> &Path {
        self.dirs.last().expect("a cgroup was made")
    }
}

/// A cgroup hierarchy's mount: where, which cgroup it shows as its root, v2 or not, and
/// whether it holds the controllers (a hybrid host's v2 hierarchy holds none).
struct Mount {
    point: PathBuf,
    root: String,
    v2: bool,
    controllers: bool,
}

/// The mounts that hold the cpu, cpuacct or memory controller, from this process's
/// mountinfo.
fn mounts() -> Vec<Mount> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut v1 = Vec::new();
    let mut v2 = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let (fields, sys): (Vec<&str>, Vec<&str>) = (left.split(' ').collect(), right.split(' ').collect());
        if fields.len() < 5 || sys.len() < 3 || !fields[4].starts_with(ROOT) {
            continue;
        }
        let (point, root) = (PathBuf::from(fields[4]), fields[3].to_string());
        let mount = Mount { point, root, v2: sys[0] == "cgroup2", controllers: true };
        match sys[0] {
            "cgroup" if sys[2].split(',').any(|option| ["cpu", "cpuacct", "memory"].contains(&option)) => {
                v1.push(mount)
            }
            "cgroup2" => v2.push(mount),
            _ => {}
        }
    }
    // Where v1 holds the controllers, v2 (a hybrid host's `unified`) has none of them; the
    // cgroup is made there too, as systemd makes a container's scope in both, for perf
    // events, which filter on the v2 hierarchy where no v1 `perf_event` one is mounted.
    if v1.is_empty() {
        return v2;
    }
    v1.extend(v2.into_iter().map(|mount| Mount { controllers: false, ..mount }));
    v1
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| {
        panic!(
            "cannot write {text:?} to {}: {e} (this test makes a cgroup in the host's live tree; \
             it needs root and a writable /sys/fs/cgroup)",
            path.display()
        )
    });
}

impl LiveCgroup {
    /// Makes `/alertprof-test-PID-NAME/ctr` in every hierarchy with the cpu, cpuacct or
    /// memory controller (and a hybrid host's v2 one), its CPU quota `cores` (e.g. 0.2: 20 ms every 100 ms), its memory
    /// limit `memory` bytes.
    pub fn create(name: &str, cores: f64, memory: u64) -> LiveCgroup {
        let mounts = mounts();
        assert!(!mounts.is_empty(), "no cgroup hierarchy with the cpu controller under {ROOT}");
        let relative = format!("alertprof-test-{}-{name}/ctr", std::process::id());
        let root = mounts[0].root.trim_end_matches('/').to_string();
        let mut cgroup = LiveCgroup { id: format!("{root}/{relative}"), made: Vec::new() };
        let (period, quota) = (100_000u64, (cores * 100_000.0) as u64);
        for mount in &mounts {
            let top = mount.point.join(relative.split('/').next().unwrap());
            let leaf = mount.point.join(&relative);
            if mount.v2 && mount.controllers {
                // v2 gives a child a controller only if each parent passes it down.
                write(&mount.point.join("cgroup.subtree_control"), "+cpu +memory");
            }
            std::fs::create_dir(&top).unwrap_or_else(|e| panic!("mkdir {}: {e} (needs root)", top.display()));
            cgroup.made.push(Made { mount: mount.point.clone(), dirs: vec![top.clone()] });
            if mount.v2 && mount.controllers {
                write(&top.join("cgroup.subtree_control"), "+cpu +memory");
            }
            std::fs::create_dir(&leaf).unwrap();
            cgroup.made.last_mut().unwrap().dirs.push(leaf.clone());
            if mount.v2 && mount.controllers {
                write(&leaf.join("cpu.max"), &format!("{quota} {period}"));
                write(&leaf.join("memory.max"), &memory.to_string());
            }
            if leaf.join("cpu.cfs_quota_us").exists() {
                write(&leaf.join("cpu.cfs_period_us"), &period.to_string());
                write(&leaf.join("cpu.cfs_quota_us"), &quota.to_string());
            }
            if leaf.join("memory.limit_in_bytes").exists() {
                write(&leaf.join("memory.limit_in_bytes"), &memory.to_string());
            }
        }
        cgroup
    }

    /// Moves the process `pid` (all its threads) into the cgroup.
    pub fn add(&self, pid: u32) {
        for made in &self.made {
            write(&made.leaf().join("cgroup.procs"), &pid.to_string());
        }
    }
}

impl Drop for LiveCgroup {
    fn drop(&mut self) {
        for made in &self.made {
            let procs = std::fs::read_to_string(made.leaf().join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines() {
                std::fs::write(made.mount.join("cgroup.procs"), pid).ok();
            }
            for dir in made.dirs.iter().rev() {
                if let Err(error) = std::fs::remove_dir(dir) {
                    eprintln!("cannot remove the test's cgroup {}: {error}", dir.display());
                }
            }
        }
    }
}
