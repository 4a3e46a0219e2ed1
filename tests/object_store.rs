//! The object-storage backend against moto's S3 server (`pip install "moto[server]"`;
//! tests/run.sh installs it): two instances share one bucket, each lists and serves what
//! the other kept, retention deletes from the bucket, and a bucket that cannot be reached
//! fails captures with the reason while the service goes on serving.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Demo, Killed, Running, client, closed_port, payload};

/// moto's S3 server on a loopback port, killed on drop.
struct Moto {
    _child: Killed,
    url: String,
}

fn moto_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
    let installed = cache.join("alertprof/moto/bin/moto_server");
    if installed.exists() {
        return installed;
    }
    PathBuf::from("moto_server")
}

impl Moto {
    async fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(moto_binary())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server runs (tests/run.sh installs it: pip install \"moto[server]\")");
        let moto = Moto { _child: Killed(child), url: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(30);
        while client().get(&moto.url).send().await.is_err() {
            assert!(Instant::now() < deadline, "moto_server did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        moto
    }

    async fn create_bucket(&self, bucket: &str) {
        let answer = client().put(format!("{}/{bucket}", self.url)).send().await.unwrap();
        assert!(answer.status().is_success(), "{answer:?}");
    }

    /// Every key under `prefix`, as S3's ListObjectsV2 gives them.
    async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let url = format!("{}/{bucket}?list-type=2&prefix={prefix}", self.url);
        let text = client().get(url).send().await.unwrap().text().await.unwrap();
        text.split("<Key>")
            .skip(1)
            .filter_map(|part| part.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }
}

fn config(demo: &Demo, endpoint: &str, data: &Path, retention: &str) -> String {
    std::fs::write(data.join("key-id"), "testing\n").unwrap();
    std::fs::write(data.join("secret"), "testing\n").unwrap();
    format!(
        r#"
storage:
  dir: "{{data}}"
  retention: {retention}
  object_store: {{url: s3://profiles/fleet, endpoint: "{endpoint}", region: us-east-1,
                 access_key_id_file: key-id, secret_access_key_file: secret}}
targets:
  - {{name: demo, pprof_url: "{url}", alert_labels: {{job: demo}}}}
rules:
  - {{name: heap, alert_labels: {{alertname: HeapHigh}}, capture: [heap], cooldown: 0s}}
"#,
        url = demo.url()
    )
}

async fn alert(running: &Running, fingerprint: &str) -> Value {
    let body = payload(&[(json!({"alertname": "HeapHigh", "job": "demo"}), fingerprint)]);
    assert_eq!(running.post_alerts(&body).await.0, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let decisions = running.get_json("/api/v1/decisions").await;
        if let Some(decision) = decisions.as_array().unwrap().iter().find(|d| d["fingerprint"] == fingerprint)
        {
            return decision.clone();
        }
        assert!(Instant::now() < deadline, "no decision for {fingerprint}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ids(running: &Running) -> Vec<String> {
    let list = running.get_json("/api/v1/captures").await;
    list.as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()).collect()
}

async fn wait_ids(running: &Running, ok: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ids = ids(running).await;
        if ok(&ids) {
            return ids;
        }
        assert!(Instant::now() < deadline, "the listing never came to that: {ids:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Instance A captures; B, with its own local directory, lists the capture and serves its
/// profile and flame graph from the bucket. The bucket holds the local layout under the
/// prefix, and A's own directory holds no profile. A second capture puts the first over
/// A's retention: it is deleted from the bucket, and B's listing loses it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_bucket() {
    let moto = Moto::start().await;
    moto.create_bucket("profiles").await;
    let demo = Demo::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Running::start(&config(&demo, &moto.url, dir_a.path(), "{max_bytes: 1KiB}"), dir_a.path()).await;
    let b = Running::start(&config(&demo, &moto.url, dir_b.path(), "{max_age: 7d}"), dir_b.path()).await;

    let decision = alert(&a, "first").await;
    assert_eq!(decision["outcome"], "captured", "{decision}");
    let first = ids(&a).await.remove(0);
    let keys = moto.keys("profiles", "fleet/").await;
    for key in [format!("fleet/demo/{first}.pb.gz"), format!("fleet/demo/{first}.json")] {
        assert!(keys.contains(&key), "{key} in {keys:?}");
    }
    assert!(!dir_a.path().join("demo").exists(), "no profile kept locally");

    wait_ids(&b, |ids| ids.contains(&first)).await;
    let from_a = client().get(a.url(&format!("/api/v1/captures/{first}/profile"))).send().await.unwrap();
    let from_b = client().get(b.url(&format!("/api/v1/captures/{first}/profile"))).send().await.unwrap();
    assert_eq!(from_b.status(), 200);
    let (from_a, from_b) = (from_a.bytes().await.unwrap(), from_b.bytes().await.unwrap());
    assert!(!from_b.is_empty());
    assert_eq!(from_a, from_b, "B serves the bytes A kept");
    let flame =
        client().get(b.url(&format!("/api/v1/captures/{first}/flamegraph.svg"))).send().await.unwrap();
    assert_eq!(flame.status(), 200);
    assert!(flame.text().await.unwrap().starts_with("<?xml"));
    assert!(moto.keys("profiles", "fleet/").await.contains(&format!("fleet/demo/{first}.flamegraph.svg")));
    let page = b.get_text("/").await;
    assert!(page.contains(&first), "B's web page lists A's capture");

    assert_eq!(alert(&a, "second").await["outcome"], "captured");
    let keys = moto.keys("profiles", "fleet/").await;
    assert!(keys.iter().all(|key| !key.contains(&first)), "retention deleted the first: {keys:?}");
    let left = wait_ids(&b, |ids| !ids.contains(&first) && ids.len() == 1).await;
    assert_ne!(left[0], first);
    a.stop().await;
    b.stop().await;
}

/// A bucket that cannot be reached: alertprof starts, is ready, serves its API, and a
/// capture fails with a reason that says the object store could not be written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_bucket_fails_captures_and_serves() {
    let demo = Demo::start();
    let closed = closed_port();
    let data = tempfile::tempdir().unwrap();
    let running =
        Running::start(&config(&demo, &closed.url(), data.path(), "{max_age: 7d}"), data.path()).await;
    let ready = client().get(running.url("/-/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let started = Instant::now();
    let decision = alert(&running, "down").await;
    assert_eq!(decision["outcome"], "capture_failed", "{decision}");
    let reason = decision["reason"].as_str().unwrap();
    assert!(reason.contains("object store") && reason.contains("fleet/demo/"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(60), "failed within the bucket's retry bound");
    assert_eq!(running.get_json("/api/v1/captures").await, json!([]));
    running.stop().await;
}
