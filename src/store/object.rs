//! The object-storage store: the local layout (`<target>/<id>.<ext>`, `<id>.json`,
//! `<id>.flamegraph.svg`) under an S3-compatible bucket's prefix, shared by every instance.
//! The profile goes first and the metadata last, so a listing never shows a capture whose
//! profile is not there yet. The index is rebuilt from a listing at start and refreshed
//! while running, which is how an instance learns of the captures of the others.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;

use super::bucket::{Bucket, BucketError, Object};
use super::index::Index;
use super::{CaptureFilter, Derived, ProfileStore, StagedFile, StoreError, StoredFile};
use crate::config::{ObjectStoreConfig, StorageConfig};
use crate::model::{CaptureMeta, ProfileKind, capture_id, is_valid_id};

pub struct ObjectStoreBackend {
    bucket: Arc<Bucket>,
    max_age: Option<Duration>,
    max_bytes: Option<u64>,
    index: Index,
    /// Why the last listing failed, while it does.
    trouble: Mutex<Option<String>>,
    /// Four hex digits that tell this instance's ids from the others'.
    instance: String,
    /// Metadata keys the last refresh did not take in.
    skipped: Mutex<HashMap<String, Skipped>>,
    /// When the last listing started and how long it took; held while one runs, so one
    /// runs at a time. An id not in the index is looked for in a listing that starts after
    /// it was asked for: a capture another instance kept since the last refresh is found at
    /// once (the link in its annotation reaches any instance behind a Service).
    listing: Mutex<Option<Listed>>,
}

/// A listing of the bucket: when it started, and how long it took.
#[derive(Debug, Clone, Copy)]
struct Listed {
    started: Instant,
    took: Duration,
}

/// The least time between the start of one listing and that of a listing for an unknown
/// id; a slow listing (a large bucket) is spaced by five times its length, so ids that are
/// nowhere keep the bucket listed a fifth of the time at most.
const UNKNOWN_ID_LISTING_GAP: Duration = Duration::from_secs(1);
/// The longest a request for an unknown id waits for its turn to list: past it, the id is
/// not found (the next refresh may find it).
const UNKNOWN_ID_WAIT: Duration = Duration::from_secs(2);

impl From<BucketError> for StoreError {
    fn from(error: BucketError) -> StoreError {
        match error {
            BucketError::NotFound(key) => StoreError::Remote(format!("{key} is not in the bucket")),
            other => StoreError::Remote(other.to_string()),
        }
    }
}

impl ObjectStoreBackend {
    /// The bucket of `storage.object_store`, to share between the store and the claims.
    pub fn bucket(config: &ObjectStoreConfig) -> Result<Arc<Bucket>, StoreError> {
        Bucket::open(config)
            .map(Arc::new)
            .map_err(|error| StoreError::Remote(format!("cannot use {}: {error}", config.url())))
    }

    /// The store in `bucket` (see `bucket`), listed. A bucket that cannot be reached does
    /// not stop the start: the index is empty until a refresh can list it, and captures
    /// fail with the reason until it can be written.
    pub fn open(config: &StorageConfig, bucket: Arc<Bucket>) -> ObjectStoreBackend {
        let store = ObjectStoreBackend {
            bucket,
            max_age: config.max_age,
            max_bytes: config.max_bytes,
            index: Index::default(),
            trouble: Mutex::new(None),
            instance: instance_tag(),
            skipped: Mutex::new(HashMap::new()),
            listing: Mutex::new(None),
        };
        match store.refresh() {
            Ok(_) => {
                let captures = store.index.len();
                tracing::info!(bucket = %store.bucket.url(), captures, "Capture index read from the bucket.");
            }
            Err(error) => {
                tracing::error!(bucket = %store.bucket.url(), error = %error, "Cannot list the bucket; captures will fail until it can be reached.");
            }
        }
        store
    }

    fn profile_key(meta: &CaptureMeta) -> Option<String> {
        meta.file.as_ref().map(|file| format!("{}/{file}", meta.target))
    }

    fn meta_key(meta: &CaptureMeta) -> String {
        format!("{}/{}.json", meta.target, meta.id)
    }

    fn derived_key(meta: &CaptureMeta, derived: Derived) -> String {
        format!("{}/{}.{}", meta.target, meta.id, derived.suffix())
    }

    fn write(&self, meta: &mut CaptureMeta, body: Option<StagedFile>) -> Result<u64, StoreError> {
        meta.file = None;
        if let Some(body) = body.filter(|_| meta.is_ok()) {
            let file = format!("{}{}", meta.id, meta.kind.extension());
            self.bucket.upload(&format!("{}/{file}", meta.target), body.path())?;
            meta.file = Some(file);
        }
        let json = serde_json::to_vec_pretty(&meta).expect("metadata serializes");
        let size = json.len() as u64;
        if let Err(error) = self.bucket.put(&Self::meta_key(meta), Bytes::from(json)) {
            if let Some(key) = Self::profile_key(meta) {
                self.bucket.delete(&key).ok();
            }
            return Err(error.into());
        }
        Ok(size)
    }

