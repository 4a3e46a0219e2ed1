//! Decides whether a verified job may capture now: dedupe on (fingerprint, startsAt, rule,
//! target), cooldown per (rule, target), one CPU profile or trace per target at a time, and
//! a cap on captures in flight. Dedupe and cooldown survive restarts in a state log written
//! before any request; what has expired is pruned and the log compacted while running.

mod claims;
mod keys;
mod log;
mod pending;

pub use claims::{ClaimError, Claimed, Claims, holder_name};
pub use keys::{CooldownKey, DedupeKey};
pub use log::{Entry, FileLog, StateLog, state_file};
pub use pending::Pending;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

use crate::model::{ProfileKind, Refusal};

/// Why the gate could not record an admission (or open its state).
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("cannot {action} gate state {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot record gate state: {0}")]
    Write(std::io::Error),
}

/// How much state the gate keeps at most.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Dedupe keys remembered; beyond it the oldest are forgotten first (a warning says
    /// so). A storm of distinct alerts within `dedupe_ttl` must not take all memory.
    pub max_dedupe_keys: usize,
    /// The log is rewritten once it holds this many lines more than the live state.
    pub compact_after: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_dedupe_keys: 100_000, compact_after: 10_000 }
    }
}

/// Dedupe keys with when they were first admitted, oldest first: expiry and eviction take
/// from the front.
#[derive(Default)]
struct Dedupe {
    at: HashMap<Arc<str>, DateTime<Utc>>,
    order: VecDeque<(DateTime<Utc>, Arc<str>)>,
}

impl Dedupe {
    fn get(&self, key: &str) -> Option<DateTime<Utc>> {
        self.at.get(key).copied()
    }

    fn insert(&mut self, key: &str, at: DateTime<Utc>) {
        let key: Arc<str> = key.into();
        if self.at.insert(key.clone(), at).is_some() {
            self.order.retain(|(_, old)| *old != key);
        }
        // Admissions come in time order but for a restart's load; keep the order sorted.
        let position = self.order.partition_point(|(when, _)| *when <= at);
        self.order.insert(position, (at, key));
    }

    fn remove(&mut self, key: &str) {
        if self.at.remove(key).is_some() {
            self.order.retain(|(_, old)| &**old != key);
        }
    }

    /// Forgets keys first seen at or before `cutoff`; returns how many.
    fn expire(&mut self, cutoff: DateTime<Utc>) -> usize {
        let mut removed = 0;
        while self.order.front().is_some_and(|(at, _)| *at <= cutoff) {
            let (_, key) = self.order.pop_front().expect("checked");
            self.at.remove(&key);
            removed += 1;
        }
        removed
    }

    /// Forgets the oldest keys beyond `max`; returns how many.
    fn bound(&mut self, max: usize) -> usize {
        let over = self.order.len().saturating_sub(max);
        for (_, key) in self.order.drain(..over) {
            self.at.remove(&key);
        }
        over
    }

    fn len(&self) -> usize {
        self.at.len()
    }
}

/// Until when each (rule, target) is in cooldown: by rule, then target, so a lookup with
/// borrowed names allocates nothing.
#[derive(Default)]
struct Cooldowns(HashMap<String, HashMap<String, DateTime<Utc>>>);

impl Cooldowns {
    fn get(&self, rule: &str, target: &str) -> Option<DateTime<Utc>> {
        self.0.get(rule)?.get(target).copied()
    }

    fn insert(&mut self, rule: &str, target: &str, until: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.entry(rule.to_string()).or_default().insert(target.to_string(), until)
    }

    fn remove(&mut self, rule: &str, target: &str) {
        if let Some(targets) = self.0.get_mut(rule) {
            targets.remove(target);
            if targets.is_empty() {
                self.0.remove(rule);
            }
        }
    }

