//! Keeps profiles and their metadata: validated bodies are moved in atomically, an index
//! of captures is kept in memory and rebuilt from disk at start, and retention deletes the
//! oldest first. `ProfileStore` is the seam for other backends (object storage for a fleet).

mod local;
mod meta;

use std::path::{Path, PathBuf};

pub use local::{DERIVED, LocalStore, write_atomic};
#[cfg(test)]
pub(crate) use meta::tests::meta as test_meta;
pub use meta::{CaptureMeta, CaptureStatus, Trigger, TriggerSource, capture_id, is_valid_id};

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("no capture {0}")]
    NotFound(String),
    #[error("capture {0} has no profile (it failed)")]
    NoProfile(String),
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
    pub kind: Option<String>,
    pub limit: Option<usize>,
}

impl CaptureFilter {
    fn matches(&self, meta: &CaptureMeta) -> bool {
        self.target.as_ref().is_none_or(|t| *t == meta.target)
            && self.rule.as_ref().is_none_or(|r| *r == meta.rule)
            && self.kind.as_ref().is_none_or(|k| *k == meta.kind)
    }
}

/// A stored profile opened for reading.
pub struct ProfileFile {
    pub file: std::fs::File,
    pub len: u64,
    pub file_name: String,
}

/// Where profiles are kept. Methods block; async callers use `spawn_blocking`.
pub trait ProfileStore: Send + Sync + 'static {
    /// Reserves a unique id for a capture that starts now, and a local path to stream its
    /// body to before it is validated.
    fn begin(&self, target: &str, rule: &str, kind: &str) -> Result<(String, PathBuf), StoreError>;
    /// Keeps a capture: the staged body (when `meta` is ok) and its metadata, atomically.
    /// A failed capture's staged file is deleted and only its metadata kept.
    fn finish(&self, meta: CaptureMeta, staged: &Path) -> Result<CaptureMeta, StoreError>;
    fn get(&self, id: &str) -> Option<CaptureMeta>;
    /// Newest first.
    fn list(&self, filter: &CaptureFilter) -> Vec<CaptureMeta>;
    fn open_profile(&self, id: &str) -> Result<ProfileFile, StoreError>;
    /// A rendering of a kept capture's profile (one of `DERIVED`, e.g. `flamegraph.svg`),
    /// if one was made; it is deleted with the capture.
    fn open_derived(&self, id: &str, name: &str) -> Result<Option<ProfileFile>, StoreError>;
    /// Keeps a rendering of a kept capture's profile, atomically.
    fn put_derived(&self, id: &str, name: &str, bytes: &[u8]) -> Result<(), StoreError>;
    /// Deletes captures past the retention limits, oldest first; returns how many.
    fn enforce_retention(&self) -> Result<usize, StoreError>;
    /// A directory this store may keep its own state in (gate state).
    fn state_dir(&self) -> PathBuf;
}
