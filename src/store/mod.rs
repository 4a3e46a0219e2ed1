//! Keeps profiles and their metadata: validated bodies are moved in atomically, an index
//! of captures is kept in memory and rebuilt at start, and retention deletes the oldest
//! first. `ProfileStore` is the seam for backends: the local directory is the embedded
//! one. Bodies are downloaded to `Staging`, which is always local, before a store keeps
//! them.

mod bucket;
mod index;
mod local;
mod object;
mod staging;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use bucket::{Bucket, BucketError};
pub use local::LocalStore;
pub use object::ObjectStoreBackend;
pub use staging::{StagedFile, Staging};

use crate::model::{CaptureMeta, ProfileKind};

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("no capture {0}")]
    NotFound(String),
    #[error("capture {0} has no profile (it failed)")]
    NoProfile(String),
    /// The object store said no, or could not be reached.
    #[error("object store: {0}")]
    Remote(String),
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

/// Where profiles are kept. Methods block; async callers use `spawn_blocking`.
pub trait ProfileStore: Send + Sync + 'static {
    /// A unique id for a capture of `kind` by `rule` that starts now.
    fn new_id(&self, rule: &str, kind: ProfileKind) -> String;
    /// Keeps a capture: for a kept one (`meta` ok) its validated body, and its metadata,
    /// atomically. A failed capture keeps only its metadata. Returns the metadata as kept.
    fn keep(&self, meta: CaptureMeta, body: Option<StagedFile>) -> Result<CaptureMeta, StoreError>;
    fn get(&self, id: &str) -> Option<CaptureMeta>;
    /// Newest first.
    fn list(&self, filter: &CaptureFilter) -> Vec<CaptureMeta>;
    fn open_profile(&self, id: &str) -> Result<StoredFile, StoreError>;
    /// A rendering of a kept capture's profile, if one was made.
    fn open_derived(&self, id: &str, derived: Derived) -> Result<Option<StoredFile>, StoreError>;
    /// Keeps a rendering of a kept capture's profile, atomically.
    fn put_derived(&self, id: &str, derived: Derived, bytes: &[u8]) -> Result<(), StoreError>;
    /// Deletes captures past the retention limits, oldest first; returns how many.
    fn enforce_retention(&self) -> Result<usize, StoreError>;
    /// Takes in what other instances kept and forgets what they deleted, for stores that
    /// are shared; returns how many captures came in.
    fn refresh(&self) -> Result<usize, StoreError> {
        Ok(0)
    }
    /// Why a shared store cannot be reached, while it cannot.
    fn trouble(&self) -> Option<String> {
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::{DateTime, Utc};

    use crate::model::{CaptureStatus, Trigger, TriggerSource};

    use super::*;

    /// A capture of `kind` from target `t` by rule `r`, for tests.
    pub fn meta(
        id: &str,
        kind: ProfileKind,
        finished_at: DateTime<Utc>,
        status: CaptureStatus,
    ) -> CaptureMeta {
        let mut meta = CaptureMeta::pending(
            "t",
            "r",
            kind,
            Trigger::local(TriggerSource::Manual, None),
            format!("http://t/debug/pprof/{kind}"),
            finished_at,
        );
        meta.id = id.to_string();
        meta.status = status;
        meta
    }
}
