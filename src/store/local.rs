//! The local directory as a store's backend: every key a file under `storage.dir`, every
//! write a temp file or staged body, fsync and rename.

use std::fs;
use std::path::{Path, PathBuf};

use super::backend::{Backend, Listed, StoredFile};
use super::error::StoreError;
use super::staging::StagedFile;
use crate::durable::{move_into_place, remove_if_present, sync_dir, write_atomic};

pub struct LocalBackend {
    dir: PathBuf,
}

impl LocalBackend {
    /// Opens (creating) the directory, checks it can be written, and deletes the temp files
    /// a crash left in the targets' directories.
    pub fn open(dir: &Path) -> Result<LocalBackend, StoreError> {
        fs::create_dir_all(dir).map_err(StoreError::io("create", dir))?;
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
        let backend = LocalBackend { dir: dir.to_path_buf() };
        for target_dir in backend.target_dirs()? {
            for entry in fs::read_dir(&target_dir).map_err(StoreError::io("read", &target_dir))?.flatten() {
                if entry.file_name().to_string_lossy().contains(".tmp-") {
                    fs::remove_file(entry.path()).ok();
                }
            }
        }
        Ok(backend)
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// The targets' directories: every directory whose name does not start with a dot.
    fn target_dirs(&self) -> Result<Vec<PathBuf>, StoreError> {
        let entries = fs::read_dir(&self.dir).map_err(StoreError::io("read", &self.dir))?;
        Ok(entries
            .flatten()
            .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
            .map(|entry| entry.path())
            .filter(|path| path.is_dir())
            .collect())
    }
}

impl Backend for LocalBackend {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn put_file(&self, key: &str, body: StagedFile) -> Result<(), StoreError> {
        let dest = self.path(key);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(StoreError::io("create", parent))?;
        }
        move_into_place(body.path(), &dest).map_err(StoreError::io("move into place", &dest))?;
        body.into_path();
        Ok(())
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.path(key);
        let parent = path.parent().unwrap_or(&self.dir);
        fs::create_dir_all(parent).map_err(StoreError::io("create", parent))?;
        write_atomic(&path, bytes).map_err(StoreError::io("write", &path))?;
        sync_dir(parent);
        Ok(())
    }

    fn open(&self, key: &str) -> Result<Option<StoredFile>, StoreError> {
        let path = self.path(key);
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(StoreError::Io { action: "open", path, source: error }),
        };
        let len = file.metadata().map_err(StoreError::io("stat", &path))?.len();
        let name = key.rsplit('/').next().unwrap_or(key).to_string();
        Ok(Some(StoredFile { reader: Box::new(file), len, name }))
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key);
        remove_if_present(&path).map_err(StoreError::io("delete", &path))
    }

    fn list(&self) -> Result<Vec<Listed>, StoreError> {
        let mut listed = Vec::new();
        for target_dir in self.target_dirs()? {
            let target = target_dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
            for entry in fs::read_dir(&target_dir).map_err(StoreError::io("read", &target_dir))?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Ok(metadata) = entry.metadata() else { continue };
                if name.starts_with('.') || !metadata.is_file() {
                    continue;
                }
                let version = metadata.modified().ok().map(|at| format!("{at:?}"));
                listed.push(Listed { key: format!("{target}/{name}"), size: metadata.len(), version });
            }
        }
        Ok(listed)
    }
}
