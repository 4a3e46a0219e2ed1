//! What the whole-service benchmarks share: starting the release binary on port 0 and
//! finding its port, the Go demo service pinned to a CPU of its own under `wrk`, reading a
//! process's CPU time and memory, and printing a table row.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

#[path = "../../tests/support/child.rs"]
mod child;

pub use child::Killed;

/// A server the benchmark started, killed on drop.
pub struct Proc {
    pub child: Killed,
    pub base: String,
    _dir: tempfile::TempDir,
}

impl Proc {
    /// Starts `command`, told to listen on port 0, and waits for the port it took.
    pub fn start(mut command: Command, dir: tempfile::TempDir) -> Proc {
        let child = Killed(command.spawn().unwrap());
        let pid = child.0.id();
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Some(port) = listening_port(pid) {
                break port;
            }
            assert!(Instant::now() < deadline, "{command:?} did not listen");
            std::thread::sleep(Duration::from_millis(20));
        };
        Proc { child, base: format!("http://127.0.0.1:{port}"), _dir: dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }
}

/// The TCP port process `pid` listens on, read from /proc: any binary, old or new, can be
/// started on port 0 and found.
pub fn listening_port(pid: u32) -> Option<u16> {
    let process = procfs::process::Process::new(pid as i32).ok()?;
    let inodes: Vec<u64> = process
        .fd()
        .ok()?
        .flatten()
        .filter_map(|fd| match fd.target {
            procfs::process::FDTarget::Socket(inode) => Some(inode),
            _ => None,
        })
        .collect();
    let listening = procfs::net::tcp().ok()?.into_iter().chain(procfs::net::tcp6().ok()?);
    listening
        .filter(|entry| entry.state == procfs::net::TcpState::Listen && inodes.contains(&entry.inode))
        .map(|entry| entry.local_address.port())
        .next()
}

/// The alertprof binary measured: `ALERTPROF_BIN` (another build, to compare with), else
/// this tree's release build.
pub fn alertprof_binary() -> PathBuf {
    let binary = std::env::var_os("ALERTPROF_BIN")
        .map_or_else(|| root().join("target/release/alertprof"), PathBuf::from);
    assert!(binary.exists(), "build first: cargo build --release (benches/run.sh does)");
    binary
}

pub fn start_alertprof(config: &str) -> Proc {
    start_alertprof_with(config, Command::new(alertprof_binary()))
}

/// `alertprof serve` as `command` runs it (say, under `prlimit`).
pub fn start_alertprof_with(config: &str, mut command: Command) -> Proc {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("alertprof.yaml"), format!("listen_address: 127.0.0.1:0\n{config}"))
        .unwrap();
    command
        .args(["--log-level", "warn", "serve", "--config", "alertprof.yaml"])
        .current_dir(dir.path())
        .stderr(std::fs::File::create(dir.path().join("alertprof.log")).unwrap());
    Proc::start(command, dir)
}

pub fn start_minimal_receiver() -> Proc {
    let binary = root().join("target/release/examples/minimal_receiver");
    assert!(binary.exists(), "build first: cargo build --release --examples");
    let mut command = Command::new(binary);
    command.arg("127.0.0.1:0").stderr(Stdio::null());
    Proc::start(command, tempfile::tempdir().unwrap())
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .trim_end_matches(" kB")
            .trim()
            .parse()
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// User plus system CPU time of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / procfs::ticks_per_second() as f64
}

pub async fn metrics_text(base: &str) -> String {
    alertprof::http::client().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap()
}

pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

pub fn row(what: &str, figure: String, goal: &str) {
    println!("| {what} | {figure} | {goal} |");
}

/// The Go demo service (`examples/demo-target`) built into `dir`, with the Go files `extra`
/// (of its package) beside its own.
pub fn build_demo(dir: &Path, extra: &[PathBuf]) -> PathBuf {
    let source = dir.join("demo-target-source");
    std::fs::create_dir_all(&source).unwrap();
    let own = ["main.go", "go.mod"].map(|name| root().join("examples/demo-target").join(name));
    for file in own.iter().chain(extra) {
        std::fs::copy(file, source.join(file.file_name().unwrap())).unwrap();
    }
    let binary = dir.join("demo-target");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(&source)
        .env("CGO_ENABLED", "0")
        .env("GOPROXY", "off")
        .status()
        .expect("go runs (apt-get install golang-go)");
    assert!(status.success(), "the demo service builds");
    binary
}

/// The demo service on CPU 1 only, with one P: the load generator and alertprof run on
/// CPU 0, so what the service loses is what profiling costs it, not what they take.
pub fn start_demo(binary: &Path) -> Proc {
    let mut command = Command::new("taskset");
    command.args(["-c", "1"]).arg(binary).args(["-listen", "127.0.0.1:0"]).env("GOMAXPROCS", "1");
    command.stderr(Stdio::null());
    Proc::start(command, tempfile::tempdir().unwrap())
}

/// alertprof on CPU 0, keeping its data in `data` (which outlives it).
pub fn start_pinned(config: &str, data: &Path) -> Proc {
    let mut command = Command::new("taskset");
    command.args(["-c", "0"]).arg(alertprof_binary());
    start_alertprof_with(&format!("storage: {{dir: \"{}\"}}\n{config}", data.display()), command)
}

/// Requests per second `wrk` gets from `url` in `seconds`, from CPU 0.
pub fn wrk_rps(url: &str, seconds: u32) -> f64 {
    let out = Command::new("taskset")
        .args(["-c", "0", "wrk", "-t1", "-c4", &format!("-d{seconds}s"), url])
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("wrk: {text}"))
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
