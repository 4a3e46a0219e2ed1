//! Writes that survive a crash: a reader sees a file's old content or its new, never a
//! part, and what was moved into place stays there. Every write of state or profiles goes
//! through here.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Makes every temp file's name unique, within this process too: two writers of one path
/// at once (two first requests for one flame graph) must not share a temp file.
static TEMP: AtomicU64 = AtomicU64::new(0);

/// A writer that counts and hashes (SHA-256) what passes through it: a file's size and
/// digest are known once it is written, without reading it back.
pub struct Hashed<W> {
    inner: W,
    hasher: sha2::Sha256,
    bytes: u64,
}

impl<W: Write> Hashed<W> {
    pub fn new(inner: W) -> Hashed<W> {
        Hashed { inner, hasher: sha2::Digest::new(), bytes: 0 }
    }

    /// Flushes, and gives back the writer, the bytes written and their SHA-256 in hex.
    pub fn finish(mut self) -> std::io::Result<(W, u64, String)> {
        self.inner.flush()?;
        Ok((self.inner, self.bytes, hex::encode(sha2::Digest::finalize(self.hasher))))
    }
}

impl<W: Write> Write for Hashed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory, fsync, rename,
/// fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp =
        dir.join(format!(".{name}.tmp-{}-{}", std::process::id(), TEMP.fetch_add(1, Ordering::Relaxed)));
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    };
    write().inspect_err(|_| {
        fs::remove_file(&temp).ok();
    })?;
    sync_dir(dir);
    Ok(())
}

/// Moves a complete file into place: fsync of its content, rename (same file system), fsync
/// of the directory. Nothing is copied, however large the file.
pub fn move_into_place(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::File::open(from)?.sync_all()?;
    fs::rename(from, to)?;
    sync_dir(to.parent().unwrap_or(Path::new(".")));
    Ok(())
}

/// Makes a directory's entries (a rename, a new file) durable.
pub fn sync_dir(dir: &Path) {
    if let Ok(handle) = fs::File::open(dir) {
        handle.sync_all().ok();
    }
}

/// Deletes a file; one that is already gone is no error.
pub fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write replaces the file whole and leaves no temp file; a move keeps the content and
    /// removes the source; removing what is gone is fine.
    #[test]
    fn writes_and_moves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let moved = dir.path().join("moved");
        move_into_place(&path, &moved).unwrap();
        assert_eq!(fs::read(&moved).unwrap(), b"two");
        assert!(!path.exists());
        remove_if_present(&path).unwrap();
        assert!(write_atomic(&dir.path().join("absent/x"), b"x").is_err());
    }

    /// Many writers of one path at once: each write is whole, none fails, and what stays
    /// is one of them, whole.
    #[test]
    fn writers_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.svg");
        let writers: Vec<_> = (0..40u8)
            .map(|n| {
                let path = path.clone();
                std::thread::spawn(move || write_atomic(&path, &vec![n; 256 << 10]))
            })
            .collect();
        for writer in writers {
            writer.join().unwrap().unwrap();
        }
        let kept = fs::read(&path).unwrap();
        assert_eq!(kept.len(), 256 << 10);
        assert!(kept.iter().all(|byte| *byte == kept[0]), "a mix of writes");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left");
    }
}
