//! The `alertprof` binary as a user runs it: check-config, capture, serve with SIGTERM.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::{Demo, Serve};

fn alertprof(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_alertprof")).args(args).current_dir(dir).output().unwrap()
}

const BAD: &str = r#"
listen_adress: 127.0.0.1:9731
sample_interval: 5
storage:
  retention: {max_age: 7days, max_bytes: 1XB}
targets:
  - name: checkout
    pprof_url: "http://{{ labels.instance }}"
    process: {listen_port: 70000}
  - name: checkout
    pprof_url: not a url
rules:
  - name: cpu-spike
    alert_labels: {alertname: HighCPU}
    targets: [checkout, billing]
    verify:
      cpu_percent: {min: twenty}
    capture: [cpu, bogus]
    cooldown: soon
  - name: cpu-spike
    capture: []
"#;

/// check-config names every mistake with its place and exits 1.
#[test]
fn check_config_reports_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), BAD).unwrap();
    let output = alertprof(&["check-config", "bad.yaml"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let problems: Vec<&str> = stderr.lines().skip(1).map(str::trim).collect();
    let expected = [
        "listen_adress: unknown key \"listen_adress\"",
        "sample_interval: 5 needs a unit",
        "storage.retention.max_age: \"7days\" is not a duration",
        "storage.retention.max_bytes: \"1XB\" is not a size",
        "targets[0].process.listen_port: must be a whole number from 1 to 65535",
        "targets[0].allowed_targets: templated URLs need allowed_targets",
        "targets[1].name: duplicate target name \"checkout\"",
        "targets[1].pprof_url: \"not a url\" is not a URL",
        "rules[0].targets[1]: unknown target \"billing\"",
        "rules[0].verify.cpu_percent.min: must be a number",
        "rules[0].capture[1]: unknown kind \"bogus\"",
        "rules[0].cooldown: \"soon\" is not a duration",
        "rules[1].name: duplicate rule name \"cpu-spike\"",
        "rules[1].capture: must list at least one profile kind",
        "rules[1]: needs alert_labels (to handle alerts) or watch",
    ];
    assert_eq!(problems.len(), expected.len(), "{stderr}");
    for (problem, wanted) in problems.iter().zip(expected) {
        assert!(problem.starts_with(wanted), "{problem:?} should start with {wanted:?}");
    }
    assert!(stderr.starts_with(&format!("bad.yaml: {} problems\n", expected.len())), "{stderr}");

    // One problem is one; the file may be given as `serve` takes it.
    std::fs::write(dir.path().join("one.yaml"), "sample_interval: 5\n").unwrap();
    let output = alertprof(&["check-config", "--config", "one.yaml"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("one.yaml: 1 problem\n  sample_interval: 5 needs a unit"), "{stderr}");
    let output = alertprof(&["check-config"], dir.path());
    assert_eq!(output.status.code(), Some(2), "no file is a usage error");
}

/// The annotated example config is valid; YAML syntax errors and missing files are
/// reported, not panicked on.
#[test]
fn check_config_valid_syntax_and_missing() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let output = alertprof(&["check-config", "alertprof.yaml"], &examples);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("valid (1 target, 2 rules)"));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.yaml"), "targets: [\n  - {name: x\n").unwrap();
    let output = alertprof(&["check-config", "broken.yaml"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not valid YAML"));

    let output = alertprof(&["check-config", "absent.yaml"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read config absent.yaml"));

    let output = alertprof(&["--version"], dir.path());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("alertprof {}", env!("CARGO_PKG_VERSION"))
    );
    for command in ["serve", "check-config", "capture"] {
        assert!(alertprof(&[command, "--help"], dir.path()).status.success());
    }
}

/// `alertprof capture` fetches one validated profile into --out; a bad kind is refused.
#[test]
fn manual_capture() {
    let demo = Demo::start();
    let dir = tempfile::tempdir().unwrap();
    let url = demo.url();
    let output = alertprof(&["capture", &url, "--profile", "goroutine", "--out", "profiles"], dir.path());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let files = support::files_in(&dir.path().join("profiles"));
    assert_eq!(files.len(), 1);
    assert!(files[0].ends_with("-manual-goroutine.pb.gz"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(&files[0]) && stdout.contains("sha256"), "{stdout}");
    assert!(stdout.contains("top functions (goroutine/count):\n"), "{stdout}");
    assert!(
        stdout.contains(&format!("open it with: go tool pprof -http=: profiles/{}", files[0])),
        "{stdout}"
    );

    let output = alertprof(&["capture", &url, "--profile", "bogus"], dir.path());
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown kind \"bogus\""));

    let closed = support::closed_port();
    let down = closed.url();
    let output = alertprof(&["capture", &down, "--profile", "heap", "--out", "profiles"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot reach"));
    assert_eq!(support::files_in(&dir.path().join("profiles")).len(), 1, "a failure leaves nothing behind");
}

/// `serve` runs the whole service; SIGTERM during a CPU capture lets it finish, then the
/// process exits 0 with the profile stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_finishes_capture_on_sigterm() {
    let demo = Demo::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "storage: {{dir: data}}\ntargets: [{{name: demo, pprof_url: {:?}}}]\n\
         rules: [{{name: r, alert_labels: {{alertname: Spike}}, capture: [cpu], seconds: 2}}]\n",
        demo.url()
    );
    let serve = Serve::start(dir.path(), &config, None).await;
    assert_eq!(serve.post("f").await, 200);
    serve.wait_log("Capture started.", Duration::from_secs(10)).await;
    serve.signal("-TERM");
    let status = tokio::task::spawn_blocking(move || serve.wait()).await.unwrap();
    assert_eq!(status.code(), Some(0));
    let files = support::files_in(&dir.path().join("data/demo"));
    assert_eq!(files.len(), 2, "profile and metadata: {files:?}");
    assert!(files.iter().any(|f| f.ends_with("-r-cpu.pb.gz")));
}

/// SIGTERM while Grafana takes connections and never answers: the capture is kept, the
/// annotation is given up once the shutdown grace has passed, and the process exits 0
/// within the grace and a little, not after Grafana's timeouts and retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_grafana_outage() {
    let grafana = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grafana_url = format!("http://{}", grafana.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = grafana.accept().await {
            connections.push(connection);
        }
    });
    let demo = Demo::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("grafana-token"), "glsa_x\n").unwrap();
    let config = format!(
        "storage: {{dir: data}}\ncapture: {{shutdown_grace: 1s}}\n\
         grafana: {{url: \"{grafana_url}\", token_file: grafana-token, max_attempts: 20, retry_backoff: 5s}}\n\
         targets: [{{name: demo, pprof_url: {:?}}}]\n\
         rules: [{{name: r, alert_labels: {{alertname: Spike}}, capture: [heap]}}]\n",
        demo.url()
    );
    let serve = Serve::start(dir.path(), &config, None).await;
    assert_eq!(serve.post("f").await, 200);
    serve.wait_log("Profile stored.", Duration::from_secs(10)).await;
    let stopping = Instant::now();
    serve.signal("-TERM");
    let log = dir.path().join("alertprof.log");
    let status = tokio::task::spawn_blocking(move || serve.wait()).await.unwrap();
    let took = stopping.elapsed();
    let log = std::fs::read_to_string(log).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(took < Duration::from_secs(8), "took {took:?} to stop:\n{log}");
    assert!(log.contains("not annotated: alertprof is shutting down"), "{log}");
    assert_eq!(support::files_in(&dir.path().join("data/demo")).len(), 2, "the capture is kept");
    held.abort();
}

/// check-config refuses an empty file (one caught mid-write looks the same); `{}` is every
/// default.
#[test]
fn check_config_refuses_an_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.yaml"), "# to be written\n").unwrap();
    let output = alertprof(&["check-config", "empty.yaml"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("the file is empty; write {} for every default")
    );
    std::fs::write(dir.path().join("defaults.yaml"), "{}\n").unwrap();
    assert!(alertprof(&["check-config", "defaults.yaml"], dir.path()).status.success());
}

/// A SIGHUP while the service is still starting (rebuilding a large capture index) does
/// not end it: the reload it asks for happens once the service runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_while_starting() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("data/t");
    std::fs::create_dir_all(&target).unwrap();
    for n in 0..20_000 {
        let id = format!("20261121T100000.000Z-r-heap-{n}");
        let meta = serde_json::json!({"id": id, "target": "t", "rule": "r", "kind": "heap", "status": "failed",
            "trigger": {"source": "manual"}, "url": "http://t", "started_at": "2026-11-21T10:00:00Z",
            "finished_at": "2026-11-21T10:00:00Z", "bytes": 0});
        std::fs::write(target.join(format!("{id}.json")), meta.to_string()).unwrap();
    }
    std::fs::write(
        dir.path().join("alertprof.yaml"),
        "listen_address: 127.0.0.1:0\nstorage: {dir: data, retention: {}}\n",
    )
    .unwrap();
    let log = dir.path().join("alertprof.log");
    let child = Command::new(env!("CARGO_BIN_EXE_alertprof"))
        .args(["serve", "--config", "alertprof.yaml"])
        .current_dir(dir.path())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut child = support::Killed(child);
    let pid = child.0.id().to_string();
    // Past the program's loading, then a hangup at every look until it listens.
    std::thread::sleep(Duration::from_millis(200));
    let mut sent = 0;
    support::eventually("alertprof to listen", Duration::from_secs(60), async || {
        let log = std::fs::read_to_string(&log).unwrap();
        if log.contains("alertprof listening.") {
            return Some(());
        }
        assert!(child.0.try_wait().unwrap().is_none(), "alertprof ended: {log}");
        Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        sent += 1;
        None
    })
    .await;
    assert!(sent > 3, "the start was too quick to test: {sent} hangups");
    support::eventually("the reload", Duration::from_secs(10), async || {
        let log = std::fs::read_to_string(&log).unwrap();
        if log.contains("Config reloaded.") { Ok(()) } else { Err(log) }
    })
    .await;
    assert!(child.0.try_wait().unwrap().is_none(), "alertprof is running");
}

