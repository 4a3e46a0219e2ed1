//! What a `perf` capture costs and how fast it is stored, with the Go demo service built with
//! most of Go's standard library linked in (`benches/fixtures/stdlib.go`: 17 MB) as target:
//! - `perf_overhead`: the service's throughput under `wrk` without sampling, and while it is
//!   sampled at 99 Hz and at 999 Hz;
//! - `perf_symbolize`: naming the frames of a 10-s profile of it and writing the profile,
//!   with a fresh symbol cache and with a warm one;
//! - `perf_capture`: the release binary capturing it on alerts: alertprof's memory, and the
//!   time from the end of the window to the stored profile.
//!
//! Run `benches/run.sh perf_overhead perf_symbolize perf_capture`; it needs Go, wrk and the
//! right to open perf events (root, or CAP_PERFMON), and prints a Markdown table that
//! BENCHMARKS.md records.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alertprof::perf::{self, PerfRecording, PerfSettings, PerfTarget, Symbolizer};
use alertprof::profile::decode_profile;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[path = "common/mod.rs"]
mod common;
use common::*;

/// Runs `sample` on a thread of its own on CPU 0, beside `wrk` and away from the service,
/// and returns once its events are open; `cancel` ends it.
fn sample_on_cpu0(
    target: PerfTarget,
    settings: PerfSettings,
    cancel: &CancellationToken,
) -> std::thread::JoinHandle<PerfRecording> {
    let cancel = cancel.clone();
    let sampling = std::thread::spawn(move || {
        pin_to_cpu0();
        perf::sample(&target, &settings, &cancel).expect("sampling works")
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !holds_perf_events() {
        assert!(Instant::now() < deadline, "no perf event opened within 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    sampling
}

fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity on the
    // calling thread (0) touch only that set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set), 0);
    }
}

/// Whether this process holds perf event descriptors, i.e. sampling has begun.
fn holds_perf_events() -> bool {
    let fds = std::fs::read_dir("/proc/self/fd").unwrap();
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .any(|link| link.to_string_lossy().contains("perf_event"))
}

fn settings(frequency_hz: u32, seconds: u64) -> PerfSettings {
    PerfSettings { frequency_hz, duration: Duration::from_secs(seconds), ..PerfSettings::default() }
}

/// Requests a second `wrk` gets from `url` in 10 s, and requests a CPU-second of process
/// `pid` meanwhile.
fn throughput(url: &str, pid: u32) -> (f64, f64) {
    let (cpu, started) = (cpu_seconds(pid), Instant::now());
    let rps = wrk_rps(url, 10);
    let (cpu, wall) = (cpu_seconds(pid) - cpu, started.elapsed().as_secs_f64());
    (rps, rps * wall / cpu)
}

/// The service under `wrk` (CPU-bound requests of about 1 ms), in rounds of 10 s each
/// without sampling, sampled at 99 Hz and sampled at 999 Hz, in turn (the order rotated
/// each round, so a drift of the machine falls on all three alike). Its requests a second
/// move with whatever else runs on its CPU; its requests a CPU-second do not, and sampling
/// costs CPU in the sampled process's context, so they show the cost more surely.
fn overhead(demo_binary: &Path) {
    let demo = start_demo(demo_binary);
    let url = format!("{}/work?n=10", demo.base);
    wrk_rps(&url, 3); // warm up
    let frequencies = [0, 99, 999];
    let mut rounds: [Vec<(f64, f64)>; 3] = Default::default();
    let mut rates: [Vec<f64>; 3] = Default::default();
    for round in 0..5 {
        for turn in 0..3 {
            let which = (round + turn) % 3;
            if frequencies[which] == 0 {
                rounds[which].push(throughput(&url, demo.pid()));
                continue;
            }
            let cancel = CancellationToken::new();
            let settings = settings(frequencies[which], 60);
            let sampling = sample_on_cpu0(PerfTarget::Pid(demo.pid()), settings, &cancel);
            let started = Instant::now();
            rounds[which].push(throughput(&url, demo.pid()));
            cancel.cancel();
            let recording = sampling.join().unwrap();
            rates[which].push(recording.samples() as f64 / started.elapsed().as_secs_f64());
        }
    }
    for which in [1, 2] {
        let rate = median(rates[which].clone());
        overhead_row(frequencies[which], &rounds[0], &rounds[which], rate);
    }
}

/// One frequency's rounds against the rounds without sampling: the change of each round
/// against the one without of the same round (next to it in time), median and range.
fn overhead_row(frequency: u32, off: &[(f64, f64)], on: &[(f64, f64)], samples_a_second: f64) {
    let changes = |value: fn(&(f64, f64)) -> f64| {
        let mut changes: Vec<f64> =
            off.iter().zip(on).map(|(off, on)| (value(on) - value(off)) / value(off) * 100.0).collect();
        changes.sort_by(f64::total_cmp);
        let (low, high) = (changes[0], changes[changes.len() - 1]);
        format!("{:+.1}% ({low:+.1}…{high:+.1})", median(changes))
    };
    let (rps, per_cpu) = (changes(|round| round.0), changes(|round| round.1));
    row(
        &format!(
            "perf overhead: Go service (1 ms CPU requests, 1 P) sampled at {frequency} Hz against not, 5 rounds of 10 s each: median change (range)"
        ),
        format!(
            "requests a CPU-second {per_cpu}; requests/s {rps}; {samples_a_second:.0} samples/s, median {:.0} requests/s without",
            median(off.iter().map(|round| round.0).collect())
        ),
        if frequency == 99 { "≥ −1%" } else { "(10× the rate: the cost a sample)" },
    );
}

/// 10-s profiles of the service at 99 Hz under `wrk` (`/work` and `/metrics` in turn):
/// each round names the frames of one with a fresh symbol cache and of the next with the
/// cache the first left, and writes the gzip'd profile to memory.
fn symbolize(demo_binary: &Path) {
    let demo = start_demo(demo_binary);
    let load = Load::start(&demo, 140);
    let (mut first, mut cached) = (Vec::new(), Vec::new());
    let (mut samples, mut locations, mut bytes) = (0, 0, 0);
    for _ in 0..5 {
        let mut symbolizer = Symbolizer::new();
        for times in [&mut first, &mut cached] {
            let recording =
                sample_on_cpu0(PerfTarget::Pid(demo.pid()), settings(99, 10), &CancellationToken::new())
                    .join()
                    .unwrap();
            let mut out = Vec::new();
            let started = Instant::now();
            let summary = symbolizer.write_profile(recording, &mut out).unwrap();
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            let profile = decode_profile(out.as_slice(), 1 << 30).unwrap();
            (samples, locations, bytes) = (summary.samples, profile.location.len(), out.len());
        }
    }
    load.stop();
    row(
        &format!(
            "perf symbolize: a 10-s profile at 99 Hz of the {:.1} MB Go service under wrk ({samples} samples, {locations} locations, {} KiB gzip'd), median of 5",
            file_mb(demo_binary),
            bytes / 1024
        ),
        format!(
            "first {:.1} ms (max {:.1}); cached {:.1} ms (max {:.1})",
            median(first.clone()),
            max(&first),
            median(cached.clone()),
            max(&cached)
        ),
        "< 200 ms the first time",
    );
}

fn file_mb(path: &Path) -> f64 {
    std::fs::metadata(path).unwrap().len() as f64 / 1e6
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}

/// `wrk` on the service's `/work` and `/metrics` in turn, from CPU 0, for at most
/// `seconds` or until stopped.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Load {
    fn start(demo: &Proc, seconds: u64) -> Load {
        let urls = [format!("{}/work?n=10", demo.base), format!("{}/metrics", demo.base)];
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(seconds);
            while Instant::now() < deadline && !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                for url in &urls {
                    wrk_rps(url, 2);
                }
            }
        });
        Load { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap();
    }
}