    fn delete(&self, meta: &CaptureMeta) -> Result<(), StoreError> {
        for derived in Derived::ALL {
            self.bucket.delete(&Self::derived_key(meta, derived))?;
        }
        if let Some(key) = Self::profile_key(meta) {
            self.bucket.delete(&key)?;
        }
        // Last, as on disk: a profile is never left that no listing finds.
        Ok(self.bucket.delete(&Self::meta_key(meta))?)
    }
}

impl ProfileStore for ObjectStoreBackend {
    fn new_id(&self, rule: &str, kind: ProfileKind) -> String {
        // Instances share the bucket: the id ends in this one's tag, so two instances
        // capturing by one rule in the same millisecond do not collide.
        self.index.new_id(format!("{}-{}", capture_id(Utc::now(), rule, kind), self.instance))
    }

    fn keep(&self, mut meta: CaptureMeta, body: Option<StagedFile>) -> Result<CaptureMeta, StoreError> {
        let written = self.write(&mut meta, body);
        self.index.settle(&meta, written)?;
        Ok(meta)
    }

    fn get(&self, id: &str) -> Option<CaptureMeta> {
        self.index.get(id).or_else(|| self.find_unknown(id))
    }

    fn list(&self, filter: &CaptureFilter) -> Vec<CaptureMeta> {
        self.index.list(filter)
    }

    fn open_profile(&self, id: &str) -> Result<StoredFile, StoreError> {
        let meta = self.get(id).ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        let key = Self::profile_key(&meta).ok_or_else(|| StoreError::NoProfile(id.to_string()))?;
        let (reader, len) = self.bucket.reader(&key)?;
        Ok(StoredFile { reader, len, name: meta.file.clone().unwrap_or_default() })
    }

