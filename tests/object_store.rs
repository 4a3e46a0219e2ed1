//! The object-storage backend and the claims of several instances against moto's S3
//! server (`pip install "moto[server]"`; tests/run.sh installs it): two instances share one
//! bucket, each lists and serves what the other kept, retention deletes from the bucket,
//! a bucket that cannot be reached fails captures with the reason while the service goes
//! on serving, and an alert (or a cooldown) is claimed by one instance only, with claims
//! of a dead holder expiring.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use std::sync::Arc;

use alertprof::bucket::Bucket;
use alertprof::config::ObjectStoreConfig;
use alertprof::gate::Claims;
use alertprof::gate::{CooldownKey, DedupeKey};
use alertprof::model::CaptureRole;
use alertprof::model::{Refusal, Secret};
use chrono::Utc;
use serde_json::{Value, json};
use support::moto::Moto;
use support::{Demo, Running, client, closed_port, payload};

/// A spike's cooldown key of `rule` on `target`.
fn spike<'a>(rule: &'a str, target: &'a str) -> CooldownKey<'a> {
    CooldownKey::new(rule, CaptureRole::Spike, std::borrow::Cow::Borrowed(target))
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
    alert_with(running, &body, fingerprint).await
}

/// Posts `body` and waits for the decision on the alert with `fingerprint`.
async fn alert_with(running: &Running, body: &Value, fingerprint: &str) -> Value {
    assert_eq!(running.post_alerts(body).await.0, 200);
    support::eventually(&format!("a decision on {fingerprint}"), Duration::from_secs(30), async || {
        let decisions = running.get_json("/api/v1/decisions").await;
        decisions.as_array().unwrap().iter().find(|d| d["fingerprint"] == fingerprint).cloned()
    })
    .await
}

async fn ids(running: &Running) -> Vec<String> {
    let list = running.get_json("/api/v1/captures").await;
    list.as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()).collect()
}

async fn wait_ids(running: &Running, ok: impl Fn(&[String]) -> bool) -> Vec<String> {
    support::eventually("the listing", Duration::from_secs(30), async || {
        let ids = ids(running).await;
        if ok(&ids) { Ok(ids) } else { Err(format!("{ids:?}")) }
    })
    .await
}

/// Instance A captures; B, with its own local directory, serves its profile at once (an id
/// it does not know yet makes it list the bucket), lists the capture and serves its flame
/// graph from the bucket. The bucket holds the local layout under the
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

    // Asked for it at once (the link in A's annotation may reach B), B finds it in the
    // bucket before its next listing.
    let from_a = client().get(a.url(&format!("/api/v1/captures/{first}/profile"))).send().await.unwrap();
    let from_b = client().get(b.url(&format!("/api/v1/captures/{first}/profile"))).send().await.unwrap();
    assert_eq!(from_b.status(), 200);
    let (from_a, from_b) = (from_a.bytes().await.unwrap(), from_b.bytes().await.unwrap());
    assert!(!from_b.is_empty());
    assert_eq!(from_a, from_b, "B serves the bytes A kept");
    wait_ids(&b, |ids| ids.contains(&first)).await;
    let flame =
        client().get(b.url(&format!("/api/v1/captures/{first}/flamegraph.svg"))).send().await.unwrap();
    assert_eq!(flame.status(), 200);
    assert!(flame.text().await.unwrap().starts_with("<?xml"));
    assert!(moto.keys("profiles", "fleet/").await.contains(&format!("fleet/demo/{first}.flamegraph.svg")));
    let page = b.get_text("/").await;
    assert!(page.contains(&first), "B's web page lists A's capture");
    assert!(!page.contains("store-trouble"));
    assert_eq!(b.metric("alertprof_store_up").await, 1.0);

    assert_eq!(alert(&a, "second").await["outcome"], "captured");
    let keys = moto.keys("profiles", "fleet/").await;
    assert!(keys.iter().all(|key| !key.contains(&first)), "retention deleted the first: {keys:?}");
    let left = wait_ids(&b, |ids| !ids.contains(&first) && ids.len() == 1).await;
    assert_ne!(left[0], first);
    a.stop().await;
    b.stop().await;
}

