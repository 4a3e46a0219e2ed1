//! perf profiles of real processes: Go (plain, stripped, PIE), C, C++ and Rust burners
//! sampled by pid and by cgroup with the kernel's perf events, their profiles read back,
//! checked by the crate's validator and by `go tool pprof`, and set beside `perf record`'s
//! and Go's own CPU profiler's of the same run. Needs root (or CAP_PERFMON) and Debian's
//! gcc, g++, golang-go, binutils and linux-perf. On a host without perf events each test
//! says so and passes without sampling; with `CI=true` it fails instead.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use alertprof::model::BodyFormat;
use alertprof::perf::{self, BinaryError, PerfError, PerfSettings, PerfSummary, PerfTarget, Symbolizer};
use alertprof::profile::decode_profile;
use alertprof::profile::proto::Profile;
use support::Killed;
use tokio_util::sync::CancellationToken;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/perf")
}

/// A directory for this test binary's builds, under the target directory.
fn build_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("perf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// The Go burner built offline with Debian's Go, with `args` given to `go build`.
fn go_burner(name: &str, args: &[&str]) -> PathBuf {
    let out = build_dir().join(name);
    if !out.exists() {
        let status = Command::new("go")
            .arg("build")
            .args(args)
            .arg("-o")
            .arg(&out)
            .arg(".")
            .current_dir(fixtures().join("goburn"))
            .env("CGO_ENABLED", "0")
            .env("GOPROXY", "off")
            .env("GOFLAGS", "-mod=mod")
            .status()
            .expect("`go` runs (apt-get install golang-go)");
        assert!(status.success(), "go build {args:?} failed");
    }
    out
}

/// A C or C++ burner, with frame pointers and DWARF.
fn native_burner(compiler: &str, source: &str) -> PathBuf {
    let out = build_dir().join(source.replace('.', "-"));
    if !out.exists() {
        let status = Command::new(compiler)
            .args(["-O1", "-fno-omit-frame-pointer", "-g", "-o"])
            .arg(&out)
            .arg(fixtures().join(source))
            .status()
            .unwrap_or_else(|error| panic!("{compiler} runs (apt-get install gcc g++): {error}"));
        assert!(status.success(), "{compiler} {source} failed");
    }
    out
}

/// A running burner, killed on drop, once it said it is burning.
struct Burner {
    child: Killed,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Burner {
    fn start(program: &Path, args: &[&str]) -> Burner {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("{} starts: {error}", program.display()));
        let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
        let mut burner = Burner { child: Killed(child), stdin, stdout: BufReader::new(stdout) };
        assert_eq!(burner.line(), "ready");
        burner
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim_end().to_string()
    }
}

/// The right to sample: perf events can be opened here, and no other test of this file
/// samples meanwhile (so each burner has the CPU it needs, and a test that waits for its
/// own events to open sees only its own; nextest runs each test in a process of its own,
/// and `.config/nextest.toml` runs this file's one at a time). None, saying why, where
/// perf events are unavailable: the test then passes without sampling, unless `CI=true`.
fn perf_lock() -> Option<MutexGuard<'static, ()>> {
    static LOCK: Mutex<()> = Mutex::new(());
    match perf::check_access() {
        Ok(()) => Some(LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())),
        Err(error @ (PerfError::Permission { .. } | PerfError::Unsupported { .. })) => {
            unavailable(format_args!("perf events are unavailable on this host: {error}"));
            None
        }
        Err(error) => panic!("checking perf access failed: {error}"),
    }
}

