//! What each sampled process has mapped executable, from `/proc/PID/maps` at the start and
//! MMAP2 records after, and the binaries behind the mappings, opened while the process lives.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::error::{BinaryError, PerfError};

/// An index into [`Mappings::ranges`].
pub(super) type MappingId = u32;
/// An index into [`Mappings::binaries`].
pub(super) type BinaryId = u32;

/// One executable mapping of one process, as the profile's `Mapping` will show it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct MappedRange {
    pub pid: u32,
    pub start: u64,
    pub end: u64,
    /// Offset into the file of `start`.
    pub pgoff: u64,
    /// As the process names it: a path in its mount namespace, or `[vdso]` and the like.
    pub path: PathBuf,
    /// The file behind it, if it is one.
    pub binary: Option<BinaryId>,
}

/// A file a process has mapped, opened through `/proc/PID/root` when it was first seen,
/// so it can be read after the process is gone.
#[derive(Debug)]
pub(super) struct BinaryFile {
    pub path: PathBuf,
    pub file: Result<File, BinaryError>,
}

/// A new executable mapping, from a maps line or an MMAP2 record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NewMapping {
    pub start: u64,
    pub end: u64,
    pub pgoff: u64,
    pub path: PathBuf,
    /// `/proc/PID/maps` said `(deleted)`: the file at `path` is not the one mapped.
    pub deleted: bool,
}

/// Every process's current executable mappings, and every mapping and binary seen.
#[derive(Debug, Default)]
pub(super) struct Mappings {
    /// Per process: start address → mapping, non-overlapping.
    processes: HashMap<u32, BTreeMap<u64, MappingId>>,
    pub ranges: Vec<MappedRange>,
    range_ids: HashMap<MappedRange, MappingId>,
    pub binaries: Vec<BinaryFile>,
    /// Keyed by (pid, path): the same path can be another file in another container.
    binary_ids: HashMap<(u32, PathBuf), BinaryId>,
}

impl Mappings {
    /// Whether `pid`'s mappings are known (read from procfs or inherited on fork).
    pub fn knows(&self, pid: u32) -> bool {
        self.processes.contains_key(&pid)
    }

