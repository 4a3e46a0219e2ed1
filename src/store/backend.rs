//! What a store asks of where its bytes are: moved in, read, deleted, listed.

use std::io::Read;

use super::error::StoreError;
use super::staging::StagedFile;

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
