//! Why the store could not do what was asked.

use std::path::{Path, PathBuf};

use crate::model::CaptureId;

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
