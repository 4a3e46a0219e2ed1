//! The recorder: each recorded target's recent profiles, kept on disk continuously and
//! cheaply so that a capture can reach back before its trigger (alerts are minutes late)
//! and a process's last profiles survive it. Back-to-back CPU segments (the CPU profiler
//! serves one client at a time, so a recorded target's CPU captures come from here),
//! heap and goroutine snapshots at intervals, each validated as captures are; pruned to
//! `keep` and `max_bytes`; each new one told to whoever passes them on (to Pyroscope); and
//! the end of each process told once.

mod lifetime;
mod merge;
mod record;
mod tape;

pub use lifetime::{Ended, Seen};
pub use merge::{Merged, SegmentMergeError, SkipReason, SkippedSegment, merge_segments, skipped_text};
pub use record::{Sources, Tools, keep_recording};
pub use tape::{Holding, Opened, Segment, Tape};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::{RecorderConfig, format_duration};
use crate::metrics::Metrics;
use crate::model::ProfileKind;
use lifetime::Lifetime;

/// The longest the recorder leaves a CPU profiler held by someone else before it asks
/// again.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A recorded target's process ended.
#[derive(Debug, Clone)]
pub struct Exit {
    pub target: String,
    pub ended: Ended,
    /// When it was told.
    pub at: DateTime<Utc>,
}

/// A segment or snapshot a recording took in, told to whoever passes them on.
#[derive(Debug, Clone)]
pub struct Added {
    pub target: String,
    pub segment: Segment,
}

/// Segments told and not yet taken, at most: whoever takes them (pushing to Pyroscope)
/// queues each in milliseconds; past this the newest are not told, and the recording goes
/// on regardless.
const ADDED_WAITING: usize = 1024;

/// Where added segments are told: nowhere until someone takes them (`take_added`), so a
/// service that passes none on keeps none in memory.
#[derive(Default)]
struct AddedFeed(Mutex<Option<mpsc::Sender<Added>>>);

impl AddedFeed {
    fn tell(&self, target: &str, segment: &Segment) {
        let Some(added_tx) = self.0.lock().unwrap().clone() else { return };
        let added = Added { target: target.to_string(), segment: segment.clone() };
        if let Err(mpsc::error::TrySendError::Full(added)) = added_tx.try_send(added) {
            tracing::warn!(target = %added.target, path = %added.segment.path.display(), "Too many recorded segments waiting to be passed on; this one is not.");
        }
    }
}

/// Every recorded target, under `<storage.dir>/.recorder`.
pub struct Recorder {
    dir: PathBuf,
    recordings: Mutex<HashMap<String, Arc<Recording>>>,
    exits: mpsc::UnboundedSender<Exit>,
    /// Taken once, by whoever keeps the last profiles of processes that ended.
    exits_rx: Mutex<Option<mpsc::UnboundedReceiver<Exit>>>,
    /// Shared with every recording.
    added: Arc<AddedFeed>,
}

impl Recorder {
    pub fn open(dir: &Path) -> std::io::Result<Recorder> {
        std::fs::create_dir_all(dir)?;
        let (exits, exits_rx) = mpsc::unbounded_channel();
        Ok(Recorder {
            dir: dir.to_path_buf(),
            recordings: Mutex::new(HashMap::new()),
            exits,
            exits_rx: Mutex::new(Some(exits_rx)),
            added: Arc::default(),
        })
    }

    /// Every segment and snapshot recorded from now on, as each is added to its tape; the
    /// last caller gets them.
    pub fn take_added(&self) -> mpsc::Receiver<Added> {
        let (added_tx, added_rx) = mpsc::channel(ADDED_WAITING);
        *self.added.0.lock().unwrap() = Some(added_tx);
        added_rx
    }

    /// The ends of processes, as they are told; `None` after the first call.
    pub fn take_exits(&self) -> Option<mpsc::UnboundedReceiver<Exit>> {
        self.exits_rx.lock().unwrap().take()
    }

    /// Makes the recordings what `recorded` (target name, recorder) says: new ones opened
    /// (with what an earlier run left), settings updated, and the tapes of targets no
    /// longer recorded deleted. Returns the recordings, in the order given.
    pub fn sync(&self, recorded: &[(String, RecorderConfig)], metrics: &Metrics) -> Vec<Arc<Recording>> {
        let mut recordings = self.recordings.lock().unwrap();
        let mut kept = Vec::new();
        for (name, config) in recorded {
            let recording = match recordings.get(name) {
                Some(recording) => recording.clone(),
                None => {
                    let dir = self.dir.join(name);
                    let tape = Tape::open(&dir).unwrap_or_else(|error| {
                        tracing::error!(dir = %dir.display(), error = %error, "Cannot read the recorder's directory; starting it empty.");
                        std::fs::remove_dir_all(&dir).ok();
                        Tape::open(&dir).expect("an empty directory opens")
                    });
                    let recording = Arc::new(Recording {
                        target: name.clone(),
                        tape,
                        config: Mutex::new(config.clone()),
                        kinds: Mutex::new(BTreeMap::new()),
                        lifetime: Mutex::new(Lifetime::default()),
                        exits: self.exits.clone(),
                        added: self.added.clone(),
                        started: Mutex::new(BTreeMap::new()),
                    });
                    recordings.insert(name.clone(), recording.clone());
                    recording
                }
            };
            *recording.config.lock().unwrap() = config.clone();
            kept.push(recording);
        }
        recordings.retain(|name, recording| {
            let keep = recorded.iter().any(|(kept, _)| kept == name);
            if !keep {
                tracing::info!(target = %name, "Target no longer recorded; its recorded profiles are deleted.");
                recording.tape.clear();
                metrics.recorder.forget(name, &RecorderConfig::KINDS);
            }
            keep
        });
        // What an earlier run recorded of targets no longer recorded.
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !recordings.contains_key(&name) {
                    std::fs::remove_dir_all(entry.path()).ok();
                }
            }
        }
        kept
    }

    pub fn get(&self, target: &str) -> Option<Arc<Recording>> {
        self.recordings.lock().unwrap().get(target).cloned()
    }

    /// Takes in what was seen of a target's process, if it is recorded.
    pub fn observe(&self, target: &str, seen: Seen, at: DateTime<Utc>) {
        if let Some(recording) = self.get(target) {
            recording.observe(seen, at);
        }
    }

    /// Every recording's state, by target name.
    pub fn statuses(&self) -> Vec<Status> {
        let mut statuses: Vec<Status> =
            self.recordings.lock().unwrap().values().map(|recording| recording.status()).collect();
        statuses.sort_by(|a, b| a.target.cmp(&b.target));
        statuses
    }
}

