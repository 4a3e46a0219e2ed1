//! cgroup and /proc readings on fixture trees of every host layout (percentages worked
//! out by hand), and on this machine's live tree.

use std::path::{Path, PathBuf};
use std::time::Duration;

use alertprof::config::{Config, ProcessRef};
use alertprof::verify::cgroup::{CgroupReader, Memory};
use alertprof::verify::procfs::ProcReader;
use alertprof::verify::sampler::Probe;

const MIB: u64 = 1 << 20;

/// A host with 4 GiB of memory, in the kernel's format.
const MEMINFO: &str = "\
MemTotal:        4194304 kB
MemFree:         1000000 kB
MemAvailable:    2000000 kB
Buffers:           10000 kB
Cached:           500000 kB
SwapCached:            0 kB
Active:           800000 kB
Inactive:         600000 kB
SwapTotal:             0 kB
SwapFree:              0 kB
Dirty:               100 kB
Writeback:             0 kB
AnonPages:        700000 kB
Mapped:           100000 kB
Shmem:              1000 kB
Slab:              50000 kB
Committed_AS:    1500000 kB
VmallocTotal:   34359738367 kB
VmallocUsed:       20000 kB
VmallocChunk:          0 kB
";

/// A fake host: `proc/` and `cgroup/` under a temp dir.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new(mountinfo: &str) -> Host {
        let host = Host { dir: tempfile::tempdir().unwrap() };
        host.write("proc/self/mountinfo", mountinfo);
        host.write("proc/meminfo", MEMINFO);
        host.write(
            "proc/stat",
            "cpu  1 2 3 4\ncpu0 1 2 3 4\ncpu1 1 2 3 4\ncpu2 1 2 3 4\ncpu3 1 2 3 4\nintr 0\n",
        );
        host
    }

    fn write(&self, path: &str, content: &str) {
        let path = self.dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn proc_root(&self) -> PathBuf {
        self.dir.path().join("proc")
    }

    fn cgroup_root(&self) -> PathBuf {
        self.dir.path().join("cgroup")
    }

    fn reader(&self) -> CgroupReader {
        CgroupReader::new(self.cgroup_root(), self.proc_root())
    }

    /// A probe for a target given by its cgroup path.
    fn probe(&self, cgroup: &str) -> Probe {
        let text = format!(
            "targets: [{{name: t, pprof_url: \"http://127.0.0.1:1\", process: {{cgroup: {cgroup}}}}}]\n"
        );
        let config = Config::parse(&text, Path::new(".")).unwrap();
        assert_eq!(
            config.targets[0].process,
            Some(ProcessRef::Cgroup(cgroup.trim_start_matches('/').into()))
        );
        Probe::new(&config.targets[0], &[], &self.cgroup_root(), &self.proc_root())
    }
}

/// Two samples one second apart with `used_ns` CPU time in between; returns
/// (cpu_percent, memory_percent).
fn two_samples(host: &Host, probe: &mut Probe, usage_file: &str, first: &str, second: &str) -> (f64, f64) {
    host.write(usage_file, first);
    let before = probe.sample_local(Duration::from_secs(10));
    assert!(before.sample["cpu_percent"].is_err(), "the first sample has no CPU use yet");
    host.write(usage_file, second);
    let after = probe.sample_local(Duration::from_secs(11));
    (after.sample["cpu_percent"].clone().unwrap(), after.sample["memory_percent"].clone().unwrap())
}

const V1_JOINED: &str = "\
25 1 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,memory
32 25 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,xattr,name=systemd
";

