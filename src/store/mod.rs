//! Keeps profiles and their metadata. `ProfileStore` holds what every store does the same
//! way — one key layout, the profile first and the metadata last, an index of captures in
//! memory rebuilt from a listing, retention oldest first — over a `Backend` that only
//! moves bytes: the local directory, or an S3-compatible bucket shared by every instance.
//! Bodies are downloaded to `Staging`, which is always local, before a store keeps them.

mod index;
mod layout;
mod listing;
mod local;
mod object;
mod staging;
#[cfg(test)]
pub(crate) mod tests;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

pub use local::LocalBackend;
pub use object::ObjectBackend;
pub use staging::{StagedFile, Staging};

use crate::config::StorageConfig;
use crate::model::{CaptureId, CaptureMeta, CaptureRole, ProfileKind};
use index::Index;
use listing::Skipped;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("no capture {0}")]
    NotFound(CaptureId),
    #[error("capture {0} has no profile (it failed)")]
    NoProfile(CaptureId),
    /// A kept capture's file is not where its metadata says (deleted by hand, a disk
    /// fault): the store's fault, not the request's.
    #[error("{0} is not in the store, though its capture's metadata names it")]
    Missing(String),
    /// The bucket said no, or could not be reached.
    #[error("object store: {0}")]
    Remote(#[from] crate::bucket::BucketError),
    #[error("capture metadata {key}: {source}")]
    Metadata { key: String, source: serde_json::Error },
}

impl StoreError {
    pub fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
        move |source| StoreError::Io { action, path: path.to_path_buf(), source }
    }
}

/// Which captures to list.
#[derive(Debug, Clone, Default)]
pub struct CaptureFilter {
    pub target: Option<String>,
    pub rule: Option<String>,
    pub kind: Option<ProfileKind>,
    pub limit: Option<usize>,
}

impl CaptureFilter {
    pub fn matches(&self, meta: &CaptureMeta) -> bool {
        self.target.as_ref().is_none_or(|t| *t == meta.target)
            && self.rule.as_ref().is_none_or(|r| *r == meta.rule)
            && self.kind.is_none_or(|k| k == meta.kind)
    }
}

/// A rendering kept next to a capture's profile, made on demand and deleted with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Derived {
    Flamegraph,
}

impl Derived {
    pub const ALL: [Derived; 1] = [Derived::Flamegraph];

    /// What follows the capture's id in its name: `<id>.flamegraph.svg`.
    pub fn suffix(self) -> &'static str {
        match self {
            Derived::Flamegraph => "flamegraph.svg",
        }
    }
}

/// A stored file opened for reading.
pub struct StoredFile {
    pub reader: Box<dyn Read + Send>,
    pub len: u64,
    /// The name to give it on download.
    pub name: String,
}

impl StoredFile {
    /// The whole content.
    pub fn read_all(mut self) -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(self.len.min(64 << 20) as usize);
        self.reader.read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

/// An object a backend lists: its key (`<target>/<name>`), size and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    /// Changes whenever the object is written again (an ETag, a modification time).
    pub version: Option<String>,
}

/// Where the bytes of a store are, and the only things a store asks of it. Every method
/// blocks; async callers use `spawn_blocking`.
pub trait Backend: Send + Sync + 'static {
    /// Where it is, for messages: a directory, `s3://bucket/prefix`.
    fn describe(&self) -> String;
    /// Moves a validated staged body to `key` durably (a rename, an upload).
    fn put_file(&self, key: &str, body: StagedFile) -> Result<(), StoreError>;
    /// Writes `bytes` at `key` whole or not at all.
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError>;
    /// The object at `key`, or `None` if there is none.
    fn open(&self, key: &str) -> Result<Option<StoredFile>, StoreError>;
    /// Deletes `key`; one that is not there is no error.
    fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Every object in the targets' directories.
    fn list(&self) -> Result<Vec<Listed>, StoreError>;
    /// Whether other instances keep captures here too: then what they keep and delete is
    /// taken in by listing while running, ids carry this instance's tag, and a profile
    /// without its metadata may be one being written rather than one left behind.
    fn shared(&self) -> bool {
        false
    }
}

