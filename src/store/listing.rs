//! The index from a listing of the backend, at start and, for a shared store, while
//! running: captures kept elsewhere come in, those deleted elsewhere go. Metadata already
//! known, or skipped before at the same version, is not read again.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::backend::{Backend, Listed};
use super::error::StoreError;
use super::index::Index;
use super::layout::{self, Derived};
use crate::model::{CaptureId, CaptureMeta};

/// The least time between the start of one listing and that of a listing for an unknown
/// id; a slow listing (a large bucket) is spaced by five times its length, so ids that are
/// nowhere keep the bucket listed a fifth of the time at most.
const UNKNOWN_ID_LISTING_GAP: Duration = Duration::from_secs(1);
/// The longest a request for an unknown id waits for its turn to list: past it, the id is
/// not found (the next refresh may find it).
const UNKNOWN_ID_WAIT: Duration = Duration::from_secs(2);

/// A listing of the backend: when it started, and how long it took.
#[derive(Debug, Clone, Copy)]
struct LastListing {
    started: Instant,
    took: Duration,
}

/// The listings of one store's backend: one at a time, what the last one skipped, and
/// whether listing fails.
#[derive(Default)]
pub struct Listings {
    /// Why the last listing failed, while it does.
    trouble: Mutex<Option<String>>,
    /// Metadata the last listing did not take in, to read again only once it changed.
    skipped: Mutex<HashMap<String, Skipped>>,
    /// Held while a listing runs, so one runs at a time; says when the last one started
    /// and how long it took.
    last: Mutex<Option<LastListing>>,
}

/// Metadata a listing did not take in, at the version it was listed with: read again only
/// once it changes.
struct Skipped {
    version: Option<String>,
    /// Read and valid, waiting for its profile to be listed; `None`: unreadable.
    waiting: Option<CaptureMeta>,
}

/// What one listing holds, by key.
struct Listing {
    objects: Vec<Listed>,
    sizes: HashMap<String, u64>,
}

impl Listing {
    fn new(objects: Vec<Listed>) -> Listing {
        let sizes = objects.iter().map(|object| (object.key.clone(), object.size)).collect();
        Listing { objects, sizes }
    }

    fn has(&self, key: &str) -> bool {
        self.sizes.contains_key(key)
    }

    /// What a capture's renderings take.
    fn derived_bytes(&self, target: &str, id: &CaptureId) -> u64 {
        Derived::ALL
            .iter()
            .filter_map(|&derived| self.sizes.get(&layout::derived_key(target, id, derived)))
            .sum()
    }
}

impl Listings {
    /// Lists `backend` and takes what changed into `index`; returns how many captures came
    /// in.
    pub fn list(&self, backend: &dyn Backend, index: &Index) -> Result<usize, StoreError> {
        let mut last = self.last.lock().unwrap();
        self.list_now(backend, index, &mut last)
    }

    /// Why listing fails, while it does.
    pub fn trouble(&self) -> Option<String> {
        self.trouble.lock().unwrap().clone()
    }

    /// A capture not in the index, from a listing that starts after it was asked for (a
    /// capture another instance kept since the last refresh: the link in its annotation
    /// reaches any instance behind a Service). Only for a shared store, and only when its
    /// turn comes soon.
    pub fn find_unknown(&self, backend: &dyn Backend, index: &Index, id: &CaptureId) -> Option<CaptureMeta> {
        if !backend.shared() {
            return None;
        }
        let asked = Instant::now();
        let mut last = self.last.lock().unwrap();
        if !last.is_some_and(|last| last.started >= asked) {
            let turn = last.map_or(asked, |last| last.started + (last.took * 5).max(UNKNOWN_ID_LISTING_GAP));
            let wait = turn.saturating_duration_since(Instant::now());
            if wait > UNKNOWN_ID_WAIT {
                return None;
            }
            std::thread::sleep(wait);
            self.list_now(backend, index, &mut last).ok()?;
        }
        index.get(id)
    }

    /// Lists and takes in; `last` (the listing lock) says when this one started and how
    /// long it took.
    fn list_now(
        &self,
        backend: &dyn Backend,
        index: &Index,
        last: &mut Option<LastListing>,
    ) -> Result<usize, StoreError> {
        let started = Instant::now();
        // Taken before the listing: what this instance keeps meanwhile is in neither.
        let known = index.ids();
        let listed = backend.list();
        *last = Some(LastListing { started, took: started.elapsed() });
        let listing = Listing::new(self.note_trouble(&backend.describe(), listed)?);
        Ok(self.take_in(backend, index, &listing, &known))
    }

