//! Decides whether a verified job may capture now: dedupe on (fingerprint, startsAt, rule,
//! target), cooldown per (rule, target), one CPU profile or trace per target at a time, and
//! a cap on captures in flight. Dedupe and cooldown survive restarts in an append-only log.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

use crate::store::StoreError;

/// Why a job may not capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// This alert (fingerprint and startsAt) was already captured for this rule and target.
    Duplicate { first_seen: DateTime<Utc> },
    /// The rule captured this target recently.
    Cooldown { until: DateTime<Utc> },
}

/// One line of the state log.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Entry {
    Dedupe { dedupe: String, at: DateTime<Utc> },
    Cooldown { rule: String, target: String, until: DateTime<Utc> },
}

/// Held for the whole request of an exclusive profile kind on one target.
type SlotLock = Arc<tokio::sync::Mutex<()>>;

#[derive(Default)]
struct State {
    dedupe: HashMap<String, DateTime<Utc>>,
    cooldown: Cooldowns,
}

/// Until when each (rule, target) is in cooldown: by rule, then target, so a lookup with
/// borrowed names allocates nothing.
#[derive(Default)]
struct Cooldowns(HashMap<String, HashMap<String, DateTime<Utc>>>);

impl Cooldowns {
    fn get(&self, rule: &str, target: &str) -> Option<DateTime<Utc>> {
        self.0.get(rule)?.get(target).copied()
    }

    fn insert(&mut self, rule: &str, target: &str, until: DateTime<Utc>) {
        self.0.entry(rule.to_string()).or_default().insert(target.to_string(), until);
    }

    fn retain_until_after(&mut self, now: DateTime<Utc>) {
        self.0.retain(|_, targets| {
            targets.retain(|_, until| *until > now);
            !targets.is_empty()
        });
    }

    fn iter(&self) -> impl Iterator<Item = (&String, &String, DateTime<Utc>)> {
        self.0
            .iter()
            .flat_map(|(rule, targets)| targets.iter().map(move |(target, until)| (rule, target, *until)))
    }

    fn len(&self) -> usize {
        self.0.values().map(HashMap::len).sum()
    }
}

pub struct Gate {
    state: Mutex<State>,
    /// Append-only; one JSON entry a line, fsynced per admission so a crash right after
    /// a capture started cannot lead to a second capture of the same alert.
    log: Mutex<File>,
    log_path: PathBuf,
    dedupe_ttl: Duration,
    /// Go refuses a second CPU profile (or trace) while one runs: one lock per
    /// (target, slot), taken for the whole request.
    exclusive: Mutex<HashMap<(String, &'static str), SlotLock>>,
    /// Captures in flight across all targets.
    in_flight: Arc<Semaphore>,
}

impl Gate {
    /// Loads the state log from `dir`, drops expired entries and rewrites it compacted.
    pub fn open(dir: &Path, dedupe_ttl: Duration, max_in_flight: usize) -> Result<Gate, StoreError> {
        let log_path = dir.join("gate.jsonl");
        let mut state = State::default();
        if let Ok(file) = File::open(&log_path) {
            // A line cut short by a crash fails to parse and is skipped.
            for line in BufReader::new(file).lines().map_while(Result::ok) {
                match serde_json::from_str::<Entry>(&line) {
                    Ok(Entry::Dedupe { dedupe, at }) => {
                        state.dedupe.insert(dedupe, at);
                    }
                    Ok(Entry::Cooldown { rule, target, until }) => {
                        state.cooldown.insert(&rule, &target, until);
                    }
                    Err(_) => {
                        tracing::warn!(path = %log_path.display(), "Unreadable gate state line skipped.")
                    }
                }
            }
        }
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(dedupe_ttl).unwrap_or(chrono::Duration::MAX);
        state.dedupe.retain(|_, at| *at + ttl > now);
        state.cooldown.retain_until_after(now);
        let mut compacted = Vec::new();
        for (dedupe, at) in &state.dedupe {
            compacted.extend(line(&Entry::Dedupe { dedupe: dedupe.clone(), at: *at }));
        }
        for (rule, target, until) in state.cooldown.iter() {
            compacted.extend(line(&Entry::Cooldown { rule: rule.clone(), target: target.clone(), until }));
        }
        crate::store::write_atomic(&log_path, &compacted)?;
        let log =
            OpenOptions::new().append(true).open(&log_path).map_err(StoreError::io("open", &log_path))?;
        tracing::info!(
            dedupe_keys = state.dedupe.len(),
            cooldowns = state.cooldown.len(),
            "Gate state loaded."
        );
        Ok(Gate {
            state: Mutex::new(state),
            log: Mutex::new(log),
            log_path,
            dedupe_ttl,
            exclusive: Mutex::new(HashMap::new()),
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
        })
    }

    /// Whether the job would be refused, without admitting it (cheap, before verifying).
    pub fn check(
        &self,
        dedupe: Option<&str>,
        rule: &str,
        target: &str,
        now: DateTime<Utc>,
    ) -> Option<Refusal> {
        let state = self.state.lock().unwrap();
        self.refusal(&state, dedupe, rule, target, now)
    }