/// What one stored capture took, from its metadata and from when it was first listed.
struct Stored {
    /// From the end of the window to the profile written. The end is taken as the
    /// capture's start plus its seconds, so this includes opening the events (a few ms).
    written_ms: f64,
    /// From the end of the window to the capture listed by `/api/v1/captures`.
    listed_ms: f64,
    samples: u64,
    /// alertprof's peak RSS so far, KiB.
    peak_kib: u64,
}

/// alertprof (release, on CPU 0) capturing `perf` for 10 s on each of 5 alerts, one after
/// another, of the service under `wrk`: its peak RSS against the one before the first
/// capture, and the time from each window's end to the stored profile.
async fn capture(demo_binary: &Path) {
    let demo = start_demo(demo_binary);
    let data = tempfile::tempdir().unwrap();
    let config = format!(
        "targets: [{{name: big, process: {{pid: {}}}, alert_labels: {{job: big}}}}]\n\
         rules:\n\
         - {{name: perf, alert_labels: {{alertname: PerfSpike}}, capture: [perf], seconds: 10, cooldown: 0s}}\n",
        demo.pid()
    );
    let alertprof = start_pinned(&config, data.path());
    let load = Load::start(&demo, 120);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, peak_before) = memory_kib(alertprof.pid());
    let mut stored = Vec::new();
    for n in 0..5 {
        stored.push(capture_one(&alertprof, n).await);
    }
    load.stop();
    let (rss_after, _) = memory_kib(alertprof.pid());
    let first = &stored[0];
    let later = &stored[1..];
    let later_median = |value: fn(&Stored) -> f64| median(later.iter().map(value).collect());
    row(
        &format!(
            "perf capture memory: alertprof's peak RSS over 5 captures of 10 s at 99 Hz of the {:.1} MB Go service (~{} samples each)",
            file_mb(demo_binary),
            first.samples
        ),
        format!(
            "{:.1} MiB before; +{:.1} MiB after the first (symbols read), +{:.1} MiB after the fifth; RSS {:.1} MiB then",
            peak_before as f64 / 1024.0,
            (first.peak_kib - peak_before) as f64 / 1024.0,
            (stored[4].peak_kib - peak_before) as f64 / 1024.0,
            rss_after as f64 / 1024.0
        ),
        "< 32 MiB more",
    );
    row(
        "perf capture: end of the window → profile written / capture listed as stored",
        format!(
            "first (symbols read) {:.0} / {:.0} ms; the next 4, median {:.0} / {:.0} ms (max {:.0})",
            first.written_ms,
            first.listed_ms,
            later_median(|s| s.written_ms),
            later_median(|s| s.listed_ms),
            later.iter().map(|s| s.listed_ms).fold(0.0, f64::max)
        ),
        "< 500 ms",
    );
}

