//! Names for sampled addresses: each binary read once (through the file opened while its
//! process lived) and kept by build id, so captures of the same service share the work.

mod elf;
mod frame;
mod gomodule;
mod gopclntab;

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;

use object::ReadCache;

use super::error::BinaryError;
use elf::{ElfSymbols, LoadSegment};
pub(super) use frame::SymbolFrame;
use gopclntab::GoTable;

/// How a binary is known in the cache: by build id, which names the exact build across
/// hosts and containers, else by the file itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum BinaryKey {
    BuildId(String),
    File { device: u64, inode: u64, size: u64, modified: i64 },
}

/// What one binary tells: where it loads, Go's table if it is a Go binary, ELF symbols.
#[derive(Debug)]
pub(super) struct BinarySymbols {
    pub build_id: Option<String>,
    segments: Vec<LoadSegment>,
    go: Option<GoTable>,
    elf: ElfSymbols,
}

impl BinarySymbols {
    fn load(file: &File) -> Result<BinarySymbols, BinaryError> {
        let cache = ReadCache::new(file);
        let object = object::File::parse(&cache).map_err(|source| BinaryError::NotElf { source })?;
        let go = gomodule::load(&object);
        // A Go binary's C parts (cgo) have ELF symbols; its DWARF would only repeat the
        // pclntab, at a far higher cost.
        let elf = ElfSymbols::load(&object, !matches!(go, Ok(Some(_))));
        let go = match go {
            // An unreadable Go table (Go before 1.16) leaves the ELF symbols, if any.
            Err(error) if elf.is_empty() => return Err(error),
            go => go.ok().flatten(),
        };
        Ok(BinarySymbols { build_id: elf::build_id(&object), segments: elf::load_segments(&object), go, elf })
    }

    /// The address in the binary's own terms of byte `offset` of its file.
    pub fn address(&self, offset: u64) -> Option<u64> {
        let segment = self
            .segments
            .iter()
            .find(|segment| (segment.offset..segment.offset + segment.size).contains(&offset))?;
        Some(offset - segment.offset + segment.address)
    }

    /// Frames at `address` (in the binary's terms), innermost first; empty if nothing
    /// names it.
    pub fn frames(&self, address: u64) -> Vec<SymbolFrame> {
        self.go.as_ref().and_then(|go| go.frames(address)).unwrap_or_else(|| self.elf.frames(address))
    }

    /// Whether the code at `address` runs without a frame of its own, so a sample there
    /// must take its caller from the top of the stack. Known for Go code only (its pcsp
    /// table); elsewhere the frame-pointer walk stands.
    pub fn frameless_at(&self, address: u64) -> bool {
        self.go.as_ref().and_then(|go| go.frameless_at(address)).unwrap_or(false)
    }

    pub fn has_functions(&self) -> bool {
        self.go.is_some() || !self.elf.is_empty()
    }

    /// Whether frames carry files, lines and inlined calls.
    pub fn has_lines(&self) -> bool {
        self.go.is_some() || self.elf.has_dwarf()
    }
}

/// A cache entry, with when it was last used for eviction.
#[derive(Debug)]
struct Cached {
    symbols: BinarySymbols,
    last_used: u64,
}

/// The symbol cache: binaries read once, kept by build id across captures. Give every
/// capture of a service the same one (it is `Send`; use it from one thread at a time).
#[derive(Debug)]
pub struct Symbolizer {
    binaries: HashMap<BinaryKey, Cached>,
    /// Binaries kept at most; the least recently used go first, never one of the
    /// capture being written.
    capacity: usize,
    /// Counts captures, to tell which entries the current one uses.
    capture: u64,
}

impl Default for Symbolizer {
    fn default() -> Symbolizer {
        Symbolizer::new()
    }
}

impl Symbolizer {
    /// A cache of up to 64 binaries.
    pub fn new() -> Symbolizer {
        Symbolizer::with_capacity(64)
    }

    pub fn with_capacity(capacity: usize) -> Symbolizer {
        Symbolizer { binaries: HashMap::new(), capacity, capture: 0 }
    }

    /// How many binaries are cached.
    pub fn len(&self) -> usize {
        self.binaries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.binaries.is_empty()
    }

    /// Starts a capture: entries used from now on are not evicted until the next.
    pub(super) fn begin_capture(&mut self) {
        self.capture += 1;
    }

    /// Reads `file`'s symbols unless a binary of the same build id is cached.
    pub(super) fn open(&mut self, file: &File) -> Result<BinaryKey, BinaryError> {
        let key = key_of(file)?;
        if let Some(cached) = self.binaries.get_mut(&key) {
            cached.last_used = self.capture;
            return Ok(key);
        }
        let symbols = BinarySymbols::load(file)?;
        self.evict();
        self.binaries.insert(key.clone(), Cached { symbols, last_used: self.capture });
        Ok(key)
    }

    pub(super) fn get(&self, key: &BinaryKey) -> Option<&BinarySymbols> {
        self.binaries.get(key).map(|cached| &cached.symbols)
    }

    fn evict(&mut self) {
        while self.binaries.len() >= self.capacity.max(1) {
            let oldest = self
                .binaries
                .iter()
                .filter(|(_, cached)| cached.last_used < self.capture)
                .min_by_key(|(_, cached)| cached.last_used);
            let Some(key) = oldest.map(|(key, _)| key.clone()) else { return };
            self.binaries.remove(&key);
        }
    }
}

/// The build id of `file`, read from its headers and notes only; else its identity.
fn key_of(file: &File) -> Result<BinaryKey, BinaryError> {
    let cache = ReadCache::new(file);
    let object = object::File::parse(&cache).map_err(|source| BinaryError::NotElf { source })?;
    if let Some(id) = elf::build_id(&object) {
        return Ok(BinaryKey::BuildId(id));
    }
    let meta = file.metadata().map_err(|source| BinaryError::Read { source })?;
    Ok(BinaryKey::File { device: meta.dev(), inode: meta.ino(), size: meta.size(), modified: meta.mtime() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(symbolizer: &mut Symbolizer, path: &str) -> BinaryKey {
        symbolizer.open(&File::open(path).unwrap()).unwrap()
    }

    /// Binaries are kept by build id across captures, up to the capacity: the least
    /// recently used goes first, never one the capture at hand uses.
    #[test]
    fn cache_keeps_binaries_by_build_id_within_its_capacity() {
        let mut symbolizer = Symbolizer::with_capacity(1);
        symbolizer.begin_capture();
        let shell = open(&mut symbolizer, "/bin/sh");
        assert!(matches!(&shell, BinaryKey::BuildId(id) if id.len() == 40), "{shell:?}");
        let list = open(&mut symbolizer, "/bin/ls");
        assert_eq!(symbolizer.len(), 2, "both kept while their capture runs");
        symbolizer.begin_capture();
        assert_eq!(open(&mut symbolizer, "/bin/ls"), list);
        assert_eq!(symbolizer.len(), 2, "a hit reads nothing new");
        open(&mut symbolizer, "/bin/true");
        assert!(symbolizer.get(&shell).is_none(), "the least recently used went");
        assert!(symbolizer.get(&list).is_some());
        assert_eq!(symbolizer.len(), 2);
    }

    /// Something that is not ELF is refused as such.
    #[test]
    fn not_elf_is_refused() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), b"#!/bin/sh\necho hi\n").unwrap();
        let error = Symbolizer::new().open(&File::open(file.path()).unwrap()).unwrap_err();
        assert!(matches!(error, BinaryError::NotElf { .. }), "{error:?}");
    }
}
