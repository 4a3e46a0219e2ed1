//! An S3-compatible bucket as a store's backend, shared by every instance: every key an
//! object under the bucket's prefix. Only the targets' directories are listed, not the
//! claims the gate keeps beside them.

use std::sync::Arc;

use bytes::Bytes;

use super::backend::{Backend, Listed, StoredFile};
use super::error::StoreError;
use super::staging::StagedFile;
use crate::bucket::{Bucket, BucketError};

pub struct ObjectBackend {
    bucket: Arc<Bucket>,
}

impl ObjectBackend {
    pub fn new(bucket: Arc<Bucket>) -> ObjectBackend {
        ObjectBackend { bucket }
    }
}

impl Backend for ObjectBackend {
    fn describe(&self) -> String {
        self.bucket.url().to_string()
    }

    fn put_file(&self, key: &str, body: StagedFile) -> Result<(), StoreError> {
        self.bucket.upload(key, body.path())?;
        Ok(())
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.bucket.put(key, Bytes::copy_from_slice(bytes))?;
        Ok(())
    }

    fn open(&self, key: &str) -> Result<Option<StoredFile>, StoreError> {
        match self.bucket.reader(key) {
            Ok((reader, len)) => {
                let name = key.rsplit('/').next().unwrap_or(key).to_string();
                Ok(Some(StoredFile { reader, len, name }))
            }
            Err(BucketError::NotFound(_)) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        Ok(self.bucket.delete(key)?)
    }

    fn list(&self) -> Result<Vec<Listed>, StoreError> {
        let mut listed = Vec::new();
        for dir in self.bucket.dirs()?.iter().filter(|dir| !dir.starts_with('.')) {
            let objects = self.bucket.list(dir)?;
            listed.extend(objects.into_iter().map(|object| Listed {
                key: object.key,
                size: object.size,
                version: object.e_tag,
            }));
        }
        Ok(listed)
    }

    fn shared(&self) -> bool {
        true
    }
}
