//! The store over the local directory: the layout, the index rebuilt from a listing,
//! retention, renderings.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::*;
use crate::model::{Trigger, TriggerSource};

const STAGING: &str = ".tmp";

fn open(dir: &Path, max_age: Option<Duration>, max_bytes: Option<u64>) -> ProfileStore {
    ProfileStore::with_backend(Box::new(LocalBackend::open(dir).unwrap()), max_age, max_bytes)
}

fn staging(dir: &Path) -> Staging {
    Staging::open(&dir.join(STAGING)).unwrap()
}

/// Keeps a capture of `kind` from target `t` by rule `r` in `role` with `body`, kept or
/// failed, named for and finished at `finished_at`.
pub(crate) fn keep_capture(
    store: &ProfileStore,
    staging: &Staging,
    kind: ProfileKind,
    role: CaptureRole,
    body: Option<&[u8]>,
    finished_at: DateTime<Utc>,
) -> CaptureMeta {
    let id = store.new_id(finished_at, "r", role, kind);
    let staged = staging.file(id.as_str());
    let mut pending = crate::model::PendingCapture::new(
        id,
        "t",
        "r",
        kind,
        Trigger::local(TriggerSource::Manual, None),
        finished_at,
    );
    pending.role = role;
    pending.url = format!("http://t/debug/pprof/{kind}");
    let meta = match body {
        Some(body) => {
            fs::write(staged.path(), body).unwrap();
            pending.kept(body.len() as u64, "0".repeat(64))
        }
        None => {
            fs::write(staged.path(), b"partial").unwrap();
            pending.failed("boom")
        }
    };
    store.keep(meta, Some(staged))
}

fn keep(store: &ProfileStore, dir: &Path, finished_at: DateTime<Utc>, size: usize) -> CaptureMeta {
    keep_capture(
        store,
        &staging(dir),
        ProfileKind::Heap,
        CaptureRole::Spike,
        Some(&vec![7u8; size]),
        finished_at,
    )
}

fn ids(store: &ProfileStore) -> Vec<CaptureId> {
    store.list(&CaptureFilter::default()).into_iter().map(|m| m.id).collect()
}

/// Kept and failed captures land in the layout; ids never collide; the index is rebuilt
/// from disk, dropping what is incomplete.
#[test]
fn layout_and_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), None, None);
    let first = keep(&store, dir.path(), Utc::now(), 10);
    let second = keep(&store, dir.path(), Utc::now(), 20);
    assert_ne!(first.id, second.id);
    let failed =
        keep_capture(&store, &staging(dir.path()), ProfileKind::Heap, CaptureRole::Spike, None, Utc::now());
    assert!(fs::read_dir(dir.path().join(STAGING)).unwrap().next().is_none(), "the failed part is gone");

    let target = dir.path().join("t");
    assert!(target.join(format!("{}.pb.gz", first.id)).is_file());
    assert!(target.join(format!("{}.json", failed.id)).is_file());
    assert!(!target.join(format!("{}.pb.gz", failed.id)).exists());
    let listed = ids(&store);
    assert_eq!(listed.len(), 3);
    assert!(listed.windows(2).all(|w| w[0] > w[1]), "newest first: {listed:?}");

    // A crash left: a profile without metadata, metadata without its profile, a torn
    // temp file and a staged part.
    fs::write(target.join("20200101T000000.000Z-r-heap.pb.gz"), b"orphan").unwrap();
    fs::remove_file(target.join(format!("{}.pb.gz", second.id))).unwrap();
    fs::write(target.join(".x.json.tmp-1"), b"{").unwrap();
    fs::write(dir.path().join(STAGING).join("y.part"), b"half").unwrap();
    fs::write(target.join("garbage.json"), b"not json").unwrap();
    drop(store);
    let store = open(dir.path(), None, None);
    staging(dir.path());
    let mut listed = ids(&store);
    listed.sort();
    let mut expected = vec![first.id.clone(), failed.id];
    expected.sort();
    assert_eq!(listed, expected);
    assert!(!target.join("20200101T000000.000Z-r-heap.pb.gz").exists());
    assert!(!target.join(".x.json.tmp-1").exists());
    assert!(fs::read_dir(dir.path().join(STAGING)).unwrap().next().is_none());
    assert_eq!(store.open_profile(&first.id).unwrap().len, 10);
    let nope = CaptureId::parse("nope").unwrap();
    assert!(matches!(store.open_profile(&nope), Err(StoreError::NotFound(_))));
}

/// What a capture takes on disk: its profile and its metadata.
fn on_disk(dir: &Path, meta: &CaptureMeta) -> u64 {
    let file = |name: String| fs::metadata(dir.join("t").join(name)).map_or(0, |m| m.len());
    file(format!("{}.pb.gz", meta.id)) + file(format!("{}.json", meta.id))
}