/// `alertprof capture` takes what users type: a base URL without `http://` (and says how
/// it took it), one that already ends in `/debug/pprof`; it warns of an empty block profile
/// the target never enabled, and says what a target without fgprof lacks.
#[test]
fn capture_helps_the_user() {
    let demo = Demo::start();
    let dir = tempfile::tempdir().unwrap();
    let bare = format!("{}/debug/pprof/", demo.addr);
    let output = alertprof(&["capture", &bare, "--profile", "heap", "--out", "p"], dir.path());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("taking {bare} as http://{bare}")), "{stderr}");
    assert_eq!(support::files_in(&dir.path().join("p")).len(), 1);

    let output = alertprof(&["capture", &demo.url(), "--profile", "block", "--out", "p"], dir.path());
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("warning: the block profile is empty: the target records none unless it calls runtime.SetBlockProfileRate"), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("(no samples)"));

    let output = alertprof(
        &["capture", &demo.url(), "--profile", "fgprof", "--seconds", "1", "--out", "p"],
        dir.path(),
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("answered 404") && stderr.contains("the target must serve fgprof at /debug/fgprof"),
        "{stderr}"
    );
    assert_eq!(support::files_in(&dir.path().join("p")).len(), 2, "nothing kept of the failure");

    let output = alertprof(&["capture", "ftp://example", "--profile", "heap"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("give an http:// or https:// URL"));
}