    /// Says when listing starts and stops failing.
    fn note_trouble(
        &self,
        place: &str,
        listed: Result<Vec<Listed>, StoreError>,
    ) -> Result<Vec<Listed>, StoreError> {
        match listed {
            Ok(objects) => {
                if let Some(was) = self.trouble.lock().unwrap().take() {
                    tracing::info!(store = %place, was = %was, "The store can be listed again.");
                }
                Ok(objects)
            }
            Err(error) => {
                let message = error.to_string();
                let before = self.trouble.lock().unwrap().replace(message.clone());
                if before.as_ref() != Some(&message) {
                    tracing::error!(store = %place, error = %message, "Cannot list the store: captures of other instances are not seen, and captures may fail.");
                }
                Err(error)
            }
        }
    }

    /// Indexes the captures of `listing` not `known`, forgets the known ones it no longer
    /// holds, and (in a store of this instance alone) deletes profiles that have no
    /// metadata: a capture interrupted between its two writes.
    fn take_in(
        &self,
        backend: &dyn Backend,
        index: &Index,
        listing: &Listing,
        known: &HashSet<CaptureId>,
    ) -> usize {
        let mut skipped = self.skipped.lock().unwrap();
        let mut still_skipped = HashMap::new();
        let (mut listed, mut referenced) = (HashSet::new(), HashSet::new());
        let mut added = 0;
        for object in &listing.objects {
            let Some((target, id)) = layout::parse_metadata_key(&object.key) else { continue };
            listed.insert(id.clone());
            if known.contains(&id) {
                continue;
            }
            let earlier = skipped.remove(&object.key).filter(|earlier| earlier.version == object.version);
            let meta = match earlier {
                Some(Skipped { waiting: Some(meta), .. }) => Some(meta),
                Some(Skipped { waiting: None, .. }) => None,
                None => read_metadata(backend, &object.key, target, &id),
            };
            let Some(meta) = meta else {
                still_skipped
                    .insert(object.key.clone(), Skipped { version: object.version.clone(), waiting: None });
                continue;
            };
            let profile = layout::profile_key(&meta);
            if let Some(key) = profile.as_ref().filter(|key| !listing.has(key)) {
                if backend.shared() {
                    // Its writer puts the profile first: it is listed by the next refresh.
                    let waiting = Skipped { version: object.version.clone(), waiting: Some(meta) };
                    still_skipped.insert(object.key.clone(), waiting);
                } else {
                    tracing::warn!(id = %id, key = %key, "Profile missing; capture dropped from the index.");
                }
                continue;
            }
            referenced.extend(profile);
            let bytes = object.size + listing.derived_bytes(target, &id);
            index.insert(meta, bytes);
            added += 1;
        }
        *skipped = still_skipped;
        drop(skipped);
        forget_gone(index, known, &listed);
        if !backend.shared() {
            delete_orphans(backend, listing, &referenced);
        }
        added
    }
}

/// Forgets the captures deleted elsewhere (retention of another instance).
fn forget_gone(index: &Index, known: &HashSet<CaptureId>, listed: &HashSet<CaptureId>) {
    let gone: Vec<&CaptureId> = known.difference(listed).collect();
    for id in &gone {
        index.remove(id);
    }
    if !gone.is_empty() {
        tracing::debug!(gone = gone.len(), "Captures deleted elsewhere forgotten.");
    }
}

/// Deletes profiles no capture's metadata names. Only a store of this instance alone
/// does, and only while it is opened, when nothing is being written.
fn delete_orphans(backend: &dyn Backend, listing: &Listing, referenced: &HashSet<String>) {
    for object in &listing.objects {
        let is_profile =
            !object.key.ends_with(".json") && !Derived::ALL.iter().any(|d| object.key.ends_with(d.suffix()));
        if is_profile && !referenced.contains(&object.key) {
            tracing::warn!(key = %object.key, "Profile without metadata deleted.");
            backend.delete(&object.key).ok();
        }
    }
}

/// A capture's metadata at `key`, if it reads and matches its place (else logged).
fn read_metadata(backend: &dyn Backend, key: &str, target: &str, id: &CaptureId) -> Option<CaptureMeta> {
    let read = backend.open(key).and_then(|file| {
        let bytes = match file {
            Some(file) => file.read_all().map_err(StoreError::io("read", std::path::Path::new(key)))?,
            None => Vec::new(),
        };
        serde_json::from_slice::<CaptureMeta>(&bytes)
            .map_err(|source| StoreError::Metadata { key: key.to_string(), source })
    });
    match read {
        Ok(meta) if meta.target == target && meta.id == *id => Some(meta),
        Ok(_) => {
            tracing::warn!(key = %key, "Capture metadata does not match its place; skipped.");
            None
        }
        Err(error) => {
            tracing::warn!(key = %key, error = %error, "Unreadable capture metadata skipped.");
            None
        }
    }
}
