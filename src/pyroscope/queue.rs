//! The pushes waiting for Pyroscope, on disk: per push a JSON entry and the profile beside
//! it, bounded by count and bytes (the oldest goes first), read back in full after a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::{PushItem, PushMetrics, PushResult, PushSource};
use crate::durable;

const ENTRY_SUFFIX: &str = ".json";
const PROFILE_SUFFIX: &str = ".pb.gz";

/// How much the queue may hold. Hitting either bound drops the oldest of the recorder's
/// segments, and only when none is left the oldest capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Each push costs about 40 bytes of memory for as long as it waits (its number and
    /// size), and a file system entry or two.
    pub max_entries: usize,
    /// Entries and profiles together, as if every profile were a copy (most are hard links
    /// to the store's file until retention deletes it).
    pub max_bytes: u64,
}

impl Default for QueueLimits {
    /// About an hour of a busy recorder's 50 KiB segments (50 targets every 10 s).
    fn default() -> Self {
        QueueLimits { max_entries: 10_000, max_bytes: 512 << 20 }
    }
}

/// What waits: how many pushes, and their bytes on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Depth {
    pub entries: usize,
    pub bytes: u64,
}

/// Why the queue's directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot create the Pyroscope queue directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot read the Pyroscope queue directory {path}: {source}")]
    ReadDir { path: PathBuf, source: io::Error },
}

/// Why a push was not queued. `Expired` and `TooLarge` are counted as drops too.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("{name}: its retention ended at {expires_at}; not queued for Pyroscope")]
    Expired { name: String, expires_at: DateTime<Utc> },
    #[error("{name}: its profile ({bytes} bytes) is over the Pyroscope queue's {max_bytes} bytes")]
    TooLarge { name: String, bytes: u64, max_bytes: u64 },
    #[error("cannot link or copy the profile {path} into the Pyroscope queue: {source}")]
    Profile { path: PathBuf, source: io::Error },
    #[error("cannot write the Pyroscope queue entry {path}: {source}")]
    Entry { path: PathBuf, source: io::Error },
    #[error("the enqueueing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Why a queued push cannot be read back (damaged, or removed by hand): it is dropped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not a queue entry: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
}

/// One push as it waits on disk, in `<seq>.json`; its profile is `<seq>.pb.gz`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The capture's id, or the recorder segment's name (`PushSource::name`).
    pub name: String,
    /// The labels to send, made valid when the push was queued.
    pub labels: Vec<(String, String)>,
    pub enqueued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// A recorder segment's push (`PushSource::Recorded`), dropped first to make room.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recorded: bool,
}

/// A handle on the queue; clones share it. One queue per directory: two processes (or two
/// queues) over one directory would hand out the same numbers.
#[derive(Clone)]
pub struct PushQueue {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    limits: QueueLimits,
    state: Mutex<State>,
    /// Wakes the worker when a push is queued; a wake with no one waiting is kept for
    /// the worker's next wait, so none is lost.
    wake: Notify,
    metrics: PushMetrics,
    /// Numbers the profiles held (`hold`), so that no two share a name.
    holds: AtomicU64,
}

/// A profile held in the queue's directory until it is queued or let go (on drop): a link
/// (or copy) under a name starting with `.`, which the next `open` removes if a crash
/// leaves it behind.
#[derive(Debug)]
pub struct Held {
    path: PathBuf,
}

impl Held {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        durable::remove_if_present(&self.path).ok();
    }
}

/// What is kept in memory: a number and a size per push, never an entry or a profile,
/// so memory stays small however long Pyroscope is away.
struct State {
    /// Sequence number → bytes on disk, oldest first.
    entries: BTreeMap<u64, u64>,
    /// Those that are recorder segments: dropped before any capture to make room, so a
    /// stream of segments never pushes out what an alert captured.
    recorded: BTreeSet<u64>,
    bytes: u64,
    next_seq: u64,
    /// The push the worker is trying: never dropped to make room, so a push that Pyroscope
    /// took is not also counted as dropped.
    in_flight: Option<u64>,
}

