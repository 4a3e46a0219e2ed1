//! One target's recorded profiles on disk, `<storage.dir>/.recorder/<target>/` with one
//! file each, `<kind>-<from ms>-<to ms>.pb.gz`: the names are the index, rebuilt at start.
//! Only the list of names is in memory, so memory does not grow with what is kept.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::model::{ProfileKind, SegmentRef, Window};

/// One recorded profile: a CPU segment from `from` to `to`, or a snapshot taken at `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub kind: ProfileKind,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub bytes: u64,
    pub path: PathBuf,
}

impl Segment {
    pub fn reference(&self) -> SegmentRef {
        SegmentRef { from: self.from, to: self.to, bytes: self.bytes }
    }

    fn file_name(kind: ProfileKind, from: DateTime<Utc>, to: DateTime<Utc>) -> String {
        format!("{kind}-{}-{}.pb.gz", from.timestamp_millis(), to.timestamp_millis())
    }

    /// The segment a file name stands for, if it is one.
    fn parse(path: PathBuf, bytes: u64) -> Option<Segment> {
        let name = path.file_name()?.to_str()?.strip_suffix(".pb.gz")?;
        let mut parts = name.rsplitn(3, '-');
        let to = DateTime::from_timestamp_millis(parts.next()?.parse().ok()?)?;
        let from = DateTime::from_timestamp_millis(parts.next()?.parse().ok()?)?;
        let kind = ProfileKind::parse(parts.next()?)?;
        Some(Segment { kind, from, to, bytes, path })
    }
}

/// A segment opened for reading: the file stays readable however the tape is pruned
/// meanwhile.
pub struct Opened {
    pub segment: Segment,
    pub file: fs::File,
}

/// How much a tape holds of one kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holding {
    pub segments: usize,
    pub bytes: u64,
    pub oldest: Option<DateTime<Utc>>,
    pub newest: Option<DateTime<Utc>>,
}

pub struct Tape {
    dir: PathBuf,
    /// Oldest first, by `to`.
    segments: Mutex<Vec<Segment>>,
    /// Counts segments added, for those waiting for one.
    added: watch::Sender<u64>,
}

impl Tape {
    /// Opens (creating) a target's directory and lists what an earlier run recorded there;
    /// anything else in it (a part left by a crash) is deleted.
    pub fn open(dir: &Path) -> std::io::Result<Tape> {
        fs::create_dir_all(dir)?;
        let mut segments = Vec::new();
        for entry in fs::read_dir(dir)?.flatten() {
            let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
            match Segment::parse(entry.path(), bytes).filter(|_| bytes > 0) {
                Some(segment) => segments.push(segment),
                None => {
                    fs::remove_file(entry.path()).ok();
                }
            }
        }
        segments.sort_by_key(|s| (s.to, s.from));
        Ok(Tape { dir: dir.to_path_buf(), segments: Mutex::new(segments), added: watch::channel(0).0 })
    }

    /// Moves a validated profile at `part` into the tape (a rename: `part` is on the same
    /// file system, under the storage dir).
    pub fn add(
        &self,
        kind: ProfileKind,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        part: &Path,
    ) -> std::io::Result<Segment> {
        fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(Segment::file_name(kind, from, to));
        let bytes = fs::metadata(part)?.len();
        fs::rename(part, &path)?;
        let segment = Segment { kind, from, to, bytes, path };
        {
            let mut segments = self.segments.lock().unwrap();
            let at = segments.partition_point(|s| (s.to, s.from) <= (to, from));
            segments.insert(at, segment.clone());
        }
        self.added.send_modify(|count| *count += 1);
        Ok(segment)
    }