/// A bucket that cannot be reached: alertprof starts, is ready, serves its API, and a
/// capture fails, before any request to the target, with a reason that says the bucket
/// could not be written; `/metrics` and the web page say the store is down.
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
    assert!(
        reason.starts_with("cannot claim the alert in the shared bucket, so nothing was requested: "),
        "{reason}"
    );
    assert!(reason.contains("Connection refused"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(60), "failed within the bucket's retry bound");
    assert_eq!(running.get_json("/api/v1/captures").await, json!([]));
    running.wait_metric("alertprof_store_up", Duration::from_secs(15), |up| up == 0.0).await;
    let page = running.get_text("/").await;
    assert!(page.contains("id=\"store-trouble\"") && page.contains("Connection refused"), "{page}");
    running.stop().await;
}

/// Two instances get the same alert at once, as HA Alertmanagers (or HA Prometheus pairs,
/// whose copies differ only in `replica`) deliver it: one captures, the other records a
/// duplicate naming the instance that claimed it. Then the rule's cooldown, started by one
/// instance, holds on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_capture_an_alert_once() {
    let moto = Moto::start().await;
    moto.create_bucket("profiles").await;
    let demo = Demo::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let extra = "  - {name: cool, alert_labels: {alertname: CoolHigh}, capture: [goroutine], cooldown: 1h}\n\
                 gate: {dedupe_ignore_labels: [replica]}\n";
    let config = |dir: &Path| config(&demo, &moto.url, dir, "{max_age: 7d}") + extra;
    let a = Running::start(&config(dir_a.path()), dir_a.path()).await;
    let b = Running::start(&config(dir_b.path()), dir_b.path()).await;

    let copy = |replica: &str, fingerprint: &str| {
        payload(&[(json!({"alertname": "HeapHigh", "job": "demo", "replica": replica}), fingerprint)])
    };
    let (copy_a, copy_b) = (copy("a", "f-a"), copy("b", "f-b"));
    let (to_a, to_b) = tokio::join!(a.post_alerts(&copy_a), b.post_alerts(&copy_b));
    assert_eq!((to_a.0, to_b.0), (200, 200));
    let (one, other) = (
        a.wait_decisions(1, Duration::from_secs(30)).await.remove(0),
        b.wait_decisions(1, Duration::from_secs(30)).await.remove(0),
    );
    let mut outcomes = [one["outcome"].as_str().unwrap(), other["outcome"].as_str().unwrap()];
    outcomes.sort();
    assert_eq!(outcomes, ["captured", "duplicate"], "{one}\n{other}");
    let loser = if one["outcome"] == "duplicate" { &one } else { &other };
    let reason = loser["reason"].as_str().unwrap();
    assert!(reason.starts_with("another instance (") && reason.contains(" pid "), "{reason}");
    let heaps = moto.keys("profiles", "fleet/demo/").await;
    assert_eq!(
        heaps
            .iter()
            .filter(|key| key.ends_with("-heap.pb.gz") || key.contains("-heap-"))
            .filter(|key| key.ends_with(".pb.gz"))
            .count(),
        1,
        "{heaps:?}"
    );

    // Fingerprints are made from the labels here (replica aside): the alerts differ in one.
    let cool = |n: &str| payload(&[(json!({"alertname": "CoolHigh", "job": "demo", "n": n}), n)]);
    let cool_decision = |running: &'static str, decisions: Vec<Value>| {
        decisions
            .into_iter()
            .find(|d| d["alertname"] == "CoolHigh")
            .unwrap_or_else(|| panic!("{running}: no decision"))
    };
    assert_eq!(a.post_alerts(&cool("1")).await.0, 200);
    let captured = cool_decision("a", a.wait_decisions(2, Duration::from_secs(30)).await);
    assert_eq!(captured["outcome"], "captured", "{captured}");
    assert_eq!(b.post_alerts(&cool("2")).await.0, 200);
    let refused = cool_decision("b", b.wait_decisions(2, Duration::from_secs(30)).await);
    assert_eq!(refused["outcome"], "cooldown", "{refused}");
    let reason = refused["reason"].as_str().unwrap();
    assert!(reason.starts_with("in cooldown until ") && reason.contains("another instance ("), "{reason}");
    a.stop().await;
    b.stop().await;
}