    /// Forgets cooldowns over by `now`; returns how many.
    fn expire(&mut self, now: DateTime<Utc>) -> usize {
        let before = self.len();
        self.0.retain(|_, targets| {
            targets.retain(|_, until| *until > now);
            !targets.is_empty()
        });
        before - self.len()
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

#[derive(Default)]
struct State {
    dedupe: Dedupe,
    cooldown: Cooldowns,
    /// Lines in the log: what it was last written whole with, plus what was appended.
    appended: usize,
    /// Dedupe keys forgotten early (over `max_dedupe_keys`) since the last compaction.
    evicted: usize,
}

/// Held for the whole request of an exclusive profile kind on one target.
type SlotLock = Arc<tokio::sync::Mutex<()>>;
type Slots = Arc<Mutex<HashMap<(String, ProfileKind), SlotLock>>>;

/// How much state the gate holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateSize {
    pub dedupe_keys: usize,
    pub cooldowns: usize,
    /// Exclusive slots held or waited for.
    pub slots: usize,
    /// Lines in the state log.
    pub log_lines: usize,
}

pub struct Gate {
    /// Dedupe and cooldown. Held only to look up and to record in memory, never across a
    /// write: the webhook's `check` takes it for every alert.
    state: Mutex<State>,
    /// The durable record, written before any request is made.
    log: Arc<dyn StateLog>,
    dedupe_ttl: Duration,
    limits: Limits,
    /// Go refuses a second CPU profile (or trace) while one runs: one lock per target and
    /// kind, taken for the whole request, and dropped from the map once nobody holds or
    /// waits for it (templated targets make a new key per host and port).
    exclusive: Slots,
    /// Captures in flight across all targets.
    in_flight: Arc<Semaphore>,
    /// Dedupe keys of the jobs queued or running.
    pending: pending::PendingKeys,
}

impl Gate {
    /// Opens the state log in `dir`, drops what has expired and rewrites it compacted.
    pub fn open(dir: &Path, dedupe_ttl: Duration, max_in_flight: usize) -> Result<Gate, GateError> {
        let path = state_file(dir);
        let (log, entries) = FileLog::open(dir).map_err(|source| GateError::Io {
            action: "open",
            path: path.clone(),
            source,
        })?;
        let gate = Gate::with_log(Arc::new(log), entries, dedupe_ttl, max_in_flight, Limits::default());
        // A full disk must not keep alertprof from starting and serving what it has: the
        // log stays as it was, and admissions say whether they can be recorded.
        if let Err(error) = gate.compact(Utc::now()) {
            tracing::error!(path = %path.display(), error = %error, "Cannot rewrite the gate state; it stays as it was.");
        }
        let size = gate.size();
        tracing::info!(dedupe_keys = size.dedupe_keys, cooldowns = size.cooldowns, "Gate state loaded.");
        Ok(gate)
    }

    /// A gate over `log`, holding `entries` (what the log held).
    pub fn with_log(
        log: Arc<dyn StateLog>,
        entries: Vec<Entry>,
        dedupe_ttl: Duration,
        max_in_flight: usize,
        limits: Limits,
    ) -> Gate {
        let mut state = State { appended: entries.len(), ..State::default() };
        for entry in entries {
            match entry {
                Entry::Dedupe { dedupe, at } => state.dedupe.insert(&dedupe, at),
                Entry::Cooldown { rule, target, until } => {
                    state.cooldown.insert(&rule, &target, until);
                }
            }
        }
        Gate {
            state: Mutex::new(state),
            log,
            dedupe_ttl,
            limits,
            exclusive: Slots::default(),
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            pending: pending::PendingKeys::default(),
        }
    }

    /// When a dedupe key first seen at `first_seen` expires.
    fn expiry(&self, first_seen: DateTime<Utc>) -> DateTime<Utc> {
        shift(first_seen, self.dedupe_ttl, true)
    }

    /// Keys first seen at or before this have expired by `now`.
    fn expired_before(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        shift(now, self.dedupe_ttl, false)
    }

    /// Whether the job would be refused, without admitting it (cheap, before verifying).
    pub fn check(
        &self,
        dedupe: Option<&DedupeKey>,
        cooldown: &CooldownKey<'_>,
        now: DateTime<Utc>,
    ) -> Option<Refusal> {
        let state = self.state.lock().unwrap();
        self.refusal(&state, dedupe, cooldown, now)
    }

