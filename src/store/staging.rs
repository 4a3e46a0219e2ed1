//! Where bodies are downloaded before they are validated and kept: `<storage.dir>/.tmp`,
//! local whatever the store, emptied at start (a crash leaves at most a part here).

use std::fs;
use std::path::{Path, PathBuf};

use super::error::StoreError;

/// The staging directory.
#[derive(Debug, Clone)]
pub struct Staging {
    dir: PathBuf,
}

impl Staging {
    /// Opens (creating) `dir` and deletes what an interrupted run left in it.
    pub fn open(dir: &Path) -> Result<Staging, StoreError> {
        fs::create_dir_all(dir).map_err(StoreError::io("create", dir))?;
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                fs::remove_file(entry.path()).ok();
            }
        }
        Ok(Staging { dir: dir.to_path_buf() })
    }

    /// A place to download the body of capture `id` to. The directory is made again if it
    /// was deleted meanwhile (with the whole storage directory, say).
    pub fn file(&self, id: &str) -> StagedFile {
        if let Err(error) = fs::create_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %error, "Cannot make the staging directory.");
        }
        StagedFile { path: Some(self.dir.join(format!("{id}.part"))) }
    }
}

/// A body being downloaded, or downloaded and validated. Deleted when dropped unless a
/// store took it.
#[derive(Debug)]
pub struct StagedFile {
    path: Option<PathBuf>,
}

impl StagedFile {
    /// A staged file at `path` (for stores and tools that stage elsewhere).
    pub fn at(path: PathBuf) -> StagedFile {
        StagedFile { path: Some(path) }
    }

    pub fn path(&self) -> &Path {
        self.path.as_deref().expect("taken only by into_path")
    }

    /// The path, which the caller now owns: the file is no longer deleted on drop.
    pub fn into_path(mut self) -> PathBuf {
        self.path.take().expect("taken only once")
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            fs::remove_file(path).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A staged part is deleted when dropped, kept when taken, and cleared at the next open.
    #[test]
    fn staged_files() {
        let dir = tempfile::tempdir().unwrap();
        let staging = Staging::open(dir.path()).unwrap();
        let dropped = staging.file("a");
        fs::write(dropped.path(), b"part").unwrap();
        let path = dropped.path().to_path_buf();
        drop(dropped);
        assert!(!path.exists());
        let taken = staging.file("b");
        fs::write(taken.path(), b"whole").unwrap();
        let path = taken.into_path();
        assert!(path.exists());
        Staging::open(dir.path()).unwrap();
        assert!(!path.exists());
    }
}
