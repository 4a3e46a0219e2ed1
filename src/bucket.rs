//! An S3-compatible bucket under a prefix, reached through the `object_store` crate, with
//! blocking calls for the store's blocking seam. Its requests run on a small runtime of its
//! own, so a call works from any thread: a blocking pool thread, a test, or start-up.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{
    ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    UpdateVersion,
};

use crate::config::ObjectStoreConfig;

/// How long one request may take, and how long it and its retries may take together: a
/// bucket that cannot be reached fails a capture in seconds, not minutes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RETRYING: Duration = Duration::from_secs(20);

/// Why a request to the bucket failed, said for a person.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BucketError {
    #[error("{0} is not in the bucket")]
    NotFound(String),
    /// A conditional write lost: the object exists (create) or changed (update).
    #[error("{0} was written meanwhile by someone else")]
    Conflict(String),
    #[error("{0}")]
    Failed(String),
}

/// A bucket's object: its key under the prefix, size and version.
#[derive(Debug, Clone)]
pub struct Object {
    /// Relative to the prefix: `target/id.json`.
    pub key: String,
    pub size: u64,
    pub e_tag: Option<String>,
    /// When it was last written, as the bucket's listing says (`None` from writes).
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    url: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Bucket {
    pub fn open(config: &ObjectStoreConfig) -> Result<Bucket, BucketError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_connect_timeout(CONNECT_TIMEOUT)
                    .with_allow_http(true),
            )
            .with_retry(RetryConfig { max_retries: 3, retry_timeout: RETRYING, ..RetryConfig::default() });
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint.as_str().trim_end_matches('/'));
        }
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        if let (Some(key), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            builder = builder.with_access_key_id(key.expose()).with_secret_access_key(secret.expose());
        }
        let store = builder.build().map_err(|error| BucketError::Failed(error.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("alertprof-bucket")
            .enable_all()
            .build()
            .map_err(|error| BucketError::Failed(format!("cannot start the bucket's runtime: {error}")))?;
        Ok(Bucket {
            store: Arc::new(store),
            prefix: config.prefix.clone(),
            url: config.url(),
            runtime: Some(runtime),
        })
    }

    /// `s3://bucket/prefix`, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn key(&self, key: &str) -> Key {
        match self.prefix.is_empty() {
            true => Key::from(key),
            false => Key::from(format!("{}/{key}", self.prefix)),
        }
    }

    /// Runs `work` on the bucket's runtime and waits for it.
    fn run<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let runtime = self.runtime.as_ref().expect("taken only on drop");
        runtime.spawn(async move { tx.send(work.await).ok() });
        rx.recv().expect("the bucket's runtime runs while the bucket lives")
    }

    pub fn put(&self, key: &str, bytes: Bytes) -> Result<Object, BucketError> {
        self.put_mode(key, bytes, PutMode::Overwrite)
    }

    /// Writes `key` only if it does not exist (`If-None-Match: *`).
    pub fn create(&self, key: &str, bytes: Bytes) -> Result<Object, BucketError> {
        self.put_mode(key, bytes, PutMode::Create)
    }

    /// Writes `key` only if it is still at `e_tag` (`If-Match`).
    pub fn update(&self, key: &str, bytes: Bytes, e_tag: &str) -> Result<Object, BucketError> {
        let version = UpdateVersion { e_tag: Some(e_tag.to_string()), version: None };
        self.put_mode(key, bytes, PutMode::Update(version))
    }

    fn put_mode(&self, key: &str, bytes: Bytes, mode: PutMode) -> Result<Object, BucketError> {
        let (store, path, name) = (self.store.clone(), self.key(key), key.to_string());
        let size = bytes.len() as u64;
        self.run(async move {
            let options = PutOptions { mode, ..PutOptions::default() };
            match store.put_opts(&path, PutPayload::from_bytes(bytes), options).await {
                Ok(put) => Ok(Object { key: name, size, e_tag: put.e_tag, modified: None }),
                Err(error) => Err(failed(&name, "write", error)),
            }
        })
    }

    /// Uploads the file at `path` to `key` in parts of 8 MiB, never holding more than
    /// a few parts.
    pub fn upload(&self, key: &str, path: &std::path::Path) -> Result<Object, BucketError> {
        const PART: usize = 8 << 20;
        let size = std::fs::metadata(path)
            .map_err(|error| BucketError::Failed(format!("cannot read {}: {error}", path.display())))?
            .len();
        if size <= PART as u64 {
            let bytes = std::fs::read(path)
                .map_err(|error| BucketError::Failed(format!("cannot read {}: {error}", path.display())))?;
            return self.put(key, Bytes::from(bytes));
        }
        let (store, dest, name, source) =
            (self.store.clone(), self.key(key), key.to_string(), path.to_path_buf());
        self.run(async move {
            use tokio::io::AsyncReadExt;
            let upload =
                store.put_multipart(&dest).await.map_err(|error| failed(&name, "start uploading", error))?;
            let mut write = object_store::WriteMultipart::new_with_chunk_size(upload, PART);
            let mut file = tokio::fs::File::open(&source)
                .await
                .map_err(|error| BucketError::Failed(format!("cannot read {}: {error}", source.display())))?;
            let mut buffer = vec![0u8; 1 << 20];
            loop {
                let n = match file.read(&mut buffer).await {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(error) => {
                        write.abort().await.ok();
                        return Err(BucketError::Failed(format!(
                            "cannot read {}: {error}",
                            source.display()
                        )));
                    }
                };
                if let Err(error) = write.wait_for_capacity(2).await {
                    return Err(failed(&name, "upload", error));
                }
                write.write(&buffer[..n]);
            }
            let put = write.finish().await.map_err(|error| failed(&name, "upload", error))?;
            Ok(Object { key: name, size, e_tag: put.e_tag, modified: None })
        })
    }

    /// The whole of `key`, with its version.
    pub fn get(&self, key: &str) -> Result<(Bytes, Object), BucketError> {
        let (store, path, name) = (self.store.clone(), self.key(key), key.to_string());
        self.run(async move {
            let got = store.get(&path).await.map_err(|error| failed(&name, "read", error))?;
            let object = Object {
                key: name.clone(),
                size: got.meta.size,
                e_tag: got.meta.e_tag.clone(),
                modified: Some(got.meta.last_modified),
            };
            let bytes = got.bytes().await.map_err(|error| failed(&name, "read", error))?;
            Ok((bytes, object))
        })
    }

    /// `key` as a reader that pulls its body as it is read, a few chunks at a time.
    pub fn reader(&self, key: &str) -> Result<(Box<dyn std::io::Read + Send>, u64), BucketError> {
        let (store, path, name) = (self.store.clone(), self.key(key), key.to_string());
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let size = self.run(async move {
            let got = store.get(&path).await.map_err(|error| failed(&name, "read", error))?;
            let size = got.meta.size;
            let mut stream = got.into_stream();
            tokio::spawn(async move {
                // A reader dropped early closes the channel, and the download stops.
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(std::io::Error::other);
                    let stop = chunk.is_err();
                    if tx.send(chunk).await.is_err() || stop {
                        break;
                    }
                }
            });
            Ok::<_, BucketError>(size)
        })?;
        Ok((Box::new(ChunkReader { rx, current: Bytes::new(), remaining: size }), size))
    }

    pub fn delete(&self, key: &str) -> Result<(), BucketError> {
        let (store, path, name) = (self.store.clone(), self.key(key), key.to_string());
        self.run(async move {
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(error) => Err(failed(&name, "delete", error)),
            }
        })
    }

    /// The names of the directories right under the prefix (`.claims` among them): one
    /// listing with a delimiter, which names each directory once, whatever it holds.
    pub fn dirs(&self) -> Result<Vec<String>, BucketError> {
        let store = self.store.clone();
        let root = (!self.prefix.is_empty()).then(|| Key::from(self.prefix.as_str()));
        let url = self.url.clone();
        self.run(async move {
            let listed = store
                .list_with_delimiter(root.as_ref())
                .await
                .map_err(|error| failed(&url, "list", error))?;
            Ok(listed.common_prefixes.iter().filter_map(|dir| dir.filename().map(str::to_string)).collect())
        })
    }

    /// Every object under `dir` (relative to the prefix; empty for all).
    pub fn list(&self, dir: &str) -> Result<Vec<Object>, BucketError> {
        let store = self.store.clone();
        let root = match (self.prefix.is_empty(), dir.is_empty()) {
            (true, true) => None,
            _ => Some(self.key(dir.trim_end_matches('/'))),
        };
        let strip = match self.prefix.is_empty() {
            true => String::new(),
            false => format!("{}/", self.prefix),
        };
        let url = self.url.clone();
        self.run(async move {
            let mut listing = store.list(root.as_ref());
            let mut objects = Vec::new();
            while let Some(item) = listing.next().await {
                let ObjectMeta { location, size, e_tag, last_modified, .. } =
                    item.map_err(|error| failed(&url, "list", error))?;
                let key = location.as_ref().strip_prefix(strip.as_str()).unwrap_or(location.as_ref());
                objects.push(Object { key: key.to_string(), size, e_tag, modified: Some(last_modified) });
            }
            Ok(objects)
        })
    }
}

impl Drop for Bucket {
    fn drop(&mut self) {
        // Dropped from anywhere, an async context included: nothing waits for its tasks.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn failed(key: &str, action: &str, error: object_store::Error) -> BucketError {
    match error {
        object_store::Error::NotFound { .. } => BucketError::NotFound(key.to_string()),
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            BucketError::Conflict(key.to_string())
        }
        other => BucketError::Failed(format!("cannot {action} {key}: {}", plain(&other))),
    }
}

/// An error and its causes in one line, each said once.
fn plain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(error) = next {
        let text = error.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        next = error.source();
    }
    parts.join(": ")
}

struct ChunkReader {
    /// Read on a blocking thread (the store's calls are made off the async threads).
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    current: Bytes,
    /// What the object's size says is still to come: a body cut short is an error, not
    /// the end.
    remaining: u64,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None if self.remaining == 0 => return Ok(0),
                None => {
                    let message = format!("the download ended {} bytes short", self.remaining);
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, message));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        self.remaining = self.remaining.saturating_sub(n as u64);
        Ok(n)
    }
}