/// Retention deletes by age and then by total size (profiles and metadata), oldest
/// first, keeping the newest.
#[test]
fn retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), None, None);
    let old = keep(&store, dir.path(), Utc::now() - chrono::Duration::hours(2), 10);
    let a = keep(&store, dir.path(), Utc::now(), 100);
    let b = keep(&store, dir.path(), Utc::now(), 100);
    let c = keep(&store, dir.path(), Utc::now(), 100);
    drop(store);
    // Room for b and c, not a as well.
    let room = on_disk(dir.path(), &b) + on_disk(dir.path(), &c) + 1;
    let store = open(dir.path(), Some(Duration::from_secs(3600)), Some(room));
    assert_eq!(store.enforce_retention().unwrap(), 2);
    assert_eq!(ids(&store), vec![c.id.clone(), b.id.clone()]);
    for gone in [&old, &a] {
        assert!(!dir.path().join("t").join(format!("{}.pb.gz", gone.id)).exists());
        assert!(!dir.path().join("t").join(format!("{}.json", gone.id)).exists());
    }
    // A single capture over the limit is still kept: it is the newest.
    let big = keep(&store, dir.path(), Utc::now(), 100_000);
    store.enforce_retention().unwrap();
    assert_eq!(ids(&store), vec![big.id]);
}

/// Metadata counts: captures of tiny profiles with many long labels fill `max_bytes` by
/// their metadata, and retention deletes the oldest of them.
#[test]
fn fat_metadata_counts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), None, Some(200_000));
    let labels: BTreeMap<String, String> = (0..64).map(|n| (format!("l{n}"), "v".repeat(1024))).collect();
    let labels = std::sync::Arc::new(labels);
    let mut kept = Vec::new();
    for _ in 0..10 {
        let id = store.new_id(Utc::now(), "r", CaptureRole::Spike, ProfileKind::Heap);
        let staged = staging(dir.path()).file(id.as_str());
        fs::write(staged.path(), b"tiny").unwrap();
        let mut trigger = Trigger::local(TriggerSource::Manual, None);
        trigger.labels = labels.clone();
        let pending = crate::model::PendingCapture::new(id, "t", "r", ProfileKind::Heap, trigger, Utc::now());
        kept.push(store.keep(pending.kept(4, "0".repeat(64)), Some(staged)));
    }
    let fat = on_disk(dir.path(), &kept[0]);
    assert!(fat > 60_000, "{fat} bytes");
    let deleted = store.enforce_retention().unwrap();
    assert_eq!(deleted, 10 - (200_000 / fat) as usize);
    let on_disk_now: u64 = store.list(&CaptureFilter::default()).iter().map(|m| on_disk(dir.path(), m)).sum();
    assert!(on_disk_now <= 200_000, "{on_disk_now}");
}

/// A rendering is kept next to its capture, survives a restart, and is deleted with the
/// capture by retention.
#[test]
fn derived_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), None, Some(150));
    let first = keep(&store, dir.path(), Utc::now(), 100);
    assert!(store.open_derived(&first.id, Derived::Flamegraph).unwrap().is_none());
    store.put_derived(&first.id, Derived::Flamegraph, b"<svg/>").unwrap();
    let path = dir.path().join("t").join(format!("{}.flamegraph.svg", first.id));
    assert_eq!(fs::read(&path).unwrap(), b"<svg/>");
    let nope = CaptureId::parse("nope").unwrap();
    assert!(matches!(store.put_derived(&nope, Derived::Flamegraph, b"x"), Err(StoreError::NotFound(_))));

    drop(store);
    let store = open(dir.path(), None, Some(150));
    assert_eq!(store.open_derived(&first.id, Derived::Flamegraph).unwrap().unwrap().len, 6);
    keep(&store, dir.path(), Utc::now(), 100);
    assert_eq!(store.enforce_retention().unwrap(), 1);
    assert!(!path.exists());
    assert!(matches!(store.open_derived(&first.id, Derived::Flamegraph), Err(StoreError::NotFound(_))));
}

/// Ids come from the clock the caller passes: two captures at one millisecond by one rule
/// get distinct ids, with no wait between them.
#[test]
fn ids_from_the_callers_clock() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), None, None);
    let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let one = store.new_id(at, "r", CaptureRole::Spike, ProfileKind::Cpu);
    let two = store.new_id(at, "r", CaptureRole::Spike, ProfileKind::Cpu);
    assert_eq!(one.as_str(), "20270115T080000.000Z-r-cpu");
    assert_eq!(two.as_str(), "20270115T080000.000Z-r-cpu-2");
}