    fn open_derived(&self, id: &str, derived: Derived) -> Result<Option<StoredFile>, StoreError> {
        let meta = self.get(id).ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        match self.bucket.reader(&Self::derived_key(&meta, derived)) {
            Ok((reader, len)) => {
                Ok(Some(StoredFile { reader, len, name: format!("{id}.{}", derived.suffix()) }))
            }
            Err(BucketError::NotFound(_)) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    fn put_derived(&self, id: &str, derived: Derived, bytes: &[u8]) -> Result<(), StoreError> {
        let meta = self.get(id).ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        let key = Self::derived_key(&meta, derived);
        self.bucket.put(&key, Bytes::copy_from_slice(bytes))?;
        if !self.index.add_other_bytes(id, bytes.len() as u64) {
            self.bucket.delete(&key).ok();
            return Err(StoreError::NotFound(id.to_string()));
        }
        Ok(())
    }

    fn enforce_retention(&self) -> Result<usize, StoreError> {
        // Every instance enforces it on the same listing; deleting what another has
        // deleted already is no error.
        self.index.retire(self.max_age, self.max_bytes, |meta| self.delete(meta))
    }

    fn trouble(&self) -> Option<String> {
        self.trouble.lock().unwrap().clone()
    }

    fn refresh(&self) -> Result<usize, StoreError> {
        let mut listing = self.listing.lock().unwrap();
        self.list_bucket(&mut listing)
    }
}

impl ObjectStoreBackend {
    /// An id not in the index, from a listing that starts after it was asked for: one that
    /// started meanwhile, or one started now if its turn comes soon (see
    /// `UNKNOWN_ID_LISTING_GAP`).
    fn find_unknown(&self, id: &str) -> Option<CaptureMeta> {
        let asked = Instant::now();
        let mut listing = self.listing.lock().unwrap();
        if !listing.is_some_and(|last| last.started >= asked) {
            let turn =
                listing.map_or(asked, |last| last.started + (last.took * 5).max(UNKNOWN_ID_LISTING_GAP));
            let wait = turn.saturating_duration_since(Instant::now());
            if wait > UNKNOWN_ID_WAIT {
                return None;
            }
            std::thread::sleep(wait);
            self.list_bucket(&mut listing).ok()?;
        }
        self.index.get(id)
    }

    /// Lists the bucket: captures written by other instances come in, those deleted
    /// elsewhere go. Only the targets' directories are listed (not the claims), and
    /// metadata already known, or skipped before at the same version, is not read again.
    /// `last` (the lock on listing) says when this one started and how long it took.
    fn list_bucket(&self, last: &mut Option<Listed>) -> Result<usize, StoreError> {
        let started = Instant::now();
        let listed = self.list_and_index();
        *last = Some(Listed { started, took: started.elapsed() });
        listed
    }

    fn list_and_index(&self) -> Result<usize, StoreError> {
        // Taken before the listing: what this instance keeps meanwhile is not in either.
        let known = self.index.ids();
        let objects = self.list_captures()?;
        let sizes: HashMap<&str, u64> =
            objects.iter().map(|object| (object.key.as_str(), object.size)).collect();
        let mut listed = HashSet::new();
        let mut skipped = self.skipped.lock().unwrap();
        let mut still_skipped = HashMap::new();
        let mut added = 0;
        for object in &objects {
            let Some((target, id)) = metadata_key(&object.key) else { continue };
            listed.insert(id.to_string());
            if known.contains(id) {
                continue;
            }
            let earlier = skipped.remove(&object.key).filter(|earlier| earlier.e_tag == object.e_tag);
            let meta = match earlier {
                Some(Skipped { waiting: None, .. }) => {
                    still_skipped
                        .insert(object.key.clone(), Skipped { e_tag: object.e_tag.clone(), waiting: None });
                    continue;
                }
                Some(Skipped { waiting: Some(meta), .. }) => meta,
                None => match self.read_metadata(&object.key, target, id) {
                    Some(meta) => meta,
                    None => {
                        let unreadable = Skipped { e_tag: object.e_tag.clone(), waiting: None };
                        still_skipped.insert(object.key.clone(), unreadable);
                        continue;
                    }
                },
            };
            // A capture whose profile is not (yet, or any more) listed waits for the next
            // refresh: its writer puts the profile first.
            if let Some(file) = &meta.file
                && !sizes.contains_key(format!("{target}/{file}").as_str())
            {
                let waiting = Skipped { e_tag: object.e_tag.clone(), waiting: Some(meta) };
                still_skipped.insert(object.key.clone(), waiting);
                continue;
            }
            let derived: u64 = Derived::ALL
                .iter()
                .filter_map(|derived| sizes.get(format!("{target}/{id}.{}", derived.suffix()).as_str()))
                .sum();
            self.index.insert(meta, object.size + derived);
            added += 1;
        }
        // What is no longer listed is forgotten.
        *skipped = still_skipped;
        drop(skipped);
        // Deleted elsewhere (retention of another instance): gone here too.
        let gone: Vec<&String> = known.iter().filter(|id| !listed.contains(*id)).collect();
        for id in &gone {
            self.index.remove(id);
        }
        if added > 0 || !gone.is_empty() {
            tracing::debug!(added, gone = gone.len(), "Capture index refreshed from the bucket.");
        }
        Ok(added)
    }
}

impl ObjectStoreBackend {
    /// Every object in the targets' directories; says when listing fails and when it
    /// works again.
    fn list_captures(&self) -> Result<Vec<Object>, StoreError> {
        let listed = self.bucket.dirs().and_then(|dirs| {
            let mut objects = Vec::new();
            for dir in dirs.iter().filter(|dir| !dir.starts_with('.')) {
                objects.extend(self.bucket.list(dir)?);
            }
            Ok(objects)
        });
        match listed {
            Ok(objects) => {
                if let Some(was) = self.trouble.lock().unwrap().take() {
                    tracing::info!(bucket = %self.bucket.url(), was = %was, "The bucket can be listed again.");
                }
                Ok(objects)
            }
            Err(error) => {
                let message = error.to_string();
                let before = self.trouble.lock().unwrap().replace(message.clone());
                if before.as_ref() != Some(&message) {
                    tracing::error!(bucket = %self.bucket.url(), error = %message, "Cannot list the bucket: captures of other instances are not seen, and captures may fail.");
                }
                Err(error.into())
            }
        }
    }

    /// A capture's metadata at `key`, if it reads and matches its place (else logged).
    fn read_metadata(&self, key: &str, target: &str, id: &str) -> Option<CaptureMeta> {
        let read = self.bucket.get(key).map_err(StoreError::from).and_then(|(bytes, _)| {
            serde_json::from_slice::<CaptureMeta>(&bytes)
                .map_err(|error| StoreError::Remote(format!("{key}: {error}")))
        });
        match read {
            Ok(meta) if meta.target == target && meta.id == id => Some(meta),
            Ok(_) => {
                tracing::warn!(key = %key, "Capture metadata does not match its place; skipped.");
                None
            }
            Err(error) => {
                tracing::warn!(key = %key, error = %error, "Unreadable capture metadata skipped.");
                None
            }
        }
    }
}

/// `(target, id)` of a capture's metadata key, `target/id.json`.
fn metadata_key(key: &str) -> Option<(&str, &str)> {
    let (target, name) = key.split_once('/')?;
    let id = name.strip_suffix(".json")?;
    (!target.starts_with('.') && !name.contains('/') && is_valid_id(id)).then_some((target, id))
}

/// Metadata a refresh did not take in, at the version it was listed with: read again only
/// once it changes.
struct Skipped {
    e_tag: Option<String>,
    /// Read and valid, waiting for its profile to be listed; `None`: unreadable.
    waiting: Option<CaptureMeta>,
}

/// Four hex digits from this host, process and moment.
fn instance_tag() -> String {
    use sha2::{Digest, Sha256};
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let seed = format!("{host}/{}/{:?}", std::process::id(), std::time::SystemTime::now());
    hex::encode(&Sha256::digest(seed.as_bytes())[..2])
}