/// Claims on the bucket itself: a dedupe claim holds while its capture may run and names
/// its holder; once that time is over with no capture done (the holder died), another
/// instance takes it over on its ETag; once done, it holds for `dedupe_ttl`. A cooldown
/// claimed by one holds for the other until it ends, and is then taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holders_claim_expires() {
    let moto = Moto::start().await;
    moto.create_bucket("claims").await;
    let config = ObjectStoreConfig {
        bucket: "claims".into(),
        prefix: "fleet".into(),
        endpoint: Some(moto.url.parse().unwrap()),
        region: Some("us-east-1".into()),
        access_key_id: Some(Secret::new("testing")),
        secret_access_key: Some(Secret::new("testing")),
    };
    let bucket = Arc::new(Bucket::open(&config).unwrap());
    let week = Duration::from_secs(7 * 86400);
    let (dead, alive) =
        (Claims::new(bucket.clone(), "dead".into(), week), Claims::new(bucket.clone(), "alive".into(), week));
    let (now, hold, none) = (Utc::now(), Duration::from_secs(30), Duration::ZERO);
    let later = |seconds| now + chrono::Duration::seconds(seconds);
    let claim = |claims: &Claims, at| {
        claims
            .claim(
                Some(&DedupeKey::new("fp", 1, "rule", "target", false)),
                &spike("rule", "target"),
                none,
                hold,
                at,
            )
            .unwrap()
    };

    assert!(claim(&dead, now).is_ok());
    match claim(&alive, later(10)) {
        Err(Refusal::DuplicateElsewhere { by, first_seen }) => {
            assert_eq!((by.as_str(), first_seen), ("dead", now))
        }
        other => panic!("{other:?}"),
    }
    let held = claim(&alive, later(31)).expect("the dead holder's claim expired");
    alive.done(&held, later(32));
    match claim(&dead, later(3600)) {
        Err(Refusal::DuplicateElsewhere { by, .. }) => assert_eq!(by, "alive"),
        other => panic!("{other:?}"),
    }
    assert!(claim(&dead, later(8 * 86400)).is_ok(), "past dedupe_ttl it may be captured again");

    let cooldown = |claims: &Claims, at| {
        claims.claim(None, &spike("rule", "target"), Duration::from_secs(300), hold, at).unwrap()
    };
    assert!(cooldown(&dead, now).is_ok());
    assert!(
        matches!(cooldown(&alive, later(60)), Err(Refusal::CooldownElsewhere { ref by, .. }) if by == "dead")
    );
    assert!(cooldown(&alive, later(301)).is_ok(), "the cooldown ended");
    assert!(
        matches!(cooldown(&dead, later(302)), Err(Refusal::CooldownElsewhere { ref by, .. }) if by == "alive")
    );
    let keys = moto.keys("claims", "fleet/.claims/").await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.contains(&"fleet/.claims/cooldown/rule/target.json".to_string()), "{keys:?}");

    // The instances of a templated target each have their own cooldown.
    let instance = |claims: &Claims, target: &str| {
        claims.claim(None, &spike("rule", target), Duration::from_secs(300), hold, now).unwrap()
    };
    for target in ["pods@10.0.0.5:6060", "pods@[fd00::1]:6060"] {
        assert!(instance(&dead, target).is_ok(), "{target}");
        assert!(matches!(instance(&alive, target), Err(Refusal::CooldownElsewhere { .. })), "{target}");
    }
    let keys = moto.keys("claims", "fleet/.claims/cooldown/rule/pods").await;
    assert_eq!(
        keys,
        [
            "fleet/.claims/cooldown/rule/pods@10.0.0.5:6060.json",
            "fleet/.claims/cooldown/rule/pods@fd00::1:6060.json"
        ]
    );
}