    /// At intake: refuses a job at once (a duplicate, a cooldown, or a copy of an alert
    /// whose job is queued or running), or holds its dedupe key for the job until it is
    /// decided.
    pub fn hold(
        &self,
        dedupe: &DedupeKey,
        cooldown: &CooldownKey<'_>,
        now: DateTime<Utc>,
    ) -> Result<Pending, Refusal> {
        if let Some(refusal) = self.check(Some(dedupe), cooldown, now) {
            return Err(refusal);
        }
        self.pending.hold(dedupe.as_str(), now).map_err(|since| Refusal::Pending { since })
    }

    /// Dedupe keys held by queued and running jobs.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn refusal(
        &self,
        state: &State,
        dedupe: Option<&DedupeKey>,
        cooldown: &CooldownKey<'_>,
        now: DateTime<Utc>,
    ) -> Option<Refusal> {
        if let Some(first_seen) = dedupe.and_then(|key| state.dedupe.get(key.as_str()))
            && self.expiry(first_seen) > now
        {
            return Some(Refusal::Duplicate { first_seen });
        }
        match state.cooldown.get(cooldown.rule(), cooldown.target()) {
            Some(until) if until > now => Some(Refusal::Cooldown { until }),
            _ => None,
        }
    }

    /// Admits a job atomically: refuses it, or records its dedupe key and starts the
    /// rule's cooldown on the target, durably, before any request is made. The record is
    /// visible to `check` at once, while it is written off the async threads; if the write
    /// fails it is taken back and the job is refused.
    pub async fn admit(
        self: &Arc<Self>,
        dedupe: Option<&DedupeKey>,
        key: &CooldownKey<'_>,
        cooldown: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<Refusal>, GateError> {
        let until = shift(now, cooldown, true);
        let (rule, target) = (key.rule(), key.target());
        let (lines, previous_cooldown) = {
            let mut state = self.state.lock().unwrap();
            if let Some(refusal) = self.refusal(&state, dedupe, key, now) {
                return Ok(Some(refusal));
            }
            let mut lines = Vec::new();
            if let Some(key) = dedupe.map(DedupeKey::as_str) {
                lines.extend(Entry::Dedupe { dedupe: key.to_string(), at: now }.line());
                state.dedupe.insert(key, now);
                state.evicted += state.dedupe.bound(self.limits.max_dedupe_keys);
                state.appended += 1;
            }
            let mut previous = None;
            if !cooldown.is_zero() {
                let entry = Entry::Cooldown { rule: rule.to_string(), target: target.to_string(), until };
                lines.extend(entry.line());
                previous = Some(state.cooldown.insert(rule, target, until));
                state.appended += 1;
            }
            (lines, previous)
        };
        if lines.is_empty() {
            return Ok(None);
        }
        let gate = self.clone();
        let written = tokio::task::spawn_blocking(move || match gate.log.append(&lines) {
            // The log's file is gone: write the whole state (this admission in it) anew.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(error = %error, "Gate state file gone; writing it anew.");
                gate.compact(now)
            }
            written => written,
        })
        .await
        .unwrap_or_else(|error| Err(std::io::Error::other(error)));
        if let Err(error) = written {
            let mut state = self.state.lock().unwrap();
            if let Some(key) = dedupe.map(DedupeKey::as_str)
                && state.dedupe.get(key) == Some(now)
            {
                state.dedupe.remove(key);
            }
            if let Some(previous) = previous_cooldown
                && state.cooldown.get(rule, target) == Some(until)
            {
                match previous {
                    Some(previous) => drop(state.cooldown.insert(rule, target, previous)),
                    None => state.cooldown.remove(rule, target),
                }
            }
            return Err(GateError::Write(error));
        }
        self.maintain_if_due(now).await;
        Ok(None)
    }

    /// Compacts when the log has grown well past the live state; off the async threads.
    async fn maintain_if_due(self: &Arc<Self>, now: DateTime<Utc>) {
        let due = {
            let state = self.state.lock().unwrap();
            state.appended > state.dedupe.len() + state.cooldown.len() + self.limits.compact_after
        };
        if due {
            self.compact_off_thread(now).await;
        }
    }