/// Sends alert `n` and waits for its capture to be listed.
async fn capture_one(alertprof: &Proc, n: usize) -> Stored {
    let client = alertprof::http::client();
    let body = json!({
        "version": "4", "status": "firing", "receiver": "alertprof", "groupKey": "{}:{}",
        "alerts": [{"status": "firing", "labels": {"alertname": "PerfSpike", "job": "big"},
                    "startsAt": Utc::now().to_rfc3339(), "fingerprint": format!("perf{n}")}],
    });
    let answer = client.post(format!("{}/api/v1/alerts", alertprof.base)).json(&body).send().await.unwrap();
    assert!(answer.status().is_success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let (capture, listed) = loop {
        let url = format!("{}/api/v1/captures?kind=perf&limit=10", alertprof.base);
        let captures: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        let listed = Utc::now();
        if captures.as_array().unwrap().len() > n {
            break (captures[0].clone(), listed);
        }
        assert!(Instant::now() < deadline, "no capture for alert {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(capture["status"], "ok", "{capture}");
    let at = |field: &str| capture[field].as_str().unwrap().parse::<DateTime<Utc>>().unwrap();
    let window_end = at("started_at") + chrono::Duration::seconds(10);
    let ms = |to: DateTime<Utc>| (to - window_end).num_microseconds().unwrap() as f64 / 1000.0;
    Stored {
        written_ms: ms(at("finished_at")),
        listed_ms: ms(listed),
        samples: capture["perf"]["samples"].as_u64().unwrap_or_default(),
        peak_kib: memory_kib(alertprof.pid()).1,
    }
}

fn main() {
    alertprof::init();
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let known = ["perf_overhead", "perf_symbolize", "perf_capture"];
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    if !known.iter().any(|name| wanted(name)) {
        return;
    }
    if let Err(error) = perf::check_access() {
        eprintln!("perf benches skipped: {error}");
        return;
    }
    let build = tempfile::tempdir().unwrap();
    let demo: PathBuf = build_demo(build.path(), &[root().join("benches/fixtures/stdlib.go")]);
    println!("| what | figure | goal |\n|---|---|---|");
    if wanted("perf_overhead") {
        overhead(&demo);
    }
    if wanted("perf_symbolize") {
        symbolize(&demo);
    }
    if wanted("perf_capture") {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(capture(&demo));
    }
}