impl PushQueue {
    /// Opens (creating) the queue in `dir` and takes up the pushes left there: entries
    /// whose profile is missing are dropped, half-written files removed, and the oldest
    /// dropped if the limits are now lower. Blocking: it lists the directory.
    pub fn open(dir: &Path, limits: QueueLimits, metrics: PushMetrics) -> Result<PushQueue, QueueError> {
        fs::create_dir_all(dir)
            .map_err(|source| QueueError::CreateDir { path: dir.to_path_buf(), source })?;
        let found = scan(dir).map_err(|source| QueueError::ReadDir { path: dir.to_path_buf(), source })?;
        let mut state = State {
            entries: BTreeMap::new(),
            recorded: BTreeSet::new(),
            bytes: 0,
            next_seq: 0,
            in_flight: None,
        };
        for (seq, files) in found {
            state.next_seq = seq + 1;
            match (files.entry, files.profile) {
                (Some(entry), Some(profile)) => {
                    state.entries.insert(seq, entry + profile);
                    state.bytes += entry + profile;
                    if is_recorded(dir, seq) {
                        state.recorded.insert(seq);
                    }
                }
                (Some(_), None) => {
                    tracing::warn!(dir = %dir.display(), seq, "Pyroscope queue entry without its profile; dropped.");
                    metrics.count(PushResult::DroppedInvalid);
                    remove_files(dir, seq);
                }
                // Written by an enqueue that stopped before its entry: no push was queued.
                _ => remove_files(dir, seq),
            }
        }
        let queue = PushQueue {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                limits,
                state: Mutex::new(state),
                wake: Notify::new(),
                metrics,
                holds: AtomicU64::new(0),
            }),
        };
        let dropped = queue.make_room(&mut queue.state());
        queue.drop_full(&dropped, None);
        let depth = queue.depth();
        if depth.entries > 0 {
            tracing::info!(dir = %dir.display(), entries = depth.entries, bytes = depth.bytes, "Pushes to Pyroscope taken up from the queue.");
        }
        queue.publish();
        Ok(queue)
    }

    /// Queues a push, from a blocking thread (see [`PushQueue::enqueue`]): links the
    /// profile into the queue (a copy across file systems), writes its entry atomically,
    /// and drops the oldest pushes if that goes over a bound. Never waits for Pyroscope.
    pub fn enqueue_blocking(&self, item: &PushItem) -> Result<(), EnqueueError> {
        let queued = self.place(item);
        if let Err(EnqueueError::Profile { .. } | EnqueueError::Entry { .. }) = &queued {
            self.shared.metrics.count(PushResult::DroppedInvalid);
        }
        queued
    }

    fn place(&self, item: &PushItem) -> Result<(), EnqueueError> {
        if item.expires_at <= Utc::now() {
            self.shared.metrics.count(PushResult::DroppedExpired);
            let name = item.source.name().to_string();
            return Err(EnqueueError::Expired { name, expires_at: item.expires_at });
        }
        let profile_error = |source| EnqueueError::Profile { path: item.file.clone(), source };
        let size = fs::metadata(&item.file).map_err(profile_error)?.len();
        let max_bytes = self.shared.limits.max_bytes;
        if size > max_bytes {
            self.shared.metrics.count(PushResult::DroppedFull);
            return Err(EnqueueError::TooLarge {
                name: item.source.name().to_string(),
                bytes: size,
                max_bytes,
            });
        }
        let seq = {
            let mut state = self.state();
            state.next_seq += 1;
            state.next_seq - 1
        };
        let profile = self.path(seq, PROFILE_SUFFIX);
        place_profile(&item.file, &profile).map_err(profile_error)?;
        let entry = Entry {
            name: item.source.name().to_string(),
            labels: item.label_set(),
            enqueued_at: Utc::now(),
            expires_at: item.expires_at,
            recorded: matches!(item.source, PushSource::Recorded(_)),
        };
        // Strings, pairs and times: serializing cannot fail.
        let json = serde_json::to_vec(&entry).expect("a queue entry serializes");
        let path = self.path(seq, ENTRY_SUFFIX);
        if let Err(source) = durable::write_atomic(&path, &json) {
            durable::remove_if_present(&profile).ok();
            return Err(EnqueueError::Entry { path, source });
        }
        let dropped = {
            let mut state = self.state();
            state.entries.insert(seq, json.len() as u64 + size);
            if entry.recorded {
                state.recorded.insert(seq);
            }
            state.bytes += json.len() as u64 + size;
            self.make_room(&mut state)
        };
        self.drop_full(&dropped, Some(item.source.name()));
        self.publish();
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Holds `file` for a push queued later, after its owner may have moved or deleted it
    /// (the store takes a staged profile into a bucket): a hard link, or a copy on another
    /// file system. Blocking. A profile that cannot be held is counted as not queued.
    pub fn hold(&self, file: &Path) -> Result<Held, EnqueueError> {
        let n = self.shared.holds.fetch_add(1, Ordering::Relaxed);
        let path = self.shared.dir.join(format!(".held-{n}{PROFILE_SUFFIX}"));
        if let Err(source) = place_profile(file, &path) {
            self.shared.metrics.count(PushResult::DroppedInvalid);
            return Err(EnqueueError::Profile { path: file.to_path_buf(), source });
        }
        Ok(Held { path })
    }

    /// Queues a push off the async threads; returns once it is on disk.
    pub async fn enqueue(&self, item: PushItem) -> Result<(), EnqueueError> {
        let queue = self.clone();
        tokio::task::spawn_blocking(move || queue.enqueue_blocking(&item)).await?
    }

    pub fn depth(&self) -> Depth {
        let state = self.state();
        Depth { entries: state.entries.len(), bytes: state.bytes }
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    pub(crate) fn metrics(&self) -> &PushMetrics {
        &self.shared.metrics
    }

    /// The first push from `cursor` on (else the oldest), now in flight.
    pub(crate) fn take(&self, cursor: u64) -> Option<u64> {
        let mut state = self.state();
        let first = state.entries.range(cursor..).next().or_else(|| state.entries.iter().next());
        let seq = first.map(|(seq, _)| *seq)?;
        state.in_flight = Some(seq);
        Some(seq)
    }

    /// Waits until a push is queued (at once if one was queued since the last wait).
    pub(crate) async fn queued(&self) {
        self.shared.wake.notified().await;
    }

    /// Reads a push back. Blocking.
    pub(crate) fn load(&self, seq: u64) -> Result<(Entry, Vec<u8>), LoadError> {
        let read = |path: PathBuf| fs::read(&path).map_err(|source| LoadError::Read { path, source });
        let path = self.path(seq, ENTRY_SUFFIX);
        let json = read(path.clone())?;
        let entry = serde_json::from_slice(&json).map_err(|source| LoadError::Parse { path, source })?;
        Ok((entry, read(self.path(seq, PROFILE_SUFFIX))?))
    }

    /// The push in flight is done with (`result`): counted, and off the disk. Its files are
    /// removed without a sync: one that comes back after a crash is pushed again.
    pub(crate) fn finish(&self, seq: u64, result: PushResult) {
        {
            let mut state = self.state();
            if let Some(bytes) = state.entries.remove(&seq) {
                state.bytes -= bytes;
            }
            state.recorded.remove(&seq);
            state.in_flight = None;
        }
        remove_files(&self.shared.dir, seq);
        self.shared.metrics.count(result);
        self.publish();
    }

    /// The push in flight stays queued, for a later try.
    pub(crate) fn release(&self) {
        self.state().in_flight = None;
    }

    /// Takes the oldest recorder segments, then the oldest captures (never the one in
    /// flight) off the index until both bounds hold; their files are for `drop_full` to
    /// remove, outside the lock.
    fn make_room(&self, state: &mut State) -> Vec<u64> {
        let limits = self.shared.limits;
        let mut dropped = Vec::new();
        while state.entries.len() > limits.max_entries || state.bytes > limits.max_bytes {
            let in_flight = state.in_flight;
            let not_in_flight = |seq: &u64| Some(*seq) != in_flight;
            let oldest = state.recorded.iter().copied().find(not_in_flight);
            let Some(seq) = oldest.or_else(|| state.entries.keys().copied().find(not_in_flight)) else {
                break;
            };
            state.bytes -= state.entries.remove(&seq).unwrap_or(0);
            state.recorded.remove(&seq);
            dropped.push(seq);
        }
        dropped
    }

    fn drop_full(&self, dropped: &[u64], for_push: Option<&str>) {
        if dropped.is_empty() {
            return;
        }
        for seq in dropped {
            remove_files(&self.shared.dir, *seq);
            self.shared.metrics.count(PushResult::DroppedFull);
        }
        tracing::warn!(
            dropped = dropped.len(),
            push = for_push.unwrap_or(""),
            max_entries = self.shared.limits.max_entries,
            max_bytes = self.shared.limits.max_bytes,
            "Pyroscope queue full; dropped the oldest pushes."
        );
    }

    fn publish(&self) {
        let depth = self.depth();
        self.shared.metrics.queue_entries.set(depth.entries as i64);
        self.shared.metrics.queue_bytes.set(depth.bytes as i64);
    }

    fn path(&self, seq: u64, suffix: &str) -> PathBuf {
        self.shared.dir.join(format!("{seq:020}{suffix}"))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding it leaves only numbers behind, still usable.
        self.shared.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether the push `seq` in `dir` is a recorder segment's, as its entry says; one that
/// cannot be read counts as a capture (and is dropped when the worker comes to it).
fn is_recorded(dir: &Path, seq: u64) -> bool {
    let entry = fs::read(dir.join(format!("{seq:020}{ENTRY_SUFFIX}"))).ok();
    entry.and_then(|json| serde_json::from_slice::<Entry>(&json).ok()).is_some_and(|entry| entry.recorded)
}

/// The files of one push found on disk: their sizes, each if present.
#[derive(Default)]
struct Found {
    entry: Option<u64>,
    profile: Option<u64>,
}

/// The pushes in `dir` by sequence number. Temp files of writes that never finished are
/// removed.
fn scan(dir: &Path) -> io::Result<BTreeMap<u64, Found>> {
    let mut found: BTreeMap<u64, Found> = BTreeMap::new();
    for file in fs::read_dir(dir)? {
        let file = file?;
        let name = file.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            durable::remove_if_present(&file.path()).ok();
            continue;
        }
        let (seq, is_entry) = match (name.strip_suffix(ENTRY_SUFFIX), name.strip_suffix(PROFILE_SUFFIX)) {
            (Some(seq), _) => (seq, true),
            (_, Some(seq)) => (seq, false),
            _ => continue,
        };
        let Ok(seq) = seq.parse::<u64>() else { continue };
        let bytes = file.metadata()?.len();
        let slot = found.entry(seq).or_default();
        if is_entry { slot.entry = Some(bytes) } else { slot.profile = Some(bytes) }
    }
    Ok(found)
}

/// Puts the profile at `to`: a hard link (no copy, and it outlives the store's deleting
/// `from`), or a copy where linking fails (another file system). Made durable by the
/// directory sync of the entry written next.
fn place_profile(from: &Path, to: &Path) -> io::Result<()> {
    durable::remove_if_present(to)?;
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    let name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = to.with_file_name(format!(".{name}.copy"));
    let copied = fs::copy(from, &temp).and_then(|_| durable::move_into_place(&temp, to));
    copied.inspect_err(|_| {
        durable::remove_if_present(&temp).ok();
    })
}

/// Removes a push's files, its entry first: a profile left alone by a crash is removed at
/// the next open, an entry left alone would be counted as damaged.
fn remove_files(dir: &Path, seq: u64) {
    for suffix in [ENTRY_SUFFIX, PROFILE_SUFFIX] {
        let path = dir.join(format!("{seq:020}{suffix}"));
        if let Err(error) = durable::remove_if_present(&path) {
            tracing::warn!(path = %path.display(), error = %error, "Cannot remove a Pyroscope queue file.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pyroscope::ProfileType;

    fn item(dir: &Path, n: usize) -> PushItem {
        let file = dir.join(format!("stored-{n}.pb.gz"));
        fs::write(&file, vec![n as u8; 100 * n]).unwrap();
        PushItem {
            source: PushSource::Capture(format!("cap-{n}")),
            profile_type: ProfileType::Heap,
            service_name: "api".into(),
            alertname: None,
            rule: None,
            instance: None,
            labels: vec![],
            file,
            expires_at: Utc::now() + chrono::Duration::hours(1),
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Opening takes up whole pushes; drops (and counts) an entry whose profile is gone;
    /// removes a profile without its entry and temp files; leaves other files alone; and
    /// numbers new pushes after every one it saw.
    #[test]
    fn open_takes_up_what_is_left() {
        let store = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join(".pyroscope");
        let queue = PushQueue::open(&dir, QueueLimits::default(), PushMetrics::default()).unwrap();
        for n in 1..=3 {
            queue.enqueue_blocking(&item(store.path(), n)).unwrap();
        }
        let (entry, profile) = queue.load(0).unwrap();
        assert_eq!((entry.name.as_str(), profile.len()), ("cap-1", 100));
        assert_eq!(entry.labels[0], ("__name__".to_string(), "memory".to_string()));
        drop(queue);
        fs::remove_file(dir.join("00000000000000000001.pb.gz")).unwrap();
        fs::remove_file(dir.join("00000000000000000002.json")).unwrap();
        fs::write(dir.join(".00000000000000000003.json.tmp-1-2"), "{").unwrap();
        fs::write(dir.join("README"), "mine").unwrap();

        let metrics = PushMetrics::default();
        let queue = PushQueue::open(&dir, QueueLimits::default(), metrics.clone()).unwrap();
        let depth = queue.depth();
        assert_eq!(depth.entries, 1);
        assert_eq!(depth.bytes, fs::metadata(dir.join("00000000000000000000.json")).unwrap().len() + 100);
        assert_eq!((metrics.queue_entries.get(), metrics.queue_bytes.get()), (1, depth.bytes as i64));
        assert_eq!(metrics.pushes(PushResult::DroppedInvalid), 1);
        assert_eq!(names(&dir), ["00000000000000000000.json", "00000000000000000000.pb.gz", "README"]);
        queue.enqueue_blocking(&item(store.path(), 4)).unwrap();
        assert!(dir.join("00000000000000000003.json").exists(), "{:?}", names(&dir));
    }

    /// To make room, the recorder's segments go first, oldest first, however new the
    /// captures; captures go only when no segment is left; and the queue taken up again
    /// knows which is which.
    #[test]
    fn segments_make_room_before_captures() {
        let store = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let limits = QueueLimits { max_entries: 3, max_bytes: 1 << 20 };
        let metrics = PushMetrics::default();
        let queue = PushQueue::open(data.path(), limits, metrics.clone()).unwrap();
        let segment =
            |n: usize| PushItem { source: PushSource::Recorded(format!("seg-{n}")), ..item(store.path(), n) };
        queue.enqueue_blocking(&item(store.path(), 1)).unwrap();
        queue.enqueue_blocking(&segment(2)).unwrap();
        queue.enqueue_blocking(&segment(3)).unwrap();
        queue.enqueue_blocking(&item(store.path(), 4)).unwrap();
        queue.enqueue_blocking(&segment(5)).unwrap();
        let names = |queue: &PushQueue| -> Vec<String> {
            let seqs: Vec<u64> = queue.state().entries.keys().copied().collect();
            seqs.iter().map(|seq| queue.load(*seq).unwrap().0.name).collect()
        };
        assert_eq!(names(&queue), ["cap-1", "cap-4", "seg-5"]);
        assert_eq!(metrics.pushes(PushResult::DroppedFull), 2);
        drop(queue);
        let queue = PushQueue::open(data.path(), limits, PushMetrics::default()).unwrap();
        queue.enqueue_blocking(&item(store.path(), 6)).unwrap();
        assert_eq!(names(&queue), ["cap-1", "cap-4", "cap-6"], "the segment, known as one after a restart");
        queue.enqueue_blocking(&item(store.path(), 7)).unwrap();
        assert_eq!(names(&queue), ["cap-4", "cap-6", "cap-7"]);
    }

    /// A held profile outlives its source (the store moving or deleting it) and can be
    /// queued from; it is gone once let go, and one a crash left is removed at the next open.
    #[test]
    fn held_profiles_outlive_their_source() {
        let store = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let queue = PushQueue::open(data.path(), QueueLimits::default(), PushMetrics::default()).unwrap();
        let staged = item(store.path(), 2);
        let held = queue.hold(&staged.file).unwrap();
        fs::remove_file(&staged.file).unwrap();
        queue.enqueue_blocking(&PushItem { file: held.path().to_path_buf(), ..staged }).unwrap();
        let held_path = held.path().to_path_buf();
        drop(held);
        assert!(!held_path.exists());
        assert_eq!(queue.load(0).unwrap().1, vec![2u8; 200]);
        let left = queue.hold(&queue.path(0, PROFILE_SUFFIX)).unwrap();
        std::mem::forget(left);
        drop(queue);
        PushQueue::open(data.path(), QueueLimits::default(), PushMetrics::default()).unwrap();
        assert_eq!(names(data.path()), ["00000000000000000000.json", "00000000000000000000.pb.gz"]);
    }

    /// A queue opened with lower bounds than the pushes it finds drops the oldest; the one
    /// in flight is never dropped to make room, and is not counted twice.
    #[test]
    fn bounds_drop_the_oldest_but_not_the_one_in_flight() {
        let store = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let queue = PushQueue::open(data.path(), QueueLimits::default(), PushMetrics::default()).unwrap();
        for n in 1..=3 {
            queue.enqueue_blocking(&item(store.path(), n)).unwrap();
        }
        drop(queue);
        let metrics = PushMetrics::default();
        let limits = QueueLimits { max_entries: 2, max_bytes: 1 << 20 };
        let queue = PushQueue::open(data.path(), limits, metrics.clone()).unwrap();
        assert_eq!(metrics.pushes(PushResult::DroppedFull), 1);
        assert_eq!(queue.take(0), Some(1));
        queue.enqueue_blocking(&item(store.path(), 4)).unwrap();
        queue.enqueue_blocking(&item(store.path(), 5)).unwrap();
        assert_eq!(metrics.pushes(PushResult::DroppedFull), 3);
        assert_eq!(queue.take(0), Some(1), "the one in flight stayed");
        assert_eq!(queue.take(2), Some(4));
        queue.finish(1, PushResult::Ok);
        assert_eq!(queue.depth().entries, 1);
        assert_eq!(metrics.pushes(PushResult::Ok), 1);
        assert_eq!(queue.take(5), Some(4), "past the newest, back to the oldest");
    }
}