    fn refusal(
        &self,
        state: &State,
        dedupe: Option<&str>,
        rule: &str,
        target: &str,
        now: DateTime<Utc>,
    ) -> Option<Refusal> {
        let ttl = chrono::Duration::from_std(self.dedupe_ttl).unwrap_or(chrono::Duration::MAX);
        if let Some(first_seen) = dedupe.and_then(|key| state.dedupe.get(key))
            && *first_seen + ttl > now
        {
            return Some(Refusal::Duplicate { first_seen: *first_seen });
        }
        match state.cooldown.get(rule, target) {
            Some(until) if until > now => Some(Refusal::Cooldown { until }),
            _ => None,
        }
    }

    /// Admits a job atomically: refuses it, or records its dedupe key and starts the
    /// rule's cooldown on the target, durably, before any request is made.
    pub fn admit(
        &self,
        dedupe: Option<&str>,
        rule: &str,
        target: &str,
        cooldown: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<Refusal>, StoreError> {
        let mut state = self.state.lock().unwrap();
        if let Some(refusal) = self.refusal(&state, dedupe, rule, target, now) {
            return Ok(Some(refusal));
        }
        let until = now + chrono::Duration::from_std(cooldown).unwrap_or(chrono::Duration::MAX);
        let mut entries = Vec::new();
        if let Some(key) = dedupe {
            entries.extend(line(&Entry::Dedupe { dedupe: key.to_string(), at: now }));
        }
        if !cooldown.is_zero() {
            entries.extend(line(&Entry::Cooldown {
                rule: rule.to_string(),
                target: target.to_string(),
                until,
            }));
        }
        if !entries.is_empty() {
            let mut log = self.log.lock().unwrap();
            log.write_all(&entries)
                .and_then(|()| log.sync_data())
                .map_err(StoreError::io("append to", &self.log_path))?;
        }
        if let Some(key) = dedupe {
            state.dedupe.insert(key.to_string(), now);
        }
        if !cooldown.is_zero() {
            state.cooldown.insert(rule, target, until);
        }
        Ok(None)
    }

    /// Waits for the target's CPU-profiler (or tracer) slot.
    pub async fn exclusive(&self, target: &str, slot: &'static str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.exclusive.lock().unwrap();
            locks.entry((target.to_string(), slot)).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Waits for a place among the captures in flight.
    pub async fn in_flight(&self) -> OwnedSemaphorePermit {
        self.in_flight.clone().acquire_owned().await.expect("the semaphore is never closed")
    }

    pub fn in_flight_available(&self) -> usize {
        self.in_flight.available_permits()
    }
}

fn line(entry: &Entry) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(entry).expect("gate entries serialize");
    bytes.push(b'\n');
    bytes
}

/// Where the state log of a store's state directory is.
pub fn state_file(dir: &Path) -> PathBuf {
    dir.join("gate.jsonl")
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    /// Dedupe and cooldown refuse with the right reason, and both survive a reopen.
    #[test]
    fn dedupe_and_cooldown_persist() {
        let dir = tempfile::tempdir().unwrap();
        let ttl = Duration::from_secs(1_000_000_000);
        let gate = Gate::open(dir.path(), ttl, 4).unwrap();
        let cooldown = Duration::from_secs(300);
        assert_eq!(gate.admit(Some("a"), "r", "t", cooldown, at(0)).unwrap(), None);
        assert_eq!(
            gate.admit(Some("a"), "r", "t", cooldown, at(1)).unwrap(),
            Some(Refusal::Duplicate { first_seen: at(0) })
        );
        assert_eq!(
            gate.admit(Some("b"), "r", "t", cooldown, at(1)).unwrap(),
            Some(Refusal::Cooldown { until: at(300) })
        );
        // Another target is not in this rule's cooldown.
        assert_eq!(gate.admit(Some("c"), "r", "u", cooldown, at(1)).unwrap(), None);
        // After the cooldown the rule may capture again.
        assert_eq!(gate.admit(Some("d"), "r", "t", cooldown, at(301)).unwrap(), None);
        drop(gate);

        // Reopened: the dedupe key and the latest cooldown are still there.
        let reopened = Gate::open(dir.path(), ttl, 4).unwrap();
        assert_eq!(
            reopened.check(Some("a"), "x", "y", at(2)),
            Some(Refusal::Duplicate { first_seen: at(0) })
        );
        assert_eq!(reopened.check(None, "r", "t", at(302)), Some(Refusal::Cooldown { until: at(601) }));
        assert_eq!(reopened.check(None, "r", "t", at(601)), None);
    }

    /// A log line cut short by a crash is skipped and the rest is kept.
    #[test]
    fn torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let good = line(&Entry::Dedupe { dedupe: "kept".into(), at: now });
        let mut content = good.clone();
        content.extend_from_slice(&good[..good.len() / 2]);
        fs::write(state_file(dir.path()), content).unwrap();
        let gate = Gate::open(dir.path(), Duration::from_secs(3600), 1).unwrap();
        assert!(matches!(gate.check(Some("kept"), "r", "t", now), Some(Refusal::Duplicate { .. })));
    }
}