    /// Reads `pid`'s executable mappings from `{proc_root}/PID/maps`. A process that is
    /// gone is known with no mappings; its frames stay unsymbolized.
    pub fn load(&mut self, proc_root: &Path, pid: u32) -> Result<(), PerfError> {
        let path = proc_root.join(pid.to_string()).join("maps");
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(error) if gone(&error) => {
                self.processes.entry(pid).or_default();
                return Ok(());
            }
            Err(source) => return Err(PerfError::proc(path, source)),
        };
        self.processes.entry(pid).or_default();
        for mapping in text.split(|&byte| byte == b'\n').filter_map(parse_maps_line) {
            self.add(proc_root, pid, mapping);
        }
        Ok(())
    }

    /// A child process starts with its parent's mappings.
    pub fn fork(&mut self, parent: u32, child: u32) {
        let inherited = self.processes.get(&parent).cloned().unwrap_or_default();
        let child_maps = self.processes.entry(child).or_default();
        child_maps.clear();
        for id in inherited.values() {
            let range = MappedRange { pid: child, ..self.ranges[*id as usize].clone() };
            let id = intern(&mut self.ranges, &mut self.range_ids, range);
            child_maps.insert(self.ranges[id as usize].start, id);
        }
    }

    /// Maps `mapping` into `pid`, replacing whatever it overlaps.
    pub fn add(&mut self, proc_root: &Path, pid: u32, mapping: NewMapping) {
        let binary = self.binary(proc_root, pid, &mapping);
        let range = MappedRange {
            pid,
            start: mapping.start,
            end: mapping.end,
            pgoff: mapping.pgoff,
            path: mapping.path,
            binary,
        };
        let (ranges, maps) = (&self.ranges, self.processes.entry(pid).or_default());
        // Mappings do not overlap, so walking down from the new end, the first one that
        // ends before the new start is where the overlap stops.
        let starts: Vec<u64> = maps
            .range(..range.end)
            .rev()
            .take_while(|(_, id)| ranges[**id as usize].end > range.start)
            .map(|(start, _)| *start)
            .collect();
        let overlapped: Vec<MappingId> = starts.iter().filter_map(|start| maps.remove(start)).collect();
        for id in overlapped {
            self.keep_outside(pid, id, range.start, range.end);
        }
        let (start, id) = (range.start, intern(&mut self.ranges, &mut self.range_ids, range));
        self.processes.entry(pid).or_default().insert(start, id);
    }

    /// Keeps the parts of mapping `id` outside `[start, end)`, which a new mapping took.
    fn keep_outside(&mut self, pid: u32, id: MappingId, start: u64, end: u64) {
        let old = self.ranges[id as usize].clone();
        let mut parts = Vec::new();
        if old.start < start {
            parts.push(MappedRange { end: start, ..old.clone() });
        }
        if old.end > end {
            parts.push(MappedRange { start: end, pgoff: old.pgoff + (end - old.start), ..old });
        }
        for part in parts {
            let start = part.start;
            let id = intern(&mut self.ranges, &mut self.range_ids, part);
            self.processes.entry(pid).or_default().insert(start, id);
        }
    }

    /// The mapping of `pid` that holds `address`.
    pub fn find(&self, pid: u32, address: u64) -> Option<MappingId> {
        let (_, id) = self.processes.get(&pid)?.range(..=address).next_back()?;
        (address < self.ranges[*id as usize].end).then_some(*id)
    }

    /// The binary behind `mapping`, opened once per process and path. Pseudo-paths
    /// (`[vdso]`, anonymous memory) have none.
    fn binary(&mut self, proc_root: &Path, pid: u32, mapping: &NewMapping) -> Option<BinaryId> {
        if !mapping.path.is_absolute() {
            return None;
        }
        let key = (pid, mapping.path.clone());
        if let Some(id) = self.binary_ids.get(&key) {
            return Some(*id);
        }
        let file = if mapping.deleted {
            Err(BinaryError::Deleted)
        } else {
            open_in_root(proc_root, pid, &mapping.path)
        };
        let id = self.binaries.len() as BinaryId;
        self.binaries.push(BinaryFile { path: mapping.path.clone(), file });
        self.binary_ids.insert(key, id);
        Some(id)
    }
}

fn intern(
    ranges: &mut Vec<MappedRange>,
    ids: &mut HashMap<MappedRange, MappingId>,
    range: MappedRange,
) -> MappingId {
    *ids.entry(range.clone()).or_insert_with(|| {
        ranges.push(range);
        (ranges.len() - 1) as MappingId
    })
}

/// Opens `path` as process `pid` sees it: through `/proc/PID/root`, so a container's own
/// files are read, not the host's of the same name.
fn open_in_root(proc_root: &Path, pid: u32, path: &Path) -> Result<File, BinaryError> {
    let relative = path.strip_prefix("/").unwrap_or(path);
    let full = proc_root.join(pid.to_string()).join("root").join(relative);
    File::open(full).map_err(|source| BinaryError::Open { source })
}

/// Whether a procfs read failed because the process is gone.
pub(super) fn gone(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::NotFound || error.raw_os_error() == Some(3 /* ESRCH */)
}

