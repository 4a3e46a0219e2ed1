//! Where the gate keeps its admissions durably: an append-only file of JSON lines, fsynced
//! per admission, rewritten compacted from time to time. `StateLog` is the seam for other
//! places to keep them.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::durable::write_atomic;

/// One admission record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Entry {
    Dedupe { dedupe: String, at: DateTime<Utc> },
    Cooldown { rule: String, target: String, until: DateTime<Utc> },
}

impl Entry {
    /// The entry as one line of the log.
    pub fn line(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(self).expect("gate entries serialize");
        bytes.push(b'\n');
        bytes
    }
}

/// Keeps admission records durably. Both calls block (they fsync); the gate makes them off
/// the async threads and without holding the lock intake needs.
pub trait StateLog: Send + Sync + 'static {
    /// Appends lines; returns once they are durable.
    fn append(&self, lines: &[u8]) -> std::io::Result<()>;
    /// Replaces everything with what `snapshot` returns, atomically. `snapshot` is called
    /// with appends held off, so none is lost between taking it and writing it.
    fn rewrite(&self, snapshot: &mut dyn FnMut() -> Vec<u8>) -> std::io::Result<()>;
}

/// `<dir>/gate.jsonl`.
pub struct FileLog {
    path: PathBuf,
    /// Appends go through one handle; a rewrite swaps it for the new file's.
    file: Mutex<File>,
}

/// The log's file in a state directory.
pub fn state_file(dir: &Path) -> PathBuf {
    dir.join("gate.jsonl")
}

impl FileLog {
    /// Opens (creating) the log in `dir` and reads its entries. A line that does not read
    /// (cut short by a crash, or garbled, even into bytes that are not UTF-8) is skipped
    /// with a warning, and every line after it is still read.
    pub fn open(dir: &Path) -> std::io::Result<(FileLog, Vec<Entry>)> {
        std::fs::create_dir_all(dir)?;
        let path = state_file(dir);
        let mut entries = Vec::new();
        if let Ok(file) = File::open(&path) {
            for (number, line) in BufReader::new(file).split(b'\n').enumerate() {
                let line = line?;
                match serde_json::from_slice::<Entry>(&line) {
                    Ok(entry) => entries.push(entry),
                    Err(_) if line.is_empty() => {}
                    Err(_) => {
                        tracing::warn!(path = %path.display(), line = number + 1, "Unreadable gate state line skipped.")
                    }
                }
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok((FileLog { path, file: Mutex::new(file) }, entries))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl StateLog for FileLog {
    /// Appends, unless the file was deleted (say, with the whole storage directory) or
    /// replaced: appending to it would be appending to nothing, and the state would be lost
    /// at the next start. Then the caller rewrites the state whole.
    fn append(&self, lines: &[u8]) -> std::io::Result<()> {
        let mut file = self.file.lock().unwrap();
        let same = std::fs::metadata(&self.path).is_ok_and(|on_disk| {
            file.metadata().is_ok_and(|open| (open.dev(), open.ino()) == (on_disk.dev(), on_disk.ino()))
        });
        if !same {
            return Err(std::io::Error::new(
                ErrorKind::NotFound,
                format!("{} was removed", self.path.display()),
            ));
        }
        file.write_all(lines)?;
        file.sync_data()
    }

    fn rewrite(&self, snapshot: &mut dyn FnMut() -> Vec<u8>) -> std::io::Result<()> {
        let mut file = self.file.lock().unwrap();
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        write_atomic(&self.path, &snapshot())?;
        *file = OpenOptions::new().append(true).open(&self.path)?;
        Ok(())
    }
}