/// cgroup v1 with `cpu,cpuacct` joined: quota 1.5 cores; 0.75 s used in 1 s is 50%;
/// working set 600 - 100 = 500 MiB of a 1 GiB limit is 48.828125%.
#[test]
fn v1_joined_with_limits() {
    let host = Host::new(V1_JOINED);
    host.write(
        "proc/4242/cgroup",
        "12:memory:/kubepods/pod1/ctr\n4:cpu,cpuacct:/kubepods/pod1/ctr\n1:name=systemd:/kubepods/pod1/ctr\n",
    );
    let cpu = "cgroup/cpu,cpuacct/kubepods/pod1/ctr";
    host.write(&format!("{cpu}/cpu.cfs_quota_us"), "150000\n");
    host.write(&format!("{cpu}/cpu.cfs_period_us"), "100000\n");
    let mem = "cgroup/memory/kubepods/pod1/ctr";
    host.write(&format!("{mem}/memory.usage_in_bytes"), &format!("{}\n", 600 * MIB));
    host.write(&format!("{mem}/memory.limit_in_bytes"), &format!("{}\n", 1024 * MIB));
    host.write(
        &format!("{mem}/memory.stat"),
        &format!("cache 1\ninactive_file 7\ntotal_inactive_file {}\n", 100 * MIB),
    );
    host.write(&format!("{mem}/cgroup.procs"), "4242\n");

    let reader = host.reader();
    let dirs = reader.dirs_of_pid(4242);
    assert_eq!(dirs.cpu.as_ref().unwrap().path, host.cgroup_root().join("cpu,cpuacct/kubepods/pod1/ctr"));
    assert_eq!(dirs.cpuacct, dirs.cpu);
    assert_eq!(reader.cpu_quota_cores(&dirs), Some(1.5));
    assert_eq!(
        reader.memory(&dirs),
        Some(Memory { usage: 600 * MIB, working_set: 500 * MIB, limit: Some(1024 * MIB) })
    );
    let mut probe = host.probe("/kubepods/pod1/ctr");
    let (cpu_percent, memory_percent) =
        two_samples(&host, &mut probe, &format!("{cpu}/cpuacct.usage"), "1000000000\n", "1750000000\n");
    assert!((cpu_percent - 50.0).abs() < 1e-9, "{cpu_percent}");
    assert!((memory_percent - 48.828125).abs() < 1e-9, "{memory_percent}");
}

