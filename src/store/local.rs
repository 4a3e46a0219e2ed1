//! The local directory store: `<dir>/<target>/<id>.<ext>` and `<id>.json`, every write a
//! temp file or staged body, fsync and rename; metadata written last and deleted last.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;

use super::index::{Index, Indexed};
use super::{CaptureFilter, Derived, ProfileStore, StagedFile, StoreError, StoredFile};
use crate::config::StorageConfig;
use crate::durable::{move_into_place, remove_if_present, sync_dir, write_atomic};
use crate::model::{CaptureMeta, ProfileKind, capture_id, is_valid_id};

pub struct LocalStore {
    dir: PathBuf,
    max_age: Option<Duration>,
    max_bytes: Option<u64>,
    /// Every capture on disk.
    index: Index,
}

impl LocalStore {
    /// Opens (creating) the store, checks it can be written, deletes profiles whose
    /// metadata was never written, and rebuilds the index from disk.
    pub fn open(config: &StorageConfig) -> Result<LocalStore, StoreError> {
        let dir = config.dir.clone();
        fs::create_dir_all(&dir).map_err(StoreError::io("create", &dir))?;
        // A full disk must not keep alertprof from starting and serving what it has; the
        // captures it cannot keep fail with the reason.
        let probe = dir.join(format!(".probe-{}", std::process::id()));
        match fs::write(&probe, b"x") {
            Ok(()) => drop(fs::remove_file(&probe)),
            Err(error) => {
                fs::remove_file(&probe).ok();
                tracing::error!(dir = %dir.display(), error = %error, "Storage cannot be written; captures will fail until it can.");
            }
        }
        let index = rebuild_index(&dir)?;
        tracing::info!(dir = %dir.display(), captures = index.len(), "Capture index rebuilt.");
        Ok(LocalStore { dir, max_age: config.max_age, max_bytes: config.max_bytes, index: Index::new(index) })
    }

    fn profile_path(&self, meta: &CaptureMeta) -> Option<PathBuf> {
        meta.file.as_ref().map(|file| self.dir.join(&meta.target).join(file))
    }

    fn meta_path(&self, meta: &CaptureMeta) -> PathBuf {
        self.dir.join(&meta.target).join(format!("{}.json", meta.id))
    }

    fn derived_path(&self, meta: &CaptureMeta, derived: Derived) -> PathBuf {
        self.dir.join(&meta.target).join(format!("{}.{}", meta.id, derived.suffix()))
    }

    fn delete(&self, meta: &CaptureMeta) -> Result<(), StoreError> {
        let remove = |path: &Path| remove_if_present(path).map_err(StoreError::io("delete", path));
        for derived in Derived::ALL {
            remove(&self.derived_path(meta, derived))?;
        }
        if let Some(path) = self.profile_path(meta) {
            remove(&path)?;
        }
        // The metadata goes last: a crash in between leaves metadata without a profile,
        // which the index rebuild drops, never a profile nobody knows about.
        remove(&self.meta_path(meta))
    }

    /// Writes a capture's files; on error nothing of it is left but what was there before.
    /// Returns the size of the metadata file.
    fn write(&self, meta: &mut CaptureMeta, body: Option<StagedFile>) -> Result<u64, StoreError> {
        let target_dir = self.dir.join(&meta.target);
        fs::create_dir_all(&target_dir).map_err(StoreError::io("create", &target_dir))?;
        meta.file = None;
        if let Some(body) = body.filter(|_| meta.is_ok()) {
            let file = format!("{}{}", meta.id, meta.kind.extension());
            let dest = target_dir.join(&file);
            move_into_place(body.path(), &dest).map_err(StoreError::io("move into place", &dest))?;
            body.into_path();
            meta.file = Some(file);
        }
        let json = serde_json::to_vec_pretty(&meta).expect("metadata serializes");
        let meta_path = self.meta_path(meta);
        if let Err(error) = write_atomic(&meta_path, &json) {
            if let Some(path) = self.profile_path(meta) {
                fs::remove_file(path).ok();
            }
            return Err(StoreError::Io { action: "write", path: meta_path, source: error });
        }
        sync_dir(&target_dir);
        Ok(json.len() as u64)
    }
}

