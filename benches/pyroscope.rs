//! What pushing to Pyroscope costs, through the library's queue and worker in this process
//! (a Pyroscope stand-in runs as a process of its own, so its CPU is not counted here):
//! - `push_cost`: what a kept capture's step pays more with a `pyroscope` section (its
//!   staged profile held by a hard link, then queued: another link and a small JSON entry,
//!   fsynced), wall and CPU per capture; and the worker's CPU per push (read back, encoded,
//!   posted), which runs off the capture's path;
//! - `queue_down`: an hour of a busy recorder's segments queued while Pyroscope is down,
//!   time-compressed: what the queue keeps, its bytes on disk, this process's memory, and
//!   what taking the queue up after a restart costs.
//!
//! Run `cargo bench --bench pyroscope [push_cost] [queue_down]`; it prints a Markdown table
//! that BENCHMARKS.md records. It needs python3 (the stand-in).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use alertprof::config::PyroscopeConfig;
use alertprof::pyroscope::{
    Backoff, ProfileType, PushItem, PushMetrics, PushQueue, PushResult, PushSource, PushWorker,
    PyroscopeClient, QueueLimits,
};
use tokio_util::sync::CancellationToken;

#[path = "common/mod.rs"]
mod common;
use common::*;

/// Answers every POST with an empty 200, as Pyroscope answers a push it took.
const STAND_IN: &str = r#"
import http.server
class Push(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/proto")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Push)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given and nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

/// A directory on the disk the store would use (not a tmpfs), removed on drop.
fn disk_dir() -> tempfile::TempDir {
    let base = root().join("target/bench-pyroscope");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

/// Bytes that stand for a gzip'd profile: gzip's output does not compress, nor do these.
fn body(bytes: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..bytes)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

fn item(name: String, kind: ProfileType, file: PathBuf, captured: bool) -> PushItem {
    PushItem {
        source: if captured { PushSource::Capture(name) } else { PushSource::Recorded(name) },
        profile_type: kind,
        service_name: "checkout".into(),
        alertname: captured.then(|| "HighCPU".into()),
        rule: captured.then(|| "cpu-spike".into()),
        instance: Some("10.0.0.7:6060".into()),
        labels: Vec::new(),
        file,
        expires_at: chrono::Utc::now() + chrono::Duration::days(7),
    }
}

fn config(url: &str) -> PyroscopeConfig {
    PyroscopeConfig { url: url.parse().unwrap(), tenant: None, auth: None, ui_url: None, recorder: false }
}

/// `n` captures of a 40 KiB heap profile: each staged, held, moved into the store as the
/// store does, queued, and its hold let go; then pushed.
async fn push_cost() {
    let n = 500;
    let dir = disk_dir();
    let (staging, store) = (dir.path().join("staging"), dir.path().join("store"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::create_dir_all(&store).unwrap();
    let metrics = PushMetrics::default();
    let queue =
        PushQueue::open(&dir.path().join(".pyroscope"), QueueLimits::default(), metrics.clone()).unwrap();
    let (walls, cpus) = {
        let queue = queue.clone();
        let (staging, store) = (staging.clone(), store.clone());
        tokio::task::spawn_blocking(move || {
            let (mut walls, mut cpus) = (Vec::new(), Vec::new());
            for i in 0..n {
                let staged = staging.join(format!("{i}.part"));
                std::fs::write(&staged, body(40 << 10, i)).unwrap();
                let (wall, cpu) = (Instant::now(), thread_cpu());
                let held = queue.hold(&staged).unwrap();
                let (extra_wall, extra_cpu) = (wall.elapsed(), thread_cpu() - cpu);
                // The store's own move, not counted.
                let kept = store.join(format!("{i}.pb.gz"));
                std::fs::rename(&staged, &kept).unwrap();
                let (wall, cpu) = (Instant::now(), thread_cpu());
                let push = item(format!("capture-{i}"), ProfileType::Heap, held.path().to_path_buf(), true);
                queue.enqueue_blocking(&push).unwrap();
                drop(held);
                walls.push(extra_wall + wall.elapsed());
                cpus.push(extra_cpu + thread_cpu() - cpu);
            }
            (walls, cpus)
        })
        .await
        .unwrap()
    };
    let (mut walls, mut cpus) = (walls, cpus);
    walls.sort();
    cpus.sort();
    row(
        "a kept capture's step with `pyroscope` (hold + queue a 40 KiB profile, fsynced), 500 captures",
        format!(
            "wall median {}, p99 {}; CPU median {}, p99 {}",
            ms(percentile(&walls, 0.5)),
            ms(percentile(&walls, 0.99)),
            ms(percentile(&cpus, 0.5)),
            ms(percentile(&cpus, 0.99))
        ),
        "< 20 ms wall, < 2 ms CPU",
    );

    let mut stand_in = Command::new("python3");
    stand_in.args(["-c", STAND_IN]).stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = Killed(stand_in.spawn().expect("python3 runs"));
    let mut port = String::new();
    BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut port).unwrap();
    let url = format!("http://127.0.0.1:{}", port.trim());
    let me = std::process::id();
    let (cpu, wall) = (cpu_seconds(me), Instant::now());
    let cancel = CancellationToken::new();
    let worker = PushWorker::new(queue.clone(), PyroscopeClient::new(&config(&url)));
    let task = tokio::spawn(worker.run(cancel.clone()));
    while metrics.pushes(PushResult::Ok) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (cpu, wall) = (cpu_seconds(me) - cpu, wall.elapsed());
    cancel.cancel();
    task.await.unwrap();
    row(
        "the worker pushing them to a stand-in Pyroscope (read back, encode, POST), 500 pushes",
        format!(
            "{:.2} ms CPU a push (this process, sampled at {} Hz), {:.2} ms wall a push, one at a time",
            cpu * 1000.0 / n as f64,
            procfs::ticks_per_second(),
            wall.as_secs_f64() * 1000.0 / n as f64
        ),
        "< 2 ms CPU",
    );
}

/// One recorder's hour as a list of (kind, bytes) segments, in time order: `targets`
/// targets, each kind every `every` seconds with bodies of `bytes`.
fn hour(targets: usize, kinds: &[(ProfileType, u64, usize)]) -> Vec<(ProfileType, usize)> {
    let mut segments = Vec::new();
    for second in 0..3600 {
        for &(kind, every, bytes) in kinds {
            if second % every == 0 {
                segments.extend(std::iter::repeat_n((kind, bytes), targets));
            }
        }
    }
    segments
}

/// Queues `segments` as the recorder would with `pyroscope.recorder` while Pyroscope is
/// down (connections refused), four threads at once; each segment's tape file deleted once
/// queued, as the recorder's pruning does. Then the queue taken up again, as after a
/// restart.
async fn queue_down(what: &str, segments: Vec<(ProfileType, usize)>) {
    let dir = disk_dir();
    let tape = dir.path().join("tape");
    std::fs::create_dir_all(&tape).unwrap();
    let me = std::process::id();
    let metrics = PushMetrics::default();
    let queue_dir = dir.path().join(".pyroscope");
    let queue = PushQueue::open(&queue_dir, QueueLimits::default(), metrics.clone()).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let cancel = CancellationToken::new();
    let client = PyroscopeClient::new(&config(&format!("http://{closed}")));
    let worker = PushWorker::new(queue.clone(), client).with_backoff(Backoff::default());
    let task = tokio::spawn(worker.run(cancel.clone()));
    let (rss_before, _) = memory_kib(me);
    let (count, started, cpu) = (segments.len(), Instant::now(), cpu_seconds(me));
    let bodies: Vec<Vec<u8>> = [1usize, 6, 15, 60].iter().map(|kib| body(kib << 10, *kib as u64)).collect();
    let bodies = std::sync::Arc::new(bodies);
    let segments = std::sync::Arc::new(segments);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (queue, tape, segments, bodies) =
                (queue.clone(), tape.clone(), segments.clone(), bodies.clone());
            tokio::task::spawn_blocking(move || {
                for (i, (kind, bytes)) in segments.iter().enumerate().skip(t).step_by(4) {
                    let file = tape.join(format!("{i}.pb.gz"));
                    let body = bodies.iter().find(|b| b.len() == bytes << 10).unwrap();
                    std::fs::write(&file, body).unwrap();
                    queue
                        .enqueue_blocking(&item(format!("recorder-{i}"), *kind, file.clone(), false))
                        .unwrap();
                    std::fs::remove_file(&file).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.await.unwrap();
    }
    let (elapsed, cpu) = (started.elapsed(), cpu_seconds(me) - cpu);
    let (rss_after, _) = memory_kib(me);
    let depth = queue.depth();
    let on_disk: u64 = std::fs::read_dir(&queue_dir)
        .unwrap()
        .map(|f| std::os::unix::fs::MetadataExt::blocks(&f.unwrap().metadata().unwrap()) * 512)
        .sum();
    cancel.cancel();
    task.await.unwrap();
    row(
        &format!("an hour of {what} with Pyroscope down: {count} segments queued"),
        format!(
            "kept the newest {} ({:.0} MiB counted, {:.0} MiB on disk), dropped {} oldest; {} failed tries; \
             RSS {:.1} → {:.1} MiB; queued in {:.0} s ({:.2} ms CPU a segment)",
            depth.entries,
            depth.bytes as f64 / 1048576.0,
            on_disk as f64 / 1048576.0,
            metrics.pushes(PushResult::DroppedFull),
            metrics.pushes(PushResult::Retry),
            rss_before as f64 / 1024.0,
            rss_after as f64 / 1024.0,
            elapsed.as_secs_f64(),
            cpu * 1000.0 / count as f64
        ),
        "bounded: ≤ 10,000 pushes and ≤ 512 MiB; memory flat",
    );
    drop(queue);
    let started = Instant::now();
    let reopened = PushQueue::open(&queue_dir, QueueLimits::default(), PushMetrics::default()).unwrap();
    row(
        &format!("taking that queue up after a restart ({what})"),
        format!("{} pushes in {}", reopened.depth().entries, ms(started.elapsed())),
        "< 1 s",
    );
    remove_all(dir.path());
}

fn remove_all(dir: &Path) {
    std::fs::remove_dir_all(dir).ok();
}

fn main() {
    alertprof::init();
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    if !["push_cost", "queue_down"].iter().any(|name| wanted(name)) {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        println!("| what | figure | goal |\n|---|---|---|");
        if wanted("push_cost") {
            push_cost().await;
        }
        if wanted("queue_down") {
            // The recorder's defaults on 50 targets, with the bodies a busy Go service gave
            // it (see "The recorder"): CPU 15 KiB every 10 s, heap 6 KiB and goroutine
            // 1 KiB every 15 s.
            let defaults =
                [(ProfileType::Cpu, 10, 15), (ProfileType::Heap, 15, 6), (ProfileType::Goroutine, 15, 1)];
            queue_down("50 targets recorded with the defaults", hour(50, &defaults)).await;
            // A bigger service: 60 KiB CPU segments every 10 s, on 50 targets.
            queue_down("50 targets' 60 KiB CPU segments", hour(50, &[(ProfileType::Cpu, 10, 60)])).await;
        }
    });
}