/// How one kind's recording fares.
#[derive(Debug, Clone, Default)]
struct KindState {
    /// Why the last request failed, and since when they have been failing.
    error: Option<(String, DateTime<Utc>)>,
    /// Someone else holds the CPU profiler; the recorder asks again then.
    backing_off_until: Option<DateTime<Utc>>,
}

/// One target's recording: its tape, how each kind fares, and its process's lifetime.
pub struct Recording {
    pub target: String,
    pub tape: Tape,
    config: Mutex<RecorderConfig>,
    kinds: Mutex<BTreeMap<ProfileKind, KindState>>,
    lifetime: Mutex<Lifetime>,
    exits: mpsc::UnboundedSender<Exit>,
    added: Arc<AddedFeed>,
    /// When each kind's last request started. The loops stop and start again when a reload
    /// changes the recorder; the new ones keep this schedule, so reloads never make the
    /// target answer more often than the config says.
    started: Mutex<BTreeMap<ProfileKind, tokio::time::Instant>>,
}

/// A recording's state, for the web page and the API.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub target: String,
    /// What it records, e.g. `cpu 10s, heap 15s, goroutine 15s; keeps 5m, 64 MiB`.
    pub records: String,
    pub bytes: u64,
    pub kinds: Vec<KindStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KindStatus {
    pub kind: ProfileKind,
    pub every: String,
    pub segments: usize,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest: Option<DateTime<Utc>>,
    /// Why its requests fail, since when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_off_until: Option<DateTime<Utc>>,
}

impl Recording {
    pub fn config(&self) -> RecorderConfig {
        self.config.lock().unwrap().clone()
    }

    /// Takes in what was seen of the process; tells its end once.
    pub fn observe(&self, seen: Seen, at: DateTime<Utc>) {
        let ended = self.lifetime.lock().unwrap().observe(seen, at);
        if let Some(ended) = ended {
            tracing::warn!(target = %self.target, why = %ended.why, "The recorded process ended.");
            self.exits.send(Exit { target: self.target.clone(), ended, at }).ok();
        }
    }

    /// Tells whoever took them (`Recorder::take_added`) that `segment` was added.
    fn tell_added(&self, segment: &Segment) {
        self.added.tell(&self.target, segment);
    }

    /// Why `kind` is not being recorded now, if it is not: its last error, or the CPU
    /// profiler held by someone else.
    pub fn trouble(&self, kind: ProfileKind) -> Option<String> {
        let kinds = self.kinds.lock().unwrap();
        let state = kinds.get(&kind)?;
        match (&state.backing_off_until, &state.error) {
            (Some(until), _) => Some(format!(
                "someone else holds the CPU profiler; the recorder asks again at {}",
                until.format("%H:%M:%S")
            )),
            (None, Some((error, since))) => {
                Some(format!("failing since {}: {error}", since.format("%H:%M:%S")))
            }
            (None, None) => None,
        }
    }

    pub fn status(&self) -> Status {
        let config = self.config();
        let kinds = self.kinds.lock().unwrap().clone();
        Status {
            target: self.target.clone(),
            records: config.describe(),
            bytes: self.tape.bytes(),
            kinds: config
                .kinds()
                .into_iter()
                .map(|kind| {
                    let held = self.tape.held(kind);
                    let state = kinds.get(&kind).cloned().unwrap_or_default();
                    KindStatus {
                        kind,
                        every: format_duration(config.interval(kind).unwrap_or_default()),
                        segments: held.segments,
                        bytes: held.bytes,
                        oldest: held.oldest,
                        newest: held.newest,
                        failing_since: state.error.as_ref().map(|(_, since)| *since),
                        error: state.error.map(|(error, _)| error),
                        backing_off_until: state.backing_off_until,
                    }
                })
                .collect(),
        }
    }

    /// When `kind` is next due, every `every`: at once if it was never asked for.
    fn next_due(&self, kind: ProfileKind, every: Duration) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        self.started.lock().unwrap().get(&kind).map_or(now, |last| (*last + every).max(now))
    }

    fn update(&self, kind: ProfileKind, change: impl FnOnce(&mut KindState)) {
        change(self.kinds.lock().unwrap().entry(kind).or_default());
    }
}