impl ProfileStore for LocalStore {
    fn new_id(&self, rule: &str, kind: ProfileKind) -> String {
        self.index.new_id(capture_id(Utc::now(), rule, kind))
    }

    fn keep(&self, mut meta: CaptureMeta, body: Option<StagedFile>) -> Result<CaptureMeta, StoreError> {
        let written = self.write(&mut meta, body);
        self.index.settle(&meta, written)?;
        Ok(meta)
    }

    fn get(&self, id: &str) -> Option<CaptureMeta> {
        self.index.get(id)
    }

    fn list(&self, filter: &CaptureFilter) -> Vec<CaptureMeta> {
        self.index.list(filter)
    }

    fn open_profile(&self, id: &str) -> Result<StoredFile, StoreError> {
        let meta = self.get(id).ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        let path = self.profile_path(&meta).ok_or_else(|| StoreError::NoProfile(id.to_string()))?;
        let name = meta.file.clone().unwrap_or_default();
        open(&path, name)
    }

    fn open_derived(&self, id: &str, derived: Derived) -> Result<Option<StoredFile>, StoreError> {
        let meta = self.get(id).ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        let path = self.derived_path(&meta, derived);
        match open(&path, format!("{id}.{}", derived.suffix())) {
            Ok(file) => Ok(Some(file)),
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn put_derived(&self, id: &str, derived: Derived, bytes: &[u8]) -> Result<(), StoreError> {
        let meta = self.get(id).ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        let path = self.derived_path(&meta, derived);
        write_atomic(&path, bytes).map_err(StoreError::io("write", &path))?;
        // Retention may have deleted the capture meanwhile: then the rendering goes too.
        if !self.index.add_other_bytes(id, bytes.len() as u64) {
            fs::remove_file(&path).ok();
            return Err(StoreError::NotFound(id.to_string()));
        }
        Ok(())
    }

    fn enforce_retention(&self) -> Result<usize, StoreError> {
        self.index.retire(self.max_age, self.max_bytes, |meta| self.delete(meta))
    }
}

fn open(path: &Path, name: String) -> Result<StoredFile, StoreError> {
    let file = fs::File::open(path).map_err(StoreError::io("open", path))?;
    let len = file.metadata().map_err(StoreError::io("stat", path))?.len();
    Ok(StoredFile { reader: Box::new(file), len, name })
}

/// Reads every `<target>/<id>.json`; drops metadata whose profile is gone and deletes
/// profiles that have no metadata (a capture interrupted between the two writes).
fn rebuild_index(dir: &Path) -> Result<BTreeMap<String, Indexed>, StoreError> {
    let mut index = BTreeMap::new();
    let entries = fs::read_dir(dir).map_err(StoreError::io("read", dir))?;
    for entry in entries.flatten() {
        let target_dir = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !target_dir.is_dir() {
            continue;
        }
        let mut files: HashSet<String> = HashSet::new();
        let mut metas = Vec::new();
        for file in fs::read_dir(&target_dir).map_err(StoreError::io("read", &target_dir))?.flatten() {
            let file_name = file.file_name().to_string_lossy().into_owned();
            if file_name.ends_with(".json") {
                metas.push(file.path());
            } else if file_name.contains(".tmp-") {
                fs::remove_file(file.path()).ok();
            } else {
                files.insert(file_name);
            }
        }
        let mut referenced = HashSet::new();
        for path in metas {
            let read = fs::read(&path).map_err(|e| e.to_string()).and_then(|bytes| {
                Ok((serde_json::from_slice::<CaptureMeta>(&bytes).map_err(|e| e.to_string())?, bytes.len()))
            });
            let (meta, meta_bytes) = match read {
                Ok(read) => read,
                Err(error) => {
                    tracing::warn!(path = %path.display(), error = %error, "Unreadable capture metadata skipped.");
                    continue;
                }
            };
            if meta.target != name || !is_valid_id(&meta.id) {
                tracing::warn!(path = %path.display(), "Capture metadata does not match its place; skipped.");
                continue;
            }
            if let Some(file) = &meta.file {
                if !files.contains(file) {
                    tracing::warn!(id = %meta.id, file = %file, "Profile file missing; capture dropped from the index.");
                    continue;
                }
                referenced.insert(file.clone());
                referenced.extend(Derived::ALL.map(|derived| format!("{}.{}", meta.id, derived.suffix())));
            }
            let derived_bytes: u64 = Derived::ALL
                .iter()
                .filter_map(|derived| {
                    fs::metadata(target_dir.join(format!("{}.{}", meta.id, derived.suffix()))).ok()
                })
                .map(|found| found.len())
                .sum();
            index.insert(meta.id.clone(), Indexed { meta, other_bytes: meta_bytes as u64 + derived_bytes });
        }
        for orphan in files.difference(&referenced) {
            tracing::warn!(file = %orphan, target = %name, "Profile without metadata deleted.");
            fs::remove_file(target_dir.join(orphan)).ok();
        }
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::model::CaptureStatus;
    use crate::store::Staging;

    const STAGING: &str = ".tmp";

    fn config(dir: &Path, max_age: Option<Duration>, max_bytes: Option<u64>) -> StorageConfig {
        StorageConfig { dir: dir.to_path_buf(), max_age, max_bytes, object_store: None }
    }

    fn meta(id: &str, finished_at: DateTime<Utc>, status: CaptureStatus) -> CaptureMeta {
        crate::store::tests::meta(id, ProfileKind::Heap, finished_at, status)
    }

    fn staging(store: &LocalStore) -> Staging {
        Staging::open(&store.dir.join(STAGING)).unwrap()
    }

    /// Stages `size` bytes and keeps a capture with them.
    fn keep(store: &LocalStore, finished_at: DateTime<Utc>, size: usize) -> CaptureMeta {
        let id = store.new_id("r", ProfileKind::Heap);
        let staged = staging(store).file(&id);
        fs::write(staged.path(), vec![7u8; size]).unwrap();
        let mut capture = meta(&id, finished_at, CaptureStatus::Ok);
        capture.bytes = size as u64;
        store.keep(capture, Some(staged)).unwrap()
    }

    /// Kept and failed captures land in the layout; ids never collide; the index is
    /// rebuilt from disk, dropping what is incomplete.
    #[test]
    fn layout_and_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&config(dir.path(), None, None)).unwrap();
        let first = keep(&store, Utc::now(), 10);
        let second = keep(&store, Utc::now(), 20);
        assert_ne!(first.id, second.id);
        let failed_id = store.new_id("r", ProfileKind::Heap);
        let staged = staging(&store).file(&failed_id);
        fs::write(staged.path(), b"partial").unwrap();
        let staged_path = staged.path().to_path_buf();
        let mut failed = meta(&failed_id, Utc::now(), CaptureStatus::Failed);
        failed.error = Some("boom".into());
        store.keep(failed, Some(staged)).unwrap();
        assert!(!staged_path.exists());

        let target = dir.path().join("t");
        assert!(target.join(format!("{}.pb.gz", first.id)).is_file());
        assert!(target.join(format!("{}.json", failed_id)).is_file());
        assert!(!target.join(format!("{failed_id}.pb.gz")).exists());
        let listed: Vec<String> = store.list(&CaptureFilter::default()).into_iter().map(|m| m.id).collect();
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
        let store = LocalStore::open(&config(dir.path(), None, None)).unwrap();
        staging(&store);
        let mut ids: Vec<String> = store.list(&CaptureFilter::default()).into_iter().map(|m| m.id).collect();
        ids.sort();
        let mut expected = vec![first.id.clone(), failed_id];
        expected.sort();
        assert_eq!(ids, expected);
        assert!(!target.join("20200101T000000.000Z-r-heap.pb.gz").exists());
        assert!(!target.join(".x.json.tmp-1").exists());
        assert!(fs::read_dir(dir.path().join(STAGING)).unwrap().next().is_none());
        assert_eq!(store.open_profile(&first.id).unwrap().len, 10);
        assert!(matches!(store.open_profile("nope"), Err(StoreError::NotFound(_))));
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
        let store = LocalStore::open(&config(dir.path(), None, None)).unwrap();
        let old = keep(&store, Utc::now() - chrono::Duration::hours(2), 10);
        std::thread::sleep(Duration::from_millis(2));
        let a = keep(&store, Utc::now(), 100);
        std::thread::sleep(Duration::from_millis(2));
        let b = keep(&store, Utc::now(), 100);
        std::thread::sleep(Duration::from_millis(2));
        let c = keep(&store, Utc::now(), 100);
        drop(store);
        // Room for b and c, not a as well.
        let room = on_disk(dir.path(), &b) + on_disk(dir.path(), &c) + 1;
        let store =
            LocalStore::open(&config(dir.path(), Some(Duration::from_secs(3600)), Some(room))).unwrap();
        assert_eq!(store.enforce_retention().unwrap(), 2);
        let left: Vec<String> = store.list(&CaptureFilter::default()).into_iter().map(|m| m.id).collect();
        assert_eq!(left, vec![c.id.clone(), b.id.clone()]);
        for gone in [&old, &a] {
            assert!(!dir.path().join("t").join(format!("{}.pb.gz", gone.id)).exists());
            assert!(!dir.path().join("t").join(format!("{}.json", gone.id)).exists());
        }
        // A single capture over the limit is still kept: it is the newest.
        let big = keep(&store, Utc::now(), 100_000);
        store.enforce_retention().unwrap();
        let left: Vec<String> = store.list(&CaptureFilter::default()).into_iter().map(|m| m.id).collect();
        assert_eq!(left, vec![big.id]);
    }

    /// Metadata counts: captures of tiny profiles with many long labels fill `max_bytes` by
    /// their metadata, and retention deletes the oldest of them.
    #[test]
    fn fat_metadata_counts() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&config(dir.path(), None, Some(200_000))).unwrap();
        let labels: BTreeMap<String, String> = (0..64).map(|n| (format!("l{n}"), "v".repeat(1024))).collect();
        let labels = std::sync::Arc::new(labels);
        let mut kept = Vec::new();
        for _ in 0..10 {
            let id = store.new_id("r", ProfileKind::Heap);
            let staged = staging(&store).file(&id);
            fs::write(staged.path(), b"tiny").unwrap();
            let mut capture = meta(&id, Utc::now(), CaptureStatus::Ok);
            capture.bytes = 4;
            capture.trigger.labels = labels.clone();
            kept.push(store.keep(capture, Some(staged)).unwrap());
            std::thread::sleep(Duration::from_millis(2));
        }
        let fat = on_disk(dir.path(), &kept[0]);
        assert!(fat > 60_000, "{fat} bytes");
        let deleted = store.enforce_retention().unwrap();
        assert_eq!(deleted, 10 - (200_000 / fat) as usize);
        let on_disk_now: u64 =
            store.list(&CaptureFilter::default()).iter().map(|m| on_disk(dir.path(), m)).sum();
        assert!(on_disk_now <= 200_000, "{on_disk_now}");
    }

    /// A rendering is kept next to its capture, survives a restart, and is deleted with the
    /// capture by retention.
    #[test]
    fn derived_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&config(dir.path(), None, Some(150))).unwrap();
        let first = keep(&store, Utc::now(), 100);
        assert!(store.open_derived(&first.id, Derived::Flamegraph).unwrap().is_none());
        store.put_derived(&first.id, Derived::Flamegraph, b"<svg/>").unwrap();
        let path = dir.path().join("t").join(format!("{}.flamegraph.svg", first.id));
        assert_eq!(fs::read(&path).unwrap(), b"<svg/>");
        assert!(matches!(store.put_derived("nope", Derived::Flamegraph, b"x"), Err(StoreError::NotFound(_))));

        drop(store);
        let store = LocalStore::open(&config(dir.path(), None, Some(150))).unwrap();
        assert_eq!(store.open_derived(&first.id, Derived::Flamegraph).unwrap().unwrap().len, 6);
        std::thread::sleep(Duration::from_millis(2));
        keep(&store, Utc::now(), 100);
        assert_eq!(store.enforce_retention().unwrap(), 1);
        assert!(!path.exists());
        assert!(matches!(store.open_derived(&first.id, Derived::Flamegraph), Err(StoreError::NotFound(_))));
    }
}