/// An error that names its cause is not followed by the cause again.
#[test]
fn errors_say_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data"), "a file where the storage directory should be").unwrap();
    std::fs::write(dir.path().join("alertprof.yaml"), "storage: {dir: data}\n").unwrap();
    let output = alertprof(&["serve", "--config", "alertprof.yaml"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap();
    assert_eq!(last, "alertprof: storage: cannot create data: File exists (os error 17)", "{stderr}");
}

/// A config or secret path that names something endless (`/dev/zero`) is refused after a
/// bounded read, by check-config and by a reload, which keeps the running config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reads_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let output = alertprof(&["check-config", "/dev/zero"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot read config /dev/zero: larger than 4 MiB"), "{stderr}");

    std::fs::write(dir.path().join("secret.yaml"), "auth: {bearer_token_file: /dev/zero}\n").unwrap();
    let output = alertprof(&["check-config", "secret.yaml"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("auth.bearer_token_file: /dev/zero is larger than 64 KiB"), "{stderr}");

    let serve = Serve::start(dir.path(), "storage: {dir: data}\n", None).await;
    let config = dir.path().join("alertprof.yaml");
    std::fs::remove_file(&config).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &config).unwrap();
    serve.signal("-HUP");
    let line = serve.wait_log("Config reload failed", Duration::from_secs(20)).await;
    assert!(line.contains("larger than 4 MiB"), "{line}");
    let ready = support::client().get(format!("{}/-/ready", serve.base)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

/// `alertprof capture --profile perf` samples a process of this host by pid, with no URL:
/// the Go demo target, burning, comes out with its own function names, and the sampling's
/// counts are said. A URL with perf, a pid without perf, and a pid that is gone are each
/// refused with what to do, and leave nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_perf_capture() {
    let demo = Demo::start();
    let dir = tempfile::tempdir().unwrap();
    demo.get("/burn?seconds=60&workers=1").await;
    let pid = demo.child.0.id().to_string();
    let output = alertprof(
        &["capture", "--profile", "perf", "--pid", &pid, "--seconds", "2", "--out", "p"],
        dir.path(),
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let files = support::files_in(&dir.path().join("p"));
    assert_eq!(files.len(), 1);
    assert!(files[0].ends_with("-manual-perf.pb.gz"), "{files:?}");
    assert!(stdout.contains("top functions (cpu/nanoseconds):"), "{stdout}");
    assert!(
        stdout.contains("main.spin") || stdout.contains("main.burnCPU"),
        "the burning function by name: {stdout}"
    );
    let perf = stdout.lines().find_map(|line| line.strip_prefix("perf: ")).expect("the sampling's counts");
    let samples: u64 = perf.split(' ').next().unwrap().parse().unwrap();
    assert!(samples > 0 && perf.contains("at 99 Hz") && perf.contains("lost"), "{perf}");
    let rows = support::pprof_top(&dir.path().join("p").join(&files[0]));
    assert!(
        rows.iter().any(|row| row.contains("main.")),
        "go tool pprof names the demo's functions: {rows:?}"
    );

    let url = demo.url();
    let refusals = [
        (vec!["capture", &url, "--profile", "perf"], "give --pid PID or --cgroup DIR, not a URL"),
        (vec!["capture", "--profile", "perf"], "give --pid PID or --cgroup DIR"),
        (
            vec!["capture", "--profile", "heap", "--pid", &pid],
            "--pid and --cgroup go with --profile perf only",
        ),
        (vec!["capture", "--profile", "heap"], "--profile heap needs the service's pprof base URL"),
        (
            vec!["capture", "--profile", "perf", "--pid", "4000000", "--seconds", "1", "--out", "p"],
            "process 4000000 does not exist",
        ),
        (
            vec![
                "capture",
                "--profile",
                "perf",
                "--cgroup",
                "/sys/fs/cgroup/no-such-group",
                "--seconds",
                "1",
                "--out",
                "p",
            ],
            "no-such-group",
        ),
    ];
    for (args, says) in refusals {
        let output = alertprof(&args, dir.path());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?} should say {says:?}: {stderr}");
    }
    assert_eq!(support::files_in(&dir.path().join("p")).len(), 1, "a refusal leaves nothing behind");
}