/// The least time between the start of one listing and that of a listing for an unknown
/// id; a slow listing (a large bucket) is spaced by five times its length, so ids that are
/// nowhere keep the bucket listed a fifth of the time at most.
const UNKNOWN_ID_LISTING_GAP: Duration = Duration::from_secs(1);
/// The longest a request for an unknown id waits for its turn to list: past it, the id is
/// not found (the next refresh may find it).
const UNKNOWN_ID_WAIT: Duration = Duration::from_secs(2);

/// A listing of the backend: when it started, and how long it took.
#[derive(Debug, Clone, Copy)]
struct LastListing {
    started: Instant,
    took: Duration,
}

/// Where profiles are kept: captures in the key layout of `layout`, indexed in memory.
/// Methods block; async callers use `spawn_blocking`.
pub struct ProfileStore {
    backend: Box<dyn Backend>,
    max_age: Option<Duration>,
    max_bytes: Option<u64>,
    index: Index,
    /// Four hex digits that tell this instance's ids from the others' in a shared store.
    instance: Option<String>,
    /// Why the last listing failed, while it does.
    trouble: Mutex<Option<String>>,
    /// Metadata the last listing did not take in, to read again only once it changed.
    skipped: Mutex<std::collections::HashMap<String, Skipped>>,
    /// Held while a listing runs, so one runs at a time; says when the last one started and
    /// how long it took.
    listing: Mutex<Option<LastListing>>,
}

impl ProfileStore {
    /// The store of `config`: the bucket of `storage.object_store`, or the directory.
    pub fn open(
        config: &StorageConfig,
        bucket: Option<Arc<crate::bucket::Bucket>>,
    ) -> Result<ProfileStore, StoreError> {
        let backend: Box<dyn Backend> = match bucket {
            Some(bucket) => Box::new(ObjectBackend::new(bucket)),
            None => Box::new(LocalBackend::open(&config.dir)?),
        };
        Ok(ProfileStore::with_backend(backend, config.max_age, config.max_bytes))
    }

    /// A store over `backend`, listed. A shared backend that cannot be listed does not stop
    /// the start: the index is empty until a refresh can list it, and captures fail with
    /// the reason until it can be written.
    pub fn with_backend(
        backend: Box<dyn Backend>,
        max_age: Option<Duration>,
        max_bytes: Option<u64>,
    ) -> ProfileStore {
        let store = ProfileStore {
            instance: backend.shared().then(layout::instance_tag),
            backend,
            max_age,
            max_bytes,
            index: Index::default(),
            trouble: Mutex::new(None),
            skipped: Mutex::default(),
            listing: Mutex::new(None),
        };
        let place = store.backend.describe();
        match store.list_at_start() {
            Ok(_) => tracing::info!(store = %place, captures = store.index.len(), "Capture index rebuilt."),
            Err(error) => {
                tracing::error!(store = %place, error = %error, "Cannot list the store; captures will fail until it can be reached.")
            }
        }
        store
    }

    /// A unique id for a capture of `kind` by `rule` in `role`, started `at`.
    pub fn new_id(&self, at: DateTime<Utc>, rule: &str, role: CaptureRole, kind: ProfileKind) -> CaptureId {
        let id = CaptureId::new(at, rule, role, kind);
        // Instances share a bucket: the id ends in this one's tag, so two instances
        // capturing by one rule in the same millisecond do not collide.
        self.index.new_id(match &self.instance {
            Some(tag) => id.with_suffix(tag),
            None => id,
        })
    }

    /// Keeps a capture: a kept one's validated body first, its metadata last. A failed
    /// capture keeps only its metadata. Returns the metadata as kept: failed, with the
    /// reason, if it could not be written.
    pub fn keep(&self, meta: CaptureMeta, body: Option<StagedFile>) -> CaptureMeta {
        let written = self.write(&meta, body);
        self.index.release(&meta.id);
        match written {
            Ok(metadata_bytes) => {
                self.index.insert(meta.clone(), metadata_bytes);
                meta
            }
            Err(error) => meta.not_stored(format!("cannot store the profile: {error}")),
        }
    }