    /// Deletes what ended before `now - keep`, then the oldest until at most `max_bytes`
    /// are kept. Returns how many were deleted.
    pub fn prune(&self, now: DateTime<Utc>, keep: std::time::Duration, max_bytes: u64) -> usize {
        let horizon = now - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
        let mut segments = self.segments.lock().unwrap();
        let mut total: u64 = segments.iter().map(|s| s.bytes).sum();
        let mut cut = 0;
        while cut < segments.len() && (segments[cut].to < horizon || total > max_bytes) {
            total -= segments[cut].bytes;
            cut += 1;
        }
        for segment in segments.drain(..cut) {
            fs::remove_file(&segment.path).ok();
        }
        cut
    }

    /// Deletes everything (the target is no longer recorded).
    pub fn clear(&self) {
        self.segments.lock().unwrap().clear();
        fs::remove_dir_all(&self.dir).ok();
    }

    /// The segments of `kind` that overlap `window`, oldest first; not opened, so that a
    /// window of hours holds no file open until each is read.
    pub fn overlapping(&self, kind: ProfileKind, window: Window) -> Vec<Segment> {
        let segments = self.segments.lock().unwrap();
        segments
            .iter()
            .filter(|s| s.kind == kind && s.to > window.from && s.from < window.to)
            .cloned()
            .collect()
    }

    /// The latest snapshot of `kind` taken at or before `at`, opened.
    pub fn at_or_before(&self, kind: ProfileKind, at: DateTime<Utc>) -> Option<Opened> {
        let segments = self.segments.lock().unwrap();
        open_all(segments.iter().rev().filter(|s| s.kind == kind && s.to <= at).take(1)).pop()
    }

    /// The earliest snapshot of `kind` taken after `at`, opened: the best there is when
    /// the recorder reaches back less far than asked.
    pub fn first_after(&self, kind: ProfileKind, at: DateTime<Utc>) -> Option<Opened> {
        let segments = self.segments.lock().unwrap();
        open_all(segments.iter().filter(|s| s.kind == kind && s.to > at).take(1)).pop()
    }

    /// When the latest segment of `kind` ends.
    pub fn recorded_until(&self, kind: ProfileKind) -> Option<DateTime<Utc>> {
        self.segments.lock().unwrap().iter().rev().find(|s| s.kind == kind).map(|s| s.to)
    }

    /// Waits until a segment of `kind` ends at or after `until`, or `deadline` passes;
    /// whether one did.
    pub async fn wait_until(
        &self,
        kind: ProfileKind,
        until: DateTime<Utc>,
        deadline: tokio::time::Instant,
    ) -> bool {
        let mut added = self.added.subscribe();
        loop {
            if self.recorded_until(kind).is_some_and(|end| end >= until) {
                return true;
            }
            match tokio::time::timeout_at(deadline, added.changed()).await {
                Ok(Ok(())) => continue,
                _ => return self.recorded_until(kind).is_some_and(|end| end >= until),
            }
        }
    }

    /// What the tape holds of `kind`.
    pub fn held(&self, kind: ProfileKind) -> Holding {
        let segments = self.segments.lock().unwrap();
        let mut held = Holding::default();
        for segment in segments.iter().filter(|s| s.kind == kind) {
            held.segments += 1;
            held.bytes += segment.bytes;
            held.oldest = Some(held.oldest.map_or(segment.from, |o| o.min(segment.from)));
            held.newest = Some(segment.to);
        }
        held
    }

    /// Bytes held of every kind.
    pub fn bytes(&self) -> u64 {
        self.segments.lock().unwrap().iter().map(|s| s.bytes).sum()
    }
}

