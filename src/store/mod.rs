//! Keeps profiles and their metadata. `ProfileStore` holds what every store does the same
//! way — one key layout, the profile first and the metadata last, an index of captures in
//! memory rebuilt from a listing, retention oldest first — over a `Backend` that only
//! moves bytes: the local directory, or an S3-compatible bucket shared by every instance.
//! Bodies are downloaded to `Staging`, which is always local, before a store keeps them.

mod backend;
mod error;
mod index;
mod layout;
mod listing;
mod local;
mod object;
mod staging;
#[cfg(test)]
pub(crate) mod tests;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use backend::{Backend, Listed, StoredFile};
pub use error::StoreError;
pub use index::CaptureFilter;
pub use layout::Derived;
pub use local::LocalBackend;
pub use object::ObjectBackend;
pub use staging::{StagedFile, Staging};

use crate::config::StorageConfig;
use crate::model::{CaptureId, CaptureMeta, CaptureRole, ProfileKind};
use index::Index;
use listing::Listings;

/// Where profiles are kept: captures in the key layout of `layout`, indexed in memory.
/// Methods block; async callers use `spawn_blocking`.
pub struct ProfileStore {
    backend: Box<dyn Backend>,
    max_age: Option<Duration>,
    max_bytes: Option<u64>,
    index: Index,
    /// Four hex digits that tell this instance's ids from the others' in a shared store.
    instance: Option<String>,
    /// Its listings: at start, and for a shared store while running.
    listings: Listings,
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
            listings: Listings::default(),
        };
        let place = store.backend.describe();
        match store.listings.list(store.backend.as_ref(), &store.index) {
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
        self.index.get(id).or_else(|| self.listings.find_unknown(self.backend.as_ref(), &self.index, id))
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
        self.listings.trouble()
    }

    /// For a shared store, lists the backend and takes in what changed; returns how many
    /// captures came in. A store of this instance alone was listed at start, and knows the
    /// rest.
    pub fn refresh(&self) -> Result<usize, StoreError> {
        if !self.backend.shared() {
            return Ok(0);
        }
        self.listings.list(self.backend.as_ref(), &self.index)
    }

    /// Whether other instances keep captures here too.
    pub fn shared(&self) -> bool {
        self.backend.shared()
    }
}