    /// Writes a capture's files; on error nothing of it is left. Returns the size of its
    /// metadata.
    fn write(&self, meta: &CaptureMeta, body: Option<StagedFile>) -> Result<u64, StoreError> {
        let profile = layout::profile_key(meta);
        if let (Some(key), Some(body)) = (&profile, body) {
            self.backend.put_file(key, body)?;
        }
        let json = serde_json::to_vec_pretty(meta).expect("metadata serializes");
        if let Err(error) = self.backend.put(&layout::metadata_key(&meta.target, &meta.id), &json) {
            if let Some(key) = &profile {
                self.backend.delete(key).ok();
            }
            return Err(error);
        }
        Ok(json.len() as u64)
    }

    pub fn get(&self, id: &CaptureId) -> Option<CaptureMeta> {
        self.index.get(id).or_else(|| self.find_unknown(id))
    }

    /// Newest first.
    pub fn list(&self, filter: &CaptureFilter) -> Vec<CaptureMeta> {
        self.index.list(filter)
    }

    pub fn open_profile(&self, id: &CaptureId) -> Result<StoredFile, StoreError> {
        let meta = self.get(id).ok_or_else(|| StoreError::NotFound(id.clone()))?;
        let key = layout::profile_key(&meta).ok_or_else(|| StoreError::NoProfile(id.clone()))?;
        let mut file = self.backend.open(&key)?.ok_or(StoreError::Missing(key))?;
        file.name = meta.file_name().to_string();
        Ok(file)
    }

    /// A rendering of a kept capture's profile, if one was made.
    pub fn open_derived(&self, id: &CaptureId, derived: Derived) -> Result<Option<StoredFile>, StoreError> {
        let meta = self.get(id).ok_or_else(|| StoreError::NotFound(id.clone()))?;
        let opened = self.backend.open(&layout::derived_key(&meta.target, id, derived))?;
        Ok(opened.map(|file| StoredFile { name: format!("{id}.{}", derived.suffix()), ..file }))
    }

    /// Keeps a rendering of a kept capture's profile, whole or not at all.
    pub fn put_derived(&self, id: &CaptureId, derived: Derived, bytes: &[u8]) -> Result<(), StoreError> {
        let meta = self.get(id).ok_or_else(|| StoreError::NotFound(id.clone()))?;
        let key = layout::derived_key(&meta.target, id, derived);
        self.backend.put(&key, bytes)?;
        // Retention may have deleted the capture meanwhile: then the rendering goes too.
        if !self.index.add_other_bytes(id, bytes.len() as u64) {
            self.backend.delete(&key).ok();
            return Err(StoreError::NotFound(id.clone()));
        }
        Ok(())
    }

    /// Deletes captures past the retention limits, oldest first; returns how many. Every
    /// instance of a shared store applies the same limits to the same listing; deleting
    /// what another has deleted already is no error.
    pub fn enforce_retention(&self) -> Result<usize, StoreError> {
        self.index.retire(Utc::now(), self.max_age, self.max_bytes, |meta| self.delete(meta))
    }

    /// Deletes a capture: renderings, profile, and the metadata last, so that a crash in
    /// between leaves metadata without a profile (dropped at the next listing), never a
    /// profile nobody knows of.
    fn delete(&self, meta: &CaptureMeta) -> Result<(), StoreError> {
        for derived in Derived::ALL {
            self.backend.delete(&layout::derived_key(&meta.target, &meta.id, derived))?;
        }
        if let Some(key) = layout::profile_key(meta) {
            self.backend.delete(&key)?;
        }
        self.backend.delete(&layout::metadata_key(&meta.target, &meta.id))
    }

    /// Why a shared store cannot be listed, while it cannot.
    pub fn trouble(&self) -> Option<String> {
        self.trouble.lock().unwrap().clone()
    }

    /// Whether other instances keep captures here too.
    pub fn shared(&self) -> bool {
        self.backend.shared()
    }
}