/// Claims taken for a capture that the local gate then refused are given back: another
/// instance may take them at once. Pruning deletes the cooldowns that ended and keeps those
/// that hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_given_back_are_free_again() {
    let moto = Moto::start().await;
    moto.create_bucket("claims").await;
    let config = ObjectStoreConfig {
        bucket: "claims".into(),
        prefix: "fleet".into(),
        endpoint: Some(moto.url.parse().unwrap()),
        region: Some("us-east-1".into()),
        access_key_id: Some(Secret::new("testing")),
        secret_access_key: Some(Secret::new("testing")),
    };
    let bucket = Arc::new(Bucket::open(&config).unwrap());
    let week = Duration::from_secs(7 * 86400);
    let (one, other) =
        (Claims::new(bucket.clone(), "one".into(), week), Claims::new(bucket.clone(), "other".into(), week));
    let (now, hold, cooldown) = (Utc::now(), Duration::from_secs(30), Duration::from_secs(300));
    let claim = |claims: &Claims, rule: &str| {
        let key = DedupeKey::new("fp", 1, rule, "t", false);
        tokio::task::block_in_place(|| {
            claims.claim(Some(&key), &spike(rule, "t"), cooldown, hold, now).unwrap()
        })
    };
    let held = claim(&one, "given-back").expect("free");
    assert!(matches!(claim(&other, "given-back"), Err(Refusal::DuplicateElsewhere { .. })));
    tokio::task::block_in_place(|| one.give_back(&held));
    assert!(claim(&other, "given-back").is_ok(), "given back: free for another instance");

    // Pruning: a cooldown that ended goes, one that holds stays.
    let short = tokio::task::block_in_place(|| {
        one.claim(
            None,
            &spike("short", "t"),
            Duration::from_secs(1),
            hold,
            now - chrono::Duration::seconds(10),
        )
        .unwrap()
    });
    assert!(short.is_ok());
    let pruned = tokio::task::block_in_place(|| one.prune(Utc::now()).unwrap());
    assert_eq!(pruned, 1);
    let keys = moto.keys("claims", "fleet/.claims/cooldown/").await;
    assert_eq!(keys, ["fleet/.claims/cooldown/given-back/t.json"]);
}

/// Metadata that cannot be read is skipped and said once, not read again at every refresh,
/// until it changes; then it is taken in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_metadata_is_read_again_only_once_it_changes() {
    support::logs();
    let moto = Moto::start().await;
    moto.create_bucket("skips").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key-id"), "testing\n").unwrap();
    std::fs::write(dir.path().join("secret"), "testing\n").unwrap();
    let text = format!(
        "storage:\n  dir: data\n  retention: {{}}\n  object_store: {{url: s3://skips/fleet, endpoint: \"{}\", \
         region: us-east-1, access_key_id_file: key-id, secret_access_key_file: secret}}\n",
        moto.url
    );
    let config = alertprof::config::Config::parse(&text, dir.path()).unwrap();
    let bucket = Arc::new(Bucket::open(config.storage.object_store.as_ref().unwrap()).unwrap());
    let id = format!("{}-r-heap-abcd", Utc::now().format("%Y%m%dT%H%M%S%.3fZ"));
    let id = id.as_str();
    tokio::task::block_in_place(|| {
        bucket.put(&format!("t/{id}.json"), bytes::Bytes::from_static(b"{not json"))
    })
    .unwrap();
    let store = tokio::task::block_in_place(|| {
        alertprof::store::ProfileStore::open(&config.storage, Some(bucket.clone())).unwrap()
    });
    for _ in 0..3 {
        tokio::task::block_in_place(|| store.refresh()).unwrap();
    }
    let said = |logs: &str| {
        logs.lines().filter(|l| l.contains("Unreadable capture metadata skipped.") && l.contains(id)).count()
    };
    assert_eq!(said(&support::logs()), 1, "{}", support::logs());

    let meta = json!({"id": id, "target": "t", "rule": "r", "kind": "heap", "status": "failed", "error": "x",
        "trigger": {"source": "manual"}, "url": "http://t", "started_at": Utc::now(), "finished_at": Utc::now(), "bytes": 0});
    tokio::task::block_in_place(|| bucket.put(&format!("t/{id}.json"), bytes::Bytes::from(meta.to_string())))
        .unwrap();
    let added = tokio::task::block_in_place(|| store.refresh()).unwrap();
    assert_eq!(added, 1, "changed, read again and taken in");
}