fn open_all<'a>(segments: impl Iterator<Item = &'a Segment>) -> Vec<Opened> {
    segments
        .filter_map(|segment| {
            let file = fs::File::open(&segment.path).ok()?;
            Some(Opened { segment: segment.clone(), file })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testing::at;

    fn add(tape: &Tape, dir: &Path, kind: ProfileKind, from: i64, to: i64, bytes: usize) -> Segment {
        let part = dir.join("part");
        fs::write(&part, vec![1u8; bytes]).unwrap();
        tape.add(kind, at(from), at(to), &part).unwrap()
    }

    /// Segments are found by window and by time, survive a reopen (their names are the
    /// index), and anything that is not a segment is cleared at open.
    #[test]
    fn find_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let tape_dir = dir.path().join("t");
        let tape = Tape::open(&tape_dir).unwrap();
        for i in 0..6 {
            add(&tape, dir.path(), ProfileKind::Cpu, i * 10, i * 10 + 10, 100);
        }
        add(&tape, dir.path(), ProfileKind::Heap, 15, 15, 50);
        add(&tape, dir.path(), ProfileKind::Heap, 30, 30, 50);
        let window = Window { from: at(12), to: at(31) };
        let found: Vec<i64> = tape
            .overlapping(ProfileKind::Cpu, window)
            .iter()
            .map(|segment| segment.from.timestamp() - at(0).timestamp())
            .collect();
        assert_eq!(found, [10, 20, 30]);
        assert_eq!(tape.at_or_before(ProfileKind::Heap, at(29)).unwrap().segment.to, at(15));
        assert_eq!(tape.at_or_before(ProfileKind::Heap, at(30)).unwrap().segment.to, at(30));
        assert!(tape.at_or_before(ProfileKind::Heap, at(14)).is_none());
        assert_eq!(tape.first_after(ProfileKind::Heap, at(14)).unwrap().segment.to, at(15));
        assert_eq!(tape.recorded_until(ProfileKind::Cpu), Some(at(60)));
        fs::write(tape_dir.join("cpu-1-2.pb.gz.part"), b"x").unwrap();
        fs::write(tape_dir.join("heap-5-5.pb.gz"), b"").unwrap();
        let reopened = Tape::open(&tape_dir).unwrap();
        assert_eq!(reopened.held(ProfileKind::Cpu).segments, 6);
        assert_eq!(
            reopened.held(ProfileKind::Heap),
            Holding { segments: 2, bytes: 100, oldest: Some(at(15)), newest: Some(at(30)) }
        );
        assert_eq!(fs::read_dir(&tape_dir).unwrap().count(), 8, "the part and the empty file are gone");
    }

    /// Pruning drops what is older than `keep`, then the oldest over `max_bytes`, files
    /// and all; a segment opened before it was pruned stays readable.
    #[test]
    fn prune_by_age_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let tape = Tape::open(&dir.path().join("t")).unwrap();
        for i in 0..10 {
            add(&tape, dir.path(), ProfileKind::Cpu, i * 10, i * 10 + 10, 100);
        }
        let opened = tape.at_or_before(ProfileKind::Cpu, at(10)).unwrap();
        assert_eq!(tape.prune(at(100), Duration::from_secs(60), u64::MAX), 3, "ended before 40");
        assert_eq!(tape.prune(at(100), Duration::from_secs(60), 350), 4, "700 bytes down to 300");
        assert_eq!(tape.held(ProfileKind::Cpu).oldest, Some(at(70)));
        assert_eq!(fs::read_dir(dir.path().join("t")).unwrap().count(), 3);
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut &opened.file, &mut text).unwrap();
        assert_eq!(text.len(), 100);
    }

    /// A wait ends as soon as a segment reaches the time asked for, or at the deadline.
    #[tokio::test]
    async fn wait_for_a_segment() {
        let dir = tempfile::tempdir().unwrap();
        let tape = std::sync::Arc::new(Tape::open(&dir.path().join("t")).unwrap());
        let soon = tokio::time::Instant::now() + Duration::from_millis(50);
        assert!(!tape.wait_until(ProfileKind::Cpu, at(10), soon).await);
        let writer = tape.clone();
        let part_dir = dir.path().to_path_buf();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            add(&writer, &part_dir, ProfileKind::Cpu, 0, 5, 1);
            add(&writer, &part_dir, ProfileKind::Cpu, 5, 10, 1);
        });
        let later = tokio::time::Instant::now() + Duration::from_secs(10);
        assert!(tape.wait_until(ProfileKind::Cpu, at(10), later).await);
    }
}