/// v1 unlimited: quota -1 and a limit of about 2^63 are no limits. CPU falls back to the
/// host's 4 CPUs (1 s in 1 s is 25%), memory to host memory (500 MiB of 4 GiB is 12.207%).
/// A limit on the pod's parent cgroup still counts.
#[test]
fn v1_joined_unlimited_and_parent_limit() {
    let host = Host::new(V1_JOINED);
    let cpu = "cgroup/cpu,cpuacct/app";
    host.write(&format!("{cpu}/cpu.cfs_quota_us"), "-1\n");
    host.write(&format!("{cpu}/cpu.cfs_period_us"), "100000\n");
    let mem = "cgroup/memory/app";
    host.write(&format!("{mem}/memory.usage_in_bytes"), &format!("{}\n", 500 * MIB));
    host.write(&format!("{mem}/memory.limit_in_bytes"), "9223372036854771712\n");
    host.write(&format!("{mem}/memory.stat"), "total_inactive_file 0\n");
    let mut probe = host.probe("app");
    let (cpu_percent, memory_percent) =
        two_samples(&host, &mut probe, &format!("{cpu}/cpuacct.usage"), "0\n", "1000000000\n");
    assert!((cpu_percent - 25.0).abs() < 1e-9, "{cpu_percent}");
    assert!((memory_percent - 500.0 / 4096.0 * 100.0).abs() < 1e-9, "{memory_percent}");

    // The limit sits on the parent (a pod), the container itself is unlimited.
    host.write("cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
    host.write("cgroup/memory/pod/memory.limit_in_bytes", &format!("{}\n", 2000 * MIB));
    host.write("cgroup/memory/pod/ctr/memory.limit_in_bytes", "9223372036854771712\n");
    host.write("cgroup/memory/pod/ctr/memory.usage_in_bytes", &format!("{}\n", 500 * MIB));
    let dirs = host.reader().dirs_of_path(Path::new("pod/ctr"));
    assert_eq!(host.reader().memory(&dirs).unwrap().limit, Some(2000 * MIB));
}

/// v1 with separate `cpu` and `cpuacct` mounts (as on these hosts): quota from `cpu`,
/// usage from `cpuacct`. Quota 0.5 cores, 0.25 s in 1 s is 50%.
#[test]
fn v1_separate_cpu_and_cpuacct() {
    let host = Host::new(
        "30 25 0:26 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
         31 25 0:27 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct\n\
         32 25 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
    );
    host.write("proc/77/cgroup", "7:memory:/app\n6:cpuacct:/app\n5:cpu:/app\n");
    host.write("cgroup/cpu/app/cpu.cfs_quota_us", "50000\n");
    host.write("cgroup/cpu/app/cpu.cfs_period_us", "100000\n");
    host.write("cgroup/memory/app/memory.usage_in_bytes", &format!("{}\n", 256 * MIB));
    host.write("cgroup/memory/app/memory.limit_in_bytes", &format!("{}\n", 512 * MIB));
    host.write("cgroup/memory/app/memory.stat", "total_inactive_file 0\n");
    let dirs = host.reader().dirs_of_pid(77);
    assert_eq!(dirs.cpu.as_ref().unwrap().path, host.cgroup_root().join("cpu/app"));
    assert_eq!(dirs.cpuacct.as_ref().unwrap().path, host.cgroup_root().join("cpuacct/app"));
    let mut probe = host.probe("app");
    let (cpu_percent, memory_percent) =
        two_samples(&host, &mut probe, "cgroup/cpuacct/app/cpuacct.usage", "5000000000\n", "5250000000\n");
    assert!((cpu_percent - 50.0).abs() < 1e-9, "{cpu_percent}");
    assert!((memory_percent - 50.0).abs() < 1e-9, "{memory_percent}");
}

const V2: &str =
    "30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";

/// cgroup v2: `cpu.max` 200000/100000 is 2 cores; 3 s in 1 s (`usage_usec`) is 150%;
/// working set 800 - 300 = 500 MiB of 1000 MiB is 50%. With `max` both fall back.
#[test]
fn v2_with_and_without_limits() {
    let host = Host::new(V2);
    host.write("proc/9/cgroup", "0::/system.slice/app.service\n");
    let app = "cgroup/system.slice/app.service";
    host.write(&format!("{app}/cpu.max"), "200000 100000\n");
    host.write(&format!("{app}/memory.current"), &format!("{}\n", 800 * MIB));
    host.write(&format!("{app}/memory.max"), &format!("{}\n", 1000 * MIB));
    host.write(
        &format!("{app}/memory.stat"),
        &format!("anon 1\ninactive_file {}\nactive_file 2\n", 300 * MIB),
    );
    let dirs = host.reader().dirs_of_pid(9);
    assert_eq!(dirs.memory.as_ref().unwrap().path, host.cgroup_root().join("system.slice/app.service"));
    let mut probe = host.probe("system.slice/app.service");
    let stat = |usec: u64| format!("usage_usec {usec}\nuser_usec 1\nsystem_usec 1\n");
    let (cpu_percent, memory_percent) =
        two_samples(&host, &mut probe, &format!("{app}/cpu.stat"), &stat(1_000_000), &stat(4_000_000));
    assert!((cpu_percent - 150.0).abs() < 1e-9, "{cpu_percent}");
    assert!((memory_percent - 50.0).abs() < 1e-9, "{memory_percent}");

    host.write(&format!("{app}/cpu.max"), "max 100000\n");
    host.write(&format!("{app}/memory.max"), "max\n");
    let reader = host.reader();
    assert_eq!(reader.cpu_quota_cores(&dirs), None);
    assert_eq!(reader.memory(&dirs).unwrap().limit, None);
    // Without a quota the cgroup's cpuset counts: 0-1 is 2 CPUs; 1 s in 1 s is 50%.
    host.write(&format!("{app}/cpuset.cpus.effective"), "0-1\n");
    let mut probe = host.probe("system.slice/app.service");
    let (cpu_percent, memory_percent) =
        two_samples(&host, &mut probe, &format!("{app}/cpu.stat"), &stat(0), &stat(1_000_000));
    assert!((cpu_percent - 50.0).abs() < 1e-9, "{cpu_percent}");
    assert!((memory_percent - 500.0 / 4096.0 * 100.0).abs() < 1e-9, "{memory_percent}");
}

/// A hybrid host: v1 controllers plus a cgroup2 mount without controllers. The `0::/`
/// line must not send readings to v2, where there are no limit files.
#[test]
fn hybrid_uses_v1_controllers() {
    let host = Host::new(
        "30 25 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n\
         31 25 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
         32 25 0:28 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct\n\
         33 25 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
    );
    host.write(
        "proc/5/cgroup",
        "9:memory:/user.slice\n3:cpuacct:/\n2:cpu:/\n0::/user.slice/session-1.scope\n",
    );
    host.write("cgroup/unified/user.slice/session-1.scope/cgroup.procs", "5\n");
    host.write("cgroup/unified/cgroup.controllers", "");
    host.write("cgroup/memory/user.slice/memory.usage_in_bytes", &format!("{}\n", 100 * MIB));
    host.write("cgroup/memory/user.slice/memory.limit_in_bytes", "9223372036854771712\n");
    host.write("cgroup/memory/user.slice/memory.stat", "total_inactive_file 0\n");
    host.write("cgroup/cpu/cpu.cfs_quota_us", "-1\n");
    host.write("cgroup/cpuacct/cpuacct.usage", "12345\n");
    let reader = host.reader();
    let dirs = reader.dirs_of_pid(5);
    assert_eq!(dirs.memory.as_ref().unwrap().path, host.cgroup_root().join("memory/user.slice"));
    assert_eq!(dirs.cpuacct.as_ref().unwrap().path, host.cgroup_root().join("cpuacct/"));
    assert_eq!(reader.cpu_usage_ns(&dirs), Some(12345));
    assert_eq!(reader.cpu_quota_cores(&dirs), None);
    assert_eq!(reader.memory(&dirs).unwrap().limit, None);
}

/// Inside a container the mount's root is the container's cgroup: paths from
/// /proc/PID/cgroup are taken relative to it.
#[test]
fn container_mount_root() {
    let host =
        Host::new("40 35 0:30 /kubepods/pod1/ctr /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n");
    host.write("proc/1/cgroup", "9:memory:/kubepods/pod1/ctr\n");
    host.write("cgroup/memory/memory.usage_in_bytes", "100\n");
    host.write("cgroup/memory/memory.limit_in_bytes", "400\n");
    let reader = host.reader();
    let dirs = reader.dirs_of_pid(1);
    assert_eq!(dirs.memory.as_ref().unwrap().path, host.cgroup_root().join("memory/"));
    assert_eq!(reader.memory(&dirs), Some(Memory { usage: 100, working_set: 100, limit: Some(400) }));
}

/// Missing files are no reading, never an error or a panic.
#[test]
fn missing_files_are_no_reading() {
    let host = Host::new(V2);
    let reader = host.reader();
    let dirs = reader.dirs_of_pid(12345);
    assert_eq!(dirs, Default::default());
    assert_eq!(reader.cpu_quota_cores(&dirs), None);
    assert_eq!(reader.memory(&dirs), None);
    let mut probe = host.probe("gone");
    for _ in 0..2 {
        let local = probe.sample_local(Duration::from_secs(1));
        assert!(local.sample["cpu_percent"].is_err());
        assert!(local.sample["memory_percent"].is_err());
    }
}

/// This machine's real /proc and cgroup tree, for this test's own process: readings are
/// there and plausible.
#[test]
fn live_tree() {
    let pid = std::process::id();
    let procs = ProcReader::new("/proc");
    spin(Duration::from_millis(100));
    let me = procs.sample(pid).expect("own process readable");
    assert!(me.rss_bytes > MIB && me.threads >= 1 && me.cpu_ns > 0, "{me:?}");
    assert!(procs.host_memory().unwrap() > 256 * MIB);
    assert!(procs.host_cpus().unwrap() >= 1);

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    assert_eq!(procs.pid_listening_on(port), Some(pid));
    drop(listener);
    assert_eq!(procs.pid_listening_on(port), None);

    let reader = CgroupReader::new("/sys/fs/cgroup", "/proc");
    let dirs = reader.dirs_of_pid(pid);
    let memory = reader.memory(&dirs).expect("a memory cgroup on this host");
    assert!(memory.usage >= memory.working_set && memory.working_set > 0, "{memory:?}");
    if let Some(limit) = memory.limit {
        assert!(limit > 0);
    }
    let used = reader.cpu_usage_ns(&dirs).expect("cgroup CPU usage");
    assert!(used > 0);
    if let Some(cores) = reader.cpu_quota_cores(&dirs) {
        assert!(cores > 0.0);
    }

    // The probe on the live tree, by PID: CPU appears from the second sample and memory
    // is a sane percentage.
    let config = Config::parse(
        &format!("targets: [{{name: me, pprof_url: \"http://127.0.0.1:1\", process: {{pid: {pid}}}}}]\n"),
        Path::new("."),
    )
    .unwrap();
    let mut probe = Probe::new(&config.targets[0], &[], Path::new("/sys/fs/cgroup"), Path::new("/proc"));
    let clock = std::time::Instant::now();
    probe.sample_local(clock.elapsed());
    spin(Duration::from_millis(300));
    let local = probe.sample_local(clock.elapsed());
    let cpu = local.sample["cpu_percent"].clone().unwrap();
    let memory = local.sample["memory_percent"].clone().unwrap();
    assert!(cpu > 0.0 && cpu <= 100.0 * 1.5, "cpu_percent {cpu}");
    assert!(memory > 0.0 && memory < 100.0, "memory_percent {memory}");
    assert!(local.sample["threads"].clone().unwrap() >= 1.0);
}

/// Keeps this thread busy for `time`.
fn spin(time: Duration) {
    let until = std::time::Instant::now() + time;
    let mut x = 0u64;
    while std::time::Instant::now() < until {
        x = x.wrapping_mul(31).wrapping_add(7);
    }
    std::hint::black_box(x);
}

/// Numbers no kernel writes, as a broken or hostile /proc and cgroup tree may hold them: CPU
/// counters at their maximum, a CPU range the wrong way round, a CPU list too long to
/// count. Each reads as a number or as no reading, never a panic that would end sampling.
#[test]
fn hostile_numbers_are_no_panic() {
    let host = Host::new(V2);
    let max = u64::MAX;
    host.write(
        "proc/4343/stat",
        &format!(
            "4343 (demo) S 1 4343 4343 0 -1 4194304 97 0 0 0 {max} {max} 0 0 20 0 7 0 119773 3133440 380 \
             18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
        ),
    );
    host.write(
        "proc/4343/status",
        "Name:\tdemo\nState:\tS (sleeping)\nTgid:\t4343\nPid:\t4343\nPPid:\t1\nTracerPid:\t0\n\
         Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nFDSize:\t64\nGroups:\t\nThreads:\t7\nCpus_allowed_list:\t3-1\n",
    );
    host.write("proc/4343/cgroup", "0::/app\n");
    host.write("cgroup/app/cpu.stat", &format!("usage_usec {max}\n"));
    host.write("cgroup/app/cpuset.cpus.effective", "0-18446744073709551615\n");
    host.write("cgroup/app/memory.current", &format!("{max}\n"));

    let config = Config::parse(
        "targets: [{name: t, pprof_url: \"http://127.0.0.1:1\", process: {pid: 4343}}]",
        Path::new("."),
    )
    .unwrap();
    let mut by_pid = Probe::new(&config.targets[0], &[], &host.cgroup_root(), &host.proc_root());
    let mut by_cgroup = host.probe("/app");
    for probe in [&mut by_pid, &mut by_cgroup] {
        probe.sample_local(Duration::from_secs(10));
        let second = probe.sample_local(Duration::from_secs(11));
        let cpu = second.sample["cpu_percent"].clone().expect("a CPU reading");
        assert_eq!(cpu, 0.0, "a counter stuck at its maximum moves no time");
        assert!(second.sample.contains_key("memory_percent"));
    }
    assert_eq!(ProcReader::new(host.proc_root()).sample(4343).unwrap().cpus_allowed, None);
}
