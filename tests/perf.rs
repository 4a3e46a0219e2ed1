//! perf profiles of real processes: Go (plain, stripped, PIE), C and C++ burners sampled by
//! pid and by cgroup with the kernel's perf events, their profiles read back, checked by
//! the crate's validator and by `go tool pprof`. Needs root (or CAP_PERFMON); on a host
//! without perf events each test says so and passes without sampling.

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
/// own events to open sees only its own). None, saying why, where perf events are
/// unavailable; the test then passes without sampling.
fn perf_lock() -> Option<MutexGuard<'static, ()>> {
    static LOCK: Mutex<()> = Mutex::new(());
    match perf::check_access() {
        Ok(()) => Some(LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())),
        Err(error @ (PerfError::Permission { .. } | PerfError::Unsupported { .. })) => {
            eprintln!("SKIPPED: perf events are unavailable on this host: {error}");
            None
        }
        Err(error) => panic!("checking perf access failed: {error}"),
    }
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
        eprintln!("SKIPPED: no cgroup2 mount on this host");
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