/// A test that cannot run on this host says why and passes, so a developer without perf
/// can run the rest; with `CI=true` it fails, so CI never passes by skipping.
fn unavailable(why: std::fmt::Arguments) {
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("CI=true and this test cannot run: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

fn settings(seconds: f64) -> PerfSettings {
    PerfSettings { duration: Duration::from_secs_f64(seconds), ..PerfSettings::default() }
}

/// Records `target`; the profile as written, decoded, and the summary.
fn record(target: &PerfTarget, settings: &PerfSettings) -> (Vec<u8>, Profile, PerfSummary) {
    let mut bytes = Vec::new();
    let summary =
        perf::record(target, settings, &CancellationToken::new(), &mut bytes).expect("recording works");
    alertprof::capture::validate_bytes(BodyFormat::Pprof, &bytes, 1 << 30).expect("the validator accepts it");
    let profile = decode_profile(bytes.as_slice(), 1 << 30).expect("the profile decodes");
    (bytes, profile, summary)
}

fn text(profile: &Profile, index: i64) -> &str {
    &profile.string_table[index as usize]
}

/// Each location's lines as function names, innermost first.
fn location_lines(profile: &Profile, id: u64) -> Vec<String> {
    let location = profile.location.iter().find(|location| location.id == id).unwrap();
    let function = |id: u64| profile.function.iter().find(|function| function.id == id).unwrap();
    location.line.iter().map(|line| text(profile, function(line.function_id).name).to_string()).collect()
}

/// Samples by leaf function (the innermost frame of the leaf location), as `-top`'s flat.
fn flat(profile: &Profile) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for sample in &profile.sample {
        let leaf = sample.location_id.first().map(|id| location_lines(profile, *id));
        let name = leaf.and_then(|lines| lines.first().cloned()).unwrap_or_else(|| "?".into());
        *totals.entry(name).or_default() += sample.value[0];
    }
    totals
}

fn top(profile: &Profile) -> String {
    let totals = flat(profile);
    totals.iter().max_by_key(|(_, count)| **count).map(|(name, _)| name.clone()).unwrap_or_default()
}

/// `go tool pprof -top` of the profile's bytes.
fn pprof_top(bytes: &[u8]) -> String {
    let file = build_dir().join(format!("profile-{}.pb.gz", rand_suffix()));
    std::fs::write(&file, bytes).unwrap();
    let output = Command::new("go").args(["tool", "pprof", "-top"]).arg(&file).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// The first row of `go tool pprof -top` with samples: its function.
fn pprof_first_function(top: &str) -> String {
    let rows = top.lines().skip_while(|line| !line.trim_start().starts_with("flat")).skip(1);
    let first = rows.into_iter().next().unwrap_or_default();
    first.split_whitespace().skip(5).collect::<Vec<_>>().join(" ")
}

/// The Go build id as `go tool buildid` prints it.
fn go_build_id(binary: &Path) -> String {
    let output = Command::new("go").args(["tool", "buildid"]).arg(binary).output().unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// A Go process sampled by pid: its burning function tops the profile, the inlined `mix`
/// is its own line over `hotLoop`, `hotLoop`'s caller is there although `hotLoop` sets up
/// no frame, the mapping carries the Go build id, and `go tool pprof -top` names the same
/// function.
fn go_burner_profile(binary: &Path) {
    let burner = Burner::start(binary, &[]);
    let (bytes, profile, summary) = record(&PerfTarget::Pid(burner.pid()), &settings(1.5));
    assert!(summary.samples >= 10, "{summary:?}");
    assert_eq!((summary.processes, summary.lost), (1, 0), "{summary:?}");
    assert!(summary.unreadable_binaries.is_empty(), "{summary:?}");
    let top = top(&profile);
    assert!(top == "main.mix" || top == "main.hotLoop", "top is {top}: {:?}", flat(&profile));
    let through_caller = profile.sample.iter().any(|sample| {
        let outer: Vec<String> = sample
            .location_id
            .iter()
            .map(|id| location_lines(&profile, *id).last().cloned().unwrap_or_default())
            .collect();
        outer.windows(3).any(|three| three == ["main.hotLoop", "main.burnForever", "main.main.func2"])
    });
    assert!(through_caller, "no stack shows the frameless hotLoop's caller burnForever");
    let inlined = profile
        .location
        .iter()
        .any(|location| location_lines(&profile, location.id) == ["main.mix", "main.hotLoop"]);
    assert!(inlined, "no location with main.mix inlined into main.hotLoop");
    let mapping =
        profile.mapping.iter().find(|mapping| text(&profile, mapping.filename) == binary.to_str().unwrap());
    let mapping = mapping.expect("the binary's mapping");
    assert_eq!(text(&profile, mapping.build_id), go_build_id(binary));
    assert!(mapping.has_functions && mapping.has_inline_frames);
    assert_eq!(profile.period, 1_000_000_000 / 99);
    assert!(profile.duration_nanos >= 1_400_000_000, "{}", profile.duration_nanos);
    let file =
        profile.function.iter().find(|function| text(&profile, function.name) == "main.hotLoop").unwrap();
    assert!(text(&profile, file.filename).ends_with("tests/fixtures/perf/goburn/main.go"));
    let pprof = pprof_top(&bytes);
    let first = pprof_first_function(&pprof);
    assert!(first.starts_with("main.mix") || first == "main.hotLoop", "{pprof}");
}

/// A Go binary as `go build` makes it.
#[test]
fn go_process_by_pid() {
    if let Some(_perf) = perf_lock() {
        go_burner_profile(&go_burner("goburn", &[]));
    }
}

/// Stripped (`-s -w`): no symbol table, and still every name, line and inlined call.
#[test]
fn stripped_go_process_by_pid() {
    if let Some(_perf) = perf_lock() {
        go_burner_profile(&go_burner("goburn-stripped", &["-ldflags=-s -w"]));
    }
}

/// Position-independent: loaded at a random base, the inline tree found through
/// relocations.
#[test]
fn pie_go_process_by_pid() {
    if let Some(_perf) = perf_lock() {
        go_burner_profile(&go_burner("goburn-pie", &["-buildmode=pie"]));
    }
}

/// Threads a process starts while it is sampled are sampled too: six locked threads
/// started mid-capture burn in `lateBurn`, and their thread ids are among those seen.
#[test]
fn threads_started_during_sampling_are_seen() {
    let Some(_perf) = perf_lock() else { return };
    let mut burner = Burner::start(&go_burner("goburn", &[]), &[]);
    let before = threads_of(burner.pid());
    let target = PerfTarget::Pid(burner.pid());
    let sampling =
        std::thread::spawn(move || perf::sample(&target, &settings(2.0), &CancellationToken::new()));
    wait_for_own_perf_events();
    writeln!(burner.stdin, "late").unwrap();
    let late: Vec<u32> = (0..6).map(|_| burner.line().trim_start_matches("tid ").parse().unwrap()).collect();
    let recording = sampling.join().unwrap().unwrap();
    let new: Vec<&u32> = late.iter().filter(|tid| !before.contains(tid)).collect();
    assert!(!new.is_empty(), "no new thread: late {late:?}, before {before:?}");
    for tid in new {
        assert!(recording.threads().contains(tid), "thread {tid} not sampled: {:?}", recording.threads());
    }
    let mut bytes = Vec::new();
    Symbolizer::new().write_profile(recording, &mut bytes).unwrap();
    let profile = decode_profile(bytes.as_slice(), 1 << 30).unwrap();
    assert!(flat(&profile).get("main.lateBurn").is_some_and(|count| *count >= 3), "{:?}", flat(&profile));
}

fn threads_of(pid: u32) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// Waits until this process holds perf event descriptors, i.e. sampling has begun.
fn wait_for_own_perf_events() {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let fds = std::fs::read_dir("/proc/self/fd").unwrap();
        let perf = fds
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .any(|link| link.to_string_lossy().contains("perf_event"));
        if perf {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no perf event opened within 10 s");
}

/// CPU time of `pid` so far, in clock ticks (1/100 s), from `/proc/PID/stat`.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<u64> = after_name.split(' ').map(|field| field.parse().unwrap_or(0)).collect();
    fields[11] + fields[12]
}

/// A C program: as many samples as its CPU time at 99 Hz, ELF symbols name `burn_c`,
/// DWARF gives its file and lines, its caller `run` is on the stacks, the mapping carries
/// the GNU build id.
#[test]
fn c_process_by_pid() {
    let Some(_perf) = perf_lock() else { return };
    let binary = native_burner("gcc", "cburn.c");
    let burner = Burner::start(&binary, &[]);
    let ticks = cpu_ticks(burner.pid());
    let (bytes, profile, summary) = record(&PerfTarget::Pid(burner.pid()), &settings(1.0));
    let expected = (cpu_ticks(burner.pid()) - ticks) as f64 * 0.99;
    assert!(summary.samples >= 10, "{summary:?}");
    assert!(
        (summary.samples as f64 - expected).abs() <= expected * 0.2 + 3.0,
        "{summary:?}, expected {expected}"
    );
    assert_eq!(top(&profile), "burn_c", "{:?}", flat(&profile));
    let burn = profile.function.iter().find(|function| text(&profile, function.name) == "burn_c").unwrap();
    assert!(text(&profile, burn.filename).ends_with("tests/fixtures/perf/cburn.c"));
    let lines: Vec<i64> = profile
        .location
        .iter()
        .flat_map(|location| &location.line)
        .filter(|line| line.function_id == burn.id)
        .map(|line| line.line)
        .collect();
    assert!(lines.iter().all(|line| (18..=24).contains(line)), "burn_c's lines: {lines:?}");
    let stacks_through_run = profile.sample.iter().filter(|sample| {
        sample.location_id.iter().any(|id| location_lines(&profile, *id).contains(&"run".to_string()))
    });
    assert!(stacks_through_run.count() > 0, "no stack shows burn_c's caller");
    let mapping = profile
        .mapping
        .iter()
        .find(|mapping| text(&profile, mapping.filename) == binary.to_str().unwrap())
        .unwrap();
    assert_eq!(text(&profile, mapping.build_id).len(), 40, "a GNU build id in hex");
    assert_eq!(pprof_first_function(&pprof_top(&bytes)), "burn_c");
}

/// A C++ method comes out demangled, its mangled name kept as the system name.
#[test]
fn cpp_names_are_demangled() {
    let Some(_perf) = perf_lock() else { return };
    let burner = Burner::start(&native_burner("g++", "cppburn.cpp"), &[]);
    let (_, profile, _) = record(&PerfTarget::Pid(burner.pid()), &settings(1.0));
    assert_eq!(top(&profile), "burners::Spinner::spin(unsigned long)", "{:?}", flat(&profile));
    let spin = profile
        .function
        .iter()
        .find(|function| text(&profile, function.name).starts_with("burners::Spinner::spin"))
        .unwrap();
    assert_eq!(text(&profile, spin.system_name), "_ZN7burners7Spinner4spinEm");
}

/// The Rust burner built with frame pointers and DWARF, with `args` given to `rustc`.
fn rust_burner(name: &str, args: &[&str]) -> PathBuf {
    let out = build_dir().join(name);
    if !out.exists() {
        let status = Command::new("rustc")
            .args(["--edition=2021", "-C", "force-frame-pointers=yes", "-C", "opt-level=1", "-g"])
            .args(args)
            .arg("-o")
            .arg(&out)
            .arg(fixtures().join("rustburn.rs"))
            .status()
            .unwrap_or_else(|error| panic!("rustc runs: {error}"));
        assert!(status.success(), "rustc {args:?} failed");
    }
    out
}

/// Samples by function name, sorted by count, most first.
fn ranked(totals: &BTreeMap<String, i64>) -> Vec<(&str, i64)> {
    let mut ranked: Vec<(&str, i64)> = totals.iter().map(|(name, count)| (name.as_str(), *count)).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ranked
}

/// Samples by the function whose code the leaf is in (the outermost frame of the leaf
/// location), as `perf report` ranks symbols.
fn by_holder(profile: &Profile) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for sample in &profile.sample {
        let leaf = sample.location_id.first().map(|id| location_lines(profile, *id));
        let name = leaf.and_then(|lines| lines.last().cloned()).unwrap_or_else(|| "?".into());
        *totals.entry(name).or_default() += sample.value[0];
    }
    totals
}

/// The names of the Rust burner's functions as demangled from one mangling.
struct RustNames {
    spin: &'static str,
    checksum: &'static str,
    /// How the mangled names start.
    mangled: &'static str,
}

/// A Rust process: its two hot functions hold the most samples, in their shares of 3 to
/// 1, named demangled without their hashes, with their file from DWARF and the standard
/// library's calls inlined into them as lines of their own (the samples' leaves); `main`
/// is on nearly every stack, through the frame pointers.
fn rust_burner_profile(binary: &Path, names: RustNames) {
    let burner = Burner::start(binary, &[]);
    let (_, profile, summary) = record(&PerfTarget::Pid(burner.pid()), &settings(2.0));
    assert!(summary.samples >= 20, "{summary:?}");
    let totals = by_holder(&profile);
    let ranked = ranked(&totals);
    assert_eq!([ranked[0].0, ranked[1].0], [names.spin, names.checksum], "{ranked:?}");
    let share = ranked[0].1 as f64 / (ranked[0].1 + ranked[1].1) as f64;
    assert!((0.6..=0.9).contains(&share), "spin's share of the two is {share:.2}, not about 0.75");
    let spin = profile.function.iter().find(|function| text(&profile, function.name) == names.spin).unwrap();
    assert!(text(&profile, spin.system_name).starts_with(names.mangled));
    assert!(text(&profile, spin.filename).ends_with("tests/fixtures/perf/rustburn.rs"));
    let inlined = profile.location.iter().any(|location| {
        let lines = location_lines(&profile, location.id);
        lines.len() >= 2 && lines[0].contains("core::") && lines.last().unwrap() == names.spin
    });
    assert!(inlined, "no location with a call of the standard library inlined into spin");
    let mangled: Vec<&str> = profile
        .function
        .iter()
        .map(|function| text(&profile, function.name))
        .filter(|name| name.starts_with("_ZN") || name.starts_with("_R") || has_rust_hash(name))
        .collect();
    assert!(mangled.is_empty(), "mangled names or hashes are left: {mangled:?}");
    let through_main = profile.sample.iter().filter(|sample| {
        sample
            .location_id
            .iter()
            .any(|id| location_lines(&profile, *id).iter().any(|name| name == "rustburn::main"))
    });
    let through_main: i64 = through_main.map(|sample| sample.value[0]).sum();
    let all = samples(&profile);
    assert!(through_main * 10 >= all * 9, "{through_main} of {all} samples show main");
}

/// Whether `name` ends in the hash of a legacy mangled Rust name (`::h` and 16 hex digits).
fn has_rust_hash(name: &str) -> bool {
    name.rsplit_once("::h")
        .is_some_and(|(_, hash)| hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Rust's default (legacy) mangling: a generic function is named without its types.
#[test]
fn rust_process_by_pid() {
    let Some(_perf) = perf_lock() else { return };
    let names = RustNames {
        spin: "rustburn::burners::Spinner::spin",
        checksum: "rustburn::burners::checksum",
        mangled: "_ZN8rustburn",
    };
    rust_burner_profile(&rust_burner("rustburn", &[]), names);
}

/// The v0 mangling names a generic function with its types, and a method by its type.
#[test]
fn rust_v0_mangled_process_by_pid() {
    let Some(_perf) = perf_lock() else { return };
    let binary = rust_burner("rustburn-v0", &["-C", "symbol-mangling-version=v0"]);
    let names = RustNames {
        spin: "<rustburn::burners::Spinner>::spin",
        checksum: "rustburn::burners::checksum::<u32>",
        mangled: "_RNv",
    };
    rust_burner_profile(&binary, names);
}

/// Percent of `all` samples, by name.
fn shares(totals: &BTreeMap<String, i64>, all: i64) -> BTreeMap<String, f64> {
    totals.iter().map(|(name, count)| (name.clone(), *count as f64 * 100.0 / all.max(1) as f64)).collect()
}

fn samples(profile: &Profile) -> i64 {
    profile.sample.iter().map(|sample| sample.value[0]).sum()
}

/// Whether `perf` runs here; if not, says so (and fails with `CI=true`).
fn perf_tool() -> bool {
    let ran = Command::new("perf").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    let runs = ran.is_ok_and(|status| status.success());
    if !runs {
        unavailable(format_args!("`perf` does not run (apt-get install linux-perf)"));
    }
    runs
}

/// `perf script`'s samples of `data` by leaf function: the innermost frame in user space,
/// as alertprof takes no kernel frames.
fn perf_script_flat(data: &Path) -> BTreeMap<String, i64> {
    let output = Command::new("perf").args(["script", "-F", "ip,sym", "-i"]).arg(data).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut totals = BTreeMap::new();
    let text = String::from_utf8(output.stdout).unwrap();
    for sample in text.split("\n\n").filter(|sample| !sample.trim().is_empty()) {
        let frames = sample.lines().filter_map(|line| line.trim().split_once(' '));
        let user = frames
            .filter(|(ip, _)| u64::from_str_radix(ip, 16).is_ok_and(|ip| ip < 0xffff_8000_0000_0000))
            .map(|(_, symbol)| symbol.trim().to_string())
            .next();
        *totals.entry(user.unwrap_or_else(|| "?".into())).or_default() += 1;
    }
    totals
}

/// A C program of three functions, taking a half, a third and a sixth of its time, sampled
/// at 999 Hz by alertprof and by `perf record -e cpu-clock -g` at once: the same three
/// lead both, in the same order, each share within 5 points of perf's and within 8 of a
/// half, a third and a sixth.
#[test]
fn shares_agree_with_perf_record() {
    let Some(_perf) = perf_lock() else { return };
    if !perf_tool() {
        return;
    }
    let burner = Burner::start(&native_burner("gcc", "cshares.c"), &[]);
    let data = build_dir().join(format!("perf-{}.data", rand_suffix()));
    let perf_record = Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-F", "999", "-g", "-p", &burner.pid().to_string(), "-o"])
        .arg(&data)
        .args(["--", "sleep", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let settings = PerfSettings { frequency_hz: 999, ..settings(3.0) };
    let (_, profile, summary) = record(&PerfTarget::Pid(burner.pid()), &settings);
    let recorded = perf_record.wait_with_output().unwrap();
    assert!(recorded.status.success(), "perf record: {}", String::from_utf8_lossy(&recorded.stderr));
    let (ours, theirs) = (flat(&profile), perf_script_flat(&data));
    let top =
        |totals| ranked(totals).into_iter().take(3).map(|(name, _)| name.to_string()).collect::<Vec<_>>();
    let expected = [("burn_half", 50.0), ("burn_third", 33.3), ("burn_sixth", 16.7)];
    let names: Vec<String> = expected.iter().map(|(name, _)| name.to_string()).collect();
    assert_eq!((top(&ours), top(&theirs)), (names.clone(), names), "ours {ours:?}, perf's {theirs:?}");
    let (ours, theirs) = (shares(&ours, samples(&profile)), shares(&theirs, theirs.values().sum()));
    for (name, share) in expected {
        let (our, their) = (ours[name], theirs[name]);
        assert!((our - their).abs() <= 5.0, "{name}: {our:.1}% here, {their:.1}% by perf ({summary:?})");
        assert!((our - share).abs() <= 8.0, "{name}: {our:.1}%, not about {share}%");
    }
    std::fs::remove_file(&data).ok();
}

/// Samples by function on the stack, as pprof's `cum`: each sample counts once for every
/// function in it, inlined ones too.
fn cum(profile: &Profile) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for sample in &profile.sample {
        let names: std::collections::BTreeSet<String> =
            sample.location_id.iter().flat_map(|id| location_lines(profile, *id)).collect();
        for name in names {
            *totals.entry(name).or_default() += sample.value[0];
        }
    }
    totals
}

/// Whether `name` is on the stacks of only one of alertprof's and Go's own profile of a
/// Go program, by how each walks the stacks. alertprof's show the frame every goroutine
/// starts from, and the wrappers the compiler makes for a `go` statement with arguments
/// (`go burnForever(hotLoop)`), which Go's traceback elides. Go's put some of a tight
/// loop's samples under `runtime.asyncPreempt`, where it was stopped for preemption; the
/// loop is still its caller.
fn one_sided(name: &str) -> bool {
    name == "runtime.goexit" || name == "runtime.asyncPreempt" || name.starts_with("main.main.func")
}

/// The Go program sampled by alertprof at 999 Hz while Go's own CPU profiler records the
/// same seconds (at 250 Hz) as two goroutines burn, one in `hotLoop` (and `mix`, inlined),
/// one in `warmLoop`: every function on the stacks of at least a tenth of the burners'
/// samples in either profile (but those only one of them shows, see [`one_sided`]) has
/// the same share in the other within 5 points. `cum`, not `flat`: Go's profile puts some
/// of a tight loop's samples under `runtime.asyncPreempt`. Of the burners' samples, not
/// all: only alertprof sees the runtime's own threads and its handling of the profiler's
/// signals.
#[test]
fn go_shares_agree_with_go_cpu_profiler() {
    let Some(_perf) = perf_lock() else { return };
    let mut burner = Burner::start(&go_burner("goburn", &[]), &[]);
    writeln!(burner.stdin, "warm").unwrap();
    assert_eq!(burner.line(), "warm");
    let go_profile = build_dir().join(format!("go-{}.pprof", rand_suffix()));
    let (target, cancel) = (PerfTarget::Pid(burner.pid()), CancellationToken::new());
    let sampling = {
        let (cancel, settings) = (cancel.clone(), PerfSettings { frequency_hz: 999, ..settings(60.0) });
        std::thread::spawn(move || perf::sample(&target, &settings, &cancel))
    };
    wait_for_own_perf_events();
    writeln!(burner.stdin, "profile 6000 {}", go_profile.display()).unwrap();
    assert_eq!(burner.line(), "profiled");
    cancel.cancel();
    let mut bytes = Vec::new();
    Symbolizer::new().write_profile(sampling.join().unwrap().unwrap(), &mut bytes).unwrap();
    let go = decode_profile(std::fs::File::open(&go_profile).unwrap(), 1 << 30).unwrap();
    assert_eq!(text(&go, go.sample_type[0].r#type), "samples");
    let [ours, theirs] = [decode_profile(bytes.as_slice(), 1 << 30).unwrap(), go].map(|profile| {
        let cum = cum(&profile);
        let burning = cum.get("main.burnForever").copied().unwrap_or_default();
        assert!(burning * 10 >= samples(&profile) * 9, "the burners have under 90%: {cum:?}");
        shares(&cum, burning)
    });
    for name in ["main.hotLoop", "main.mix", "main.warmLoop"] {
        assert!(ours.get(name).is_some_and(|share| *share >= 10.0), "{name} is not hot: {ours:?}");
    }
    let compared = ours.iter().chain(&theirs).filter(|(name, share)| **share >= 10.0 && !one_sided(name));
    let compared = compared.map(|(name, _)| name);
    for name in compared.collect::<std::collections::BTreeSet<_>>() {
        let (our, their) = (ours.get(name).copied().unwrap_or(0.0), theirs.get(name).copied().unwrap_or(0.0));
        assert!((our - their).abs() <= 5.0, "{name}: {our:.1}% here, {their:.1}% by Go's profiler");
    }
}

/// A cgroup v2 made for the test, removed (after its process is killed) on drop.
struct TestCgroup(PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The cgroup2 mount: `/sys/fs/cgroup/unified` on a hybrid host, else `/sys/fs/cgroup`.
fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let line = mounts.lines().find(|line| line.split_whitespace().nth(2) == Some("cgroup2"))?;
    line.split_whitespace().nth(1).map(PathBuf::from)
}

/// A burner moved into a fresh cgroup v2 is found by the cgroup filter on every CPU: as
/// many samples as its CPU time, its function on top, its pid on its samples, and nothing
/// of a burner outside the cgroup.
#[test]
fn cgroup_is_sampled_on_every_cpu() {
    let Some(_perf) = perf_lock() else { return };
    let Some(root) = cgroup2_root() else {
        unavailable(format_args!("no cgroup2 mount on this host"));
        return;
    };
    let cgroup = TestCgroup(root.join(format!("alertprof-perf-test-{}", std::process::id())));
    std::fs::create_dir(&cgroup.0).expect("root can make a cgroup");
    let burner = Burner::start(&native_burner("gcc", "cburn.c"), &[]);
    std::fs::write(cgroup.0.join("cgroup.procs"), burner.pid().to_string()).unwrap();
    let outsider = Burner::start(&native_burner("g++", "cppburn.cpp"), &[]);
    let ticks = cpu_ticks(burner.pid());
    let (bytes, profile, summary) = record(&PerfTarget::Cgroup(cgroup.0.clone()), &settings(1.0));
    let expected = (cpu_ticks(burner.pid()) - ticks) as f64 * 0.99;
    assert!(summary.samples >= 10, "{summary:?}");
    assert!(
        (summary.samples as f64 - expected).abs() <= expected * 0.2 + 3.0,
        "{summary:?}, expected {expected}"
    );
    assert_eq!(summary.processes, 1, "{summary:?}");
    assert_eq!(top(&profile), "burn_c", "{:?}", flat(&profile));
    assert!(
        !flat(&profile).keys().any(|name| name.contains("Spinner")),
        "a process outside the cgroup was sampled"
    );
    let pid = profile.sample[0]
        .label
        .iter()
        .find(|label| text(&profile, label.key) == "pid")
        .map(|label| label.num);
    assert_eq!(pid, Some(i64::from(burner.pid())));
    assert_eq!(pprof_first_function(&pprof_top(&bytes)), "burn_c");
    drop((burner, outsider));
}

/// A pid that does not exist, a cgroup that does not exist and a directory that is no
/// cgroup are refused, saying which.
#[test]
fn missing_targets_are_refused() {
    let Some(_perf) = perf_lock() else { return };
    let cancel = CancellationToken::new();
    let missing = perf::record(&PerfTarget::Pid(999_999_999), &settings(1.0), &cancel, &mut Vec::new());
    assert!(matches!(missing, Err(PerfError::NoSuchProcess { pid: 999_999_999 })), "{missing:?}");
    let path = PathBuf::from("/sys/fs/cgroup/unified/alertprof-no-such-cgroup");
    let missing = perf::record(&PerfTarget::Cgroup(path.clone()), &settings(1.0), &cancel, &mut Vec::new());
    match missing {
        Err(error @ PerfError::NoSuchCgroup { .. }) => {
            assert!(error.to_string().contains(path.to_str().unwrap()))
        }
        other => panic!("{other:?}"),
    }
    let not_cgroup = tempfile::tempdir().unwrap();
    let target = PerfTarget::Cgroup(not_cgroup.path().into());
    let refused = perf::record(&target, &settings(1.0), &cancel, &mut Vec::new());
    assert!(matches!(refused, Err(PerfError::NotPerfCgroup { .. })), "{refused:?}");
}

/// A process that exits mid-capture leaves a partial profile that says so: sampling
/// stops at the exit, and the samples before it are kept with their names.
#[test]
fn process_exiting_mid_capture_gives_a_partial_profile() {
    let Some(_perf) = perf_lock() else { return };
    let burner = Burner::start(&native_burner("gcc", "cburn.c"), &["700"]);
    let (_, profile, summary) = record(&PerfTarget::Pid(burner.pid()), &settings(10.0));
    let exited = summary.exited_after.expect("the exit is noticed");
    assert!(exited < Duration::from_secs(3) && summary.duration < Duration::from_secs(4), "{summary:?}");
    assert!(summary.samples >= 10, "{summary:?}");
    assert_eq!(top(&profile), "burn_c");
    let comments: Vec<&str> = profile.comment.iter().map(|index| text(&profile, *index)).collect();
    assert!(comments.iter().any(|comment| comment.contains("exited")), "{comments:?}");
}

/// A binary deleted after it was mapped cannot be trusted to be the one running: its
/// frames stay addresses, the summary names it, and the capture succeeds.
#[test]
fn deleted_binary_is_reported_and_left_unsymbolized() {
    let Some(_perf) = perf_lock() else { return };
    let copy = build_dir().join("cburn-deleted");
    std::fs::copy(native_burner("gcc", "cburn.c"), &copy).unwrap();
    let burner = Burner::start(&copy, &[]);
    std::fs::remove_file(&copy).unwrap();
    let (_, profile, summary) = record(&PerfTarget::Pid(burner.pid()), &settings(1.0));
    let unreadable = summary.unreadable_binaries.iter().find(|binary| binary.path == copy).expect("reported");
    assert!(matches!(unreadable.error, BinaryError::Deleted), "{:?}", unreadable.error);
    assert!(summary.unsymbolized_locations > 0, "{summary:?}");
    let mapping = profile
        .mapping
        .iter()
        .find(|mapping| text(&profile, mapping.filename) == copy.to_str().unwrap())
        .unwrap();
    assert!(!mapping.has_functions);
    let in_binary: Vec<_> =
        profile.location.iter().filter(|location| location.mapping_id == mapping.id).collect();
    assert!(
        !in_binary.is_empty()
            && in_binary.iter().all(|location| location.line.is_empty() && location.address != 0)
    );
    let comments: Vec<&str> = profile.comment.iter().map(|index| text(&profile, *index)).collect();
    assert!(
        comments.iter().any(|comment| comment.contains("cburn-deleted left unsymbolized")),
        "{comments:?}"
    );
}

/// Cancelling ends sampling early; what was sampled is still a profile.
#[test]
fn cancelling_ends_sampling_early() {
    let Some(_perf) = perf_lock() else { return };
    let burner = Burner::start(&native_burner("gcc", "cburn.c"), &[]);
    let cancel = CancellationToken::new();
    let canceller = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            cancel.cancel();
        })
    };
    let recording = perf::sample(&PerfTarget::Pid(burner.pid()), &settings(30.0), &cancel).unwrap();
    canceller.join().unwrap();
    assert!(recording.samples() >= 10, "{}", recording.samples());
    let mut bytes = Vec::new();
    let summary = Symbolizer::new().write_profile(recording, &mut bytes).unwrap();
    assert!(summary.duration < Duration::from_secs(5), "{summary:?}");
}

/// A C binary stripped of its symbols names nothing: its frames stay addresses and the
/// summary says it has no symbols.
#[test]
fn stripped_c_binary_is_reported() {
    let Some(_perf) = perf_lock() else { return };
    let stripped = build_dir().join("cburn-stripped");
    std::fs::copy(native_burner("gcc", "cburn.c"), &stripped).unwrap();
    let status =
        Command::new("strip").arg(&stripped).status().expect("strip runs (apt-get install binutils)");
    assert!(status.success());
    let burner = Burner::start(&stripped, &[]);
    let (_, profile, summary) = record(&PerfTarget::Pid(burner.pid()), &settings(1.0));
    let reported =
        summary.unreadable_binaries.iter().find(|binary| binary.path == stripped).expect("reported");
    assert!(matches!(reported.error, BinaryError::NoSymbols), "{:?}", reported.error);
    assert!(!flat(&profile).contains_key("burn_c"));
}