/// One line of `/proc/PID/maps`, if it maps something executable:
/// `00400000-00483000 r-xp 00000000 08:01 1234     /usr/bin/x (deleted)`.
pub(super) fn parse_maps_line(line: &[u8]) -> Option<NewMapping> {
    let mut rest = line;
    let mut field = || {
        let start = rest.iter().position(|byte| *byte != b' ')?;
        let trimmed = &rest[start..];
        let end = trimmed.iter().position(|byte| *byte == b' ').unwrap_or(trimmed.len());
        rest = &trimmed[end..];
        Some(&trimmed[..end])
    };
    let range = field()?;
    let perms = field()?;
    let offset = field()?;
    let (_device, _inode) = (field()?, field()?);
    if perms.get(2) != Some(&b'x') {
        return None;
    }
    let range = std::str::from_utf8(range).ok()?;
    let (start, end) = range.split_once('-')?;
    let hex = |text: &str| u64::from_str_radix(text, 16).ok();
    let name = rest.strip_prefix(b" ").unwrap_or(rest).trim_ascii_start();
    let (name, deleted) = match name.strip_suffix(b" (deleted)") {
        Some(name) => (name, true),
        None => (name, false),
    };
    Some(NewMapping {
        start: hex(start)?,
        end: hex(end)?,
        pgoff: hex(std::str::from_utf8(offset).ok()?)?,
        path: PathBuf::from(OsStr::from_bytes(name)),
        deleted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(start: u64, end: u64, pgoff: u64, path: &str) -> NewMapping {
        NewMapping { start, end, pgoff, path: path.into(), deleted: false }
    }

    /// Executable lines are read with their offset and path, spaces and `(deleted)` too;
    /// data mappings are skipped.
    #[test]
    fn maps_lines() {
        let line = b"55d0c8a00000-55d0c8a83000 r-xp 00001000 08:01 1234        /usr/bin/my app";
        assert_eq!(
            parse_maps_line(line),
            Some(mapping(0x55d0c8a00000, 0x55d0c8a83000, 0x1000, "/usr/bin/my app"))
        );
        let deleted = b"00400000-00483000 r-xp 00000000 08:01 99 /tmp/x (deleted)";
        assert_eq!(
            parse_maps_line(deleted),
            Some(NewMapping { deleted: true, ..mapping(0x400000, 0x483000, 0, "/tmp/x") })
        );
        let vdso = b"7ffd1a3f0000-7ffd1a3f2000 r-xp 00000000 00:00 0                          [vdso]";
        assert_eq!(parse_maps_line(vdso), Some(mapping(0x7ffd1a3f0000, 0x7ffd1a3f2000, 0, "[vdso]")));
        let anonymous = b"7f0000000000-7f0000001000 r-xp 00000000 00:00 0 ";
        assert_eq!(parse_maps_line(anonymous).map(|m| m.path), Some(PathBuf::new()));
        assert_eq!(parse_maps_line(b"00483000-004c1000 r--p 00083000 08:01 1234 /usr/bin/x"), None);
        assert_eq!(parse_maps_line(b""), None);
    }

    /// A new mapping over part of an old one keeps the old one's other parts, their file
    /// offsets moved; addresses resolve to whichever maps them now.
    #[test]
    fn overlapping_mappings_split() {
        let root = Path::new("/nonexistent-proc");
        let mut maps = Mappings::default();
        maps.add(root, 7, mapping(0x1000, 0x5000, 0, "[anon]"));
        maps.add(root, 7, mapping(0x2000, 0x3000, 0x10000, "[other]"));
        let at = |address| maps.find(7, address).map(|id| maps.ranges[id as usize].clone());
        assert_eq!(at(0x1800).map(|r| (r.start, r.end, r.pgoff)), Some((0x1000, 0x2000, 0)));
        assert_eq!(at(0x2800).map(|r| (r.start, r.pgoff)), Some((0x2000, 0x10000)));
        assert_eq!(at(0x4000).map(|r| (r.start, r.end, r.pgoff)), Some((0x3000, 0x5000, 0x2000)));
        assert_eq!(at(0x5000), None);
        assert_eq!(maps.find(8, 0x1800), None);
        maps.fork(7, 8);
        assert_eq!(maps.find(8, 0x2800).map(|id| maps.ranges[id as usize].pid), Some(8));
    }

    /// A binary that cannot be opened, or was deleted, is kept with why.
    #[test]
    fn unreadable_binaries_are_kept_with_the_reason() {
        let root = Path::new("/nonexistent-proc");
        let mut maps = Mappings::default();
        maps.add(root, 7, mapping(0x1000, 0x2000, 0, "/bin/x"));
        maps.add(root, 7, NewMapping { deleted: true, ..mapping(0x3000, 0x4000, 0, "/bin/y") });
        assert!(matches!(maps.binaries[0].file, Err(BinaryError::Open { .. })));
        assert!(matches!(maps.binaries[1].file, Err(BinaryError::Deleted)));
        assert_eq!(maps.binaries[1].path, Path::new("/bin/y"));
    }
}
