//! The shared bucket's housekeeping at fleet size, against moto's S3 server: how long one
//! refresh of the capture index takes with 10,000 captures and 10,000 claims in the
//! bucket, and one pruning of the claims. Needs moto (`MOTO_SERVER`, or what tests/run.sh
//! installs). `cargo bench --bench bucket`.

#[path = "../tests/support/child.rs"]
mod child;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alertprof::bucket::Bucket;
use alertprof::config::Config;
use alertprof::gate::Claims;
use alertprof::store::ProfileStore;
use bytes::Bytes;
use child::Killed;
use chrono::Utc;

const CAPTURES: usize = 10_000;
const DEDUPE_CLAIMS: usize = 10_000;
const COOLDOWN_CLAIMS: usize = 200;
/// Metadata that cannot be read (another version's, a part): skipped at every refresh.
const UNREADABLE: usize = 100;

fn moto_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
    home.join(".cache/alertprof/moto/bin/moto_server")
}

fn start_moto() -> (Killed, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(moto_binary())
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server runs (tests/run.sh installs it)");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    (Killed(child), url)
}

/// Runs `put(i)` for `0..count` on 8 threads.
fn fill(count: usize, put: impl Fn(usize) + Sync) {
    std::thread::scope(|scope| {
        for lane in 0..8 {
            let put = &put;
            scope.spawn(move || (lane..count).step_by(8).for_each(put));
        }
    });
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    alertprof::init();
    let (_moto, url) = start_moto();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let answer = alertprof::http::client().put(format!("{url}/profiles")).send().await.unwrap();
        assert!(answer.status().is_success(), "{answer:?}");
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key-id"), "testing\n").unwrap();
    std::fs::write(dir.path().join("secret"), "testing\n").unwrap();
    let text = format!(
        "storage:\n  dir: data\n  retention: {{}}\n  object_store: {{url: s3://profiles/fleet, endpoint: \"{url}\", \
         region: us-east-1, access_key_id_file: key-id, secret_access_key_file: secret}}\n"
    );
    let config = Config::parse(&text, dir.path()).unwrap();
    let bucket = Arc::new(Bucket::open(config.storage.object_store.as_ref().unwrap()).unwrap());

    let started = Instant::now();
    let now = Utc::now();
    fill(CAPTURES, |i| {
        let target = format!("t{}", i % 10);
        let id = format!("{}-r-heap-{i:05}", now.format("%Y%m%dT%H%M%S%.3fZ"));
        let meta = serde_json::json!({"id": id, "target": target, "rule": "r", "kind": "heap", "status": "ok",
            "trigger": {"source": "manual"}, "url": "http://t", "started_at": now, "finished_at": now,
            "bytes": 4, "file": format!("{id}.pb.gz")});
        bucket.put(&format!("{target}/{id}.pb.gz"), Bytes::from_static(b"gzip")).unwrap();
        bucket.put(&format!("{target}/{id}.json"), Bytes::from(meta.to_string())).unwrap();
    });
    let claim = serde_json::json!({"holder": "other pid 1", "at": now, "until": now + chrono::Duration::hours(1), "done": true});
    fill(DEDUPE_CLAIMS, |i| {
        bucket.put(&format!(".claims/dedupe/{i:032x}.json"), Bytes::from(claim.to_string())).unwrap();
    });
    fill(COOLDOWN_CLAIMS, |i| {
        bucket.put(&format!(".claims/cooldown/r/t{i}.json"), Bytes::from(claim.to_string())).unwrap();
    });
    fill(UNREADABLE, |i| {
        let id = format!("{}-r-heap-x{i:04}", now.format("%Y%m%dT%H%M%S%.3fZ"));
        bucket.put(&format!("t0/{id}.json"), Bytes::from_static(b"{not json")).unwrap();
    });
    eprintln!("bucket filled in {:.0} s", started.elapsed().as_secs_f64());

    let started = Instant::now();
    let store = ProfileStore::open(&config.storage, Some(bucket.clone())).unwrap();
    let first = started.elapsed();
    assert_eq!(store.list(&Default::default()).len(), CAPTURES);
    let refreshes: Vec<Duration> = (0..5)
        .map(|_| {
            let started = Instant::now();
            store.refresh().unwrap();
            started.elapsed()
        })
        .collect();
    let claims = Claims::new(bucket.clone(), "bench".into(), Duration::from_secs(7 * 86400));
    let prunes: Vec<Duration> = (0..4)
        .map(|_| {
            let started = Instant::now();
            assert_eq!(claims.prune(Utc::now()).unwrap(), 0, "nothing is over");
            started.elapsed()
        })
        .collect();
    let first_prune = prunes[0];
    println!("| what | figure |\n|---|---|");
    println!("| first listing: {CAPTURES} captures read | {:.2} s |", first.as_secs_f64());
    println!(
        "| refresh, nothing new ({CAPTURES} captures, {} claims, {UNREADABLE} unreadable), median of 5 | {:.0} ms |",
        DEDUPE_CLAIMS + COOLDOWN_CLAIMS,
        median(refreshes).as_secs_f64() * 1000.0
    );
    println!(
        "| claim pruning, first, nothing over ({DEDUPE_CLAIMS} dedupe, {COOLDOWN_CLAIMS} cooldown) | {:.0} ms |",
        first_prune.as_secs_f64() * 1000.0
    );
    println!(
        "| claim pruning, the next three (every minute), median | {:.0} ms |",
        median(prunes[1..].to_vec()).as_secs_f64() * 1000.0
    );
}