    /// Forgets what has expired and, if that or earlier appends left the log longer than
    /// the state, rewrites it with what is left. Run periodically.
    pub async fn maintain(self: &Arc<Self>, now: DateTime<Utc>) {
        let due = {
            let mut state = self.state.lock().unwrap();
            let expired = state.dedupe.expire(self.expired_before(now)) + state.cooldown.expire(now);
            expired > 0 || state.appended > state.dedupe.len() + state.cooldown.len()
        };
        if due {
            self.compact_off_thread(now).await;
        }
    }

    async fn compact_off_thread(self: &Arc<Self>, now: DateTime<Utc>) {
        let gate = self.clone();
        match tokio::task::spawn_blocking(move || gate.compact(now)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(error = %error, "Cannot compact the gate state."),
            Err(error) => tracing::error!(error = %error, "Gate compaction failed."),
        }
    }

    /// Prunes the state and rewrites the log from it. Blocks.
    fn compact(&self, now: DateTime<Utc>) -> std::io::Result<()> {
        self.log.rewrite(&mut || {
            let mut state = self.state.lock().unwrap();
            state.dedupe.expire(self.expired_before(now));
            state.cooldown.expire(now);
            let evicted =
                std::mem::take(&mut state.evicted) + state.dedupe.bound(self.limits.max_dedupe_keys);
            if evicted > 0 {
                tracing::warn!(
                    evicted,
                    kept = self.limits.max_dedupe_keys,
                    "Too many alerts to remember within dedupe_ttl; the oldest are forgotten."
                );
            }
            let mut lines = Vec::new();
            for (at, key) in &state.dedupe.order {
                lines.extend(Entry::Dedupe { dedupe: key.to_string(), at: *at }.line());
            }
            for (rule, target, until) in state.cooldown.iter() {
                lines.extend(Entry::Cooldown { rule: rule.clone(), target: target.clone(), until }.line());
            }
            state.appended = state.dedupe.len() + state.cooldown.len();
            lines
        })
    }

    /// Waits for the target's CPU-profiler (or tracer) slot: `key` names the target and
    /// the host it reaches.
    pub async fn exclusive(&self, key: &str, kind: ProfileKind) -> ExclusiveSlot {
        let slot = (key.to_string(), kind);
        let lock = self.exclusive.lock().unwrap().entry(slot.clone()).or_default().clone();
        let guard = lock.lock_owned().await;
        ExclusiveSlot { guard: Some(guard), slots: self.exclusive.clone(), slot }
    }

    /// Waits for a place among the captures in flight.
    pub async fn in_flight(&self) -> OwnedSemaphorePermit {
        self.in_flight.clone().acquire_owned().await.expect("the semaphore is never closed")
    }

    pub fn in_flight_available(&self) -> usize {
        self.in_flight.available_permits()
    }

    /// How much state the gate holds.
    pub fn size(&self) -> GateSize {
        let state = self.state.lock().unwrap();
        GateSize {
            dedupe_keys: state.dedupe.len(),
            cooldowns: state.cooldown.len(),
            slots: self.exclusive.lock().unwrap().len(),
            log_lines: state.appended,
        }
    }
}

/// `at` moved by `by`, later or earlier, stopping at the ends of time rather than
/// overflowing: a TTL or cooldown of a thousand years is valid config.
fn shift(at: DateTime<Utc>, by: Duration, later: bool) -> DateTime<Utc> {
    let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
    let moved = if later { at.checked_add_signed(by) } else { at.checked_sub_signed(by) };
    moved.unwrap_or(if later { DateTime::<Utc>::MAX_UTC } else { DateTime::<Utc>::MIN_UTC })
}

/// A held CPU-profiler (or tracer) slot; released on drop, and forgotten once nobody else
/// holds or waits for it.
pub struct ExclusiveSlot {
    guard: Option<OwnedMutexGuard<()>>,
    slots: Slots,
    slot: (String, ProfileKind),
}

impl Drop for ExclusiveSlot {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut slots = self.slots.lock().unwrap();
        // The map's own reference is the only one left: nobody waits for this slot.
        if slots.get(&self.slot).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            slots.remove(&self.slot);
        }
    }
}

#[cfg(test)]
mod tests;
