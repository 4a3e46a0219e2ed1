//! The index from a listing of the backend, at start and, for a shared store, while
//! running: captures kept elsewhere come in, those deleted elsewhere go. Metadata already
//! known, or skipped before at the same version, is not read again.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::{
    Derived, LastListing, Listed, ProfileStore, StoreError, UNKNOWN_ID_LISTING_GAP, UNKNOWN_ID_WAIT, layout,
};
use crate::model::{CaptureId, CaptureMeta};

/// Metadata a listing did not take in, at the version it was listed with: read again only
/// once it changes.
pub(super) struct Skipped {
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

impl ProfileStore {
    /// For a shared store, lists the backend and takes in what changed; returns how many
    /// captures came in. A store of this instance alone was listed at start, and knows the
    /// rest.
    pub fn refresh(&self) -> Result<usize, StoreError> {
        if !self.backend.shared() {
            return Ok(0);
        }
        let mut last = self.listing.lock().unwrap();
        self.list_now(&mut last)
    }

    /// The first listing, when the store is opened.
    pub(super) fn list_at_start(&self) -> Result<usize, StoreError> {
        let mut last = self.listing.lock().unwrap();
        self.list_now(&mut last)
    }

    /// A capture not in the index, from a listing that starts after it was asked for (a
    /// capture another instance kept since the last refresh: the link in its annotation
    /// reaches any instance behind a Service). Only for a shared store, and only when its
    /// turn comes soon.
    pub(super) fn find_unknown(&self, id: &CaptureId) -> Option<CaptureMeta> {
        if !self.backend.shared() {
            return None;
        }
        let asked = Instant::now();
        let mut last = self.listing.lock().unwrap();
        if !last.is_some_and(|last| last.started >= asked) {
            let turn = last.map_or(asked, |last| last.started + (last.took * 5).max(UNKNOWN_ID_LISTING_GAP));
            let wait = turn.saturating_duration_since(Instant::now());
            if wait > UNKNOWN_ID_WAIT {
                return None;
            }
            std::thread::sleep(wait);
            self.list_now(&mut last).ok()?;
        }
        self.index.get(id)
    }

    /// Lists and takes in; `last` (the listing lock) says when this one started and how
    /// long it took.
    fn list_now(&self, last: &mut Option<LastListing>) -> Result<usize, StoreError> {
        let started = Instant::now();
        // Taken before the listing: what this instance keeps meanwhile is in neither.
        let known = self.index.ids();
        let listed = self.backend.list();
        *last = Some(LastListing { started, took: started.elapsed() });
        let listing = Listing::new(self.note_trouble(listed)?);
        Ok(self.take_in(&listing, &known))
    }

    /// Says when listing starts and stops failing.
    fn note_trouble(&self, listed: Result<Vec<Listed>, StoreError>) -> Result<Vec<Listed>, StoreError> {
        let place = self.backend.describe();
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
    fn take_in(&self, listing: &Listing, known: &HashSet<CaptureId>) -> usize {
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
                None => self.read_metadata(&object.key, target, &id),
            };
            let Some(meta) = meta else {
                still_skipped
                    .insert(object.key.clone(), Skipped { version: object.version.clone(), waiting: None });
                continue;
            };
            let profile = layout::profile_key(&meta);
            if let Some(key) = profile.as_ref().filter(|key| !listing.has(key)) {
                if self.backend.shared() {
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
            self.index.insert(meta, bytes);
            added += 1;
        }
        *skipped = still_skipped;
        drop(skipped);
        self.forget_gone(known, &listed);
        if !self.backend.shared() {
            self.delete_orphans(listing, &referenced);
        }
        added
    }

    /// Forgets the captures deleted elsewhere (retention of another instance).
    fn forget_gone(&self, known: &HashSet<CaptureId>, listed: &HashSet<CaptureId>) {
        let gone: Vec<&CaptureId> = known.difference(listed).collect();
        for id in &gone {
            self.index.remove(id);
        }
        if !gone.is_empty() {
            tracing::debug!(gone = gone.len(), "Captures deleted elsewhere forgotten.");
        }
    }

    /// Deletes profiles no capture's metadata names. Only a store of this instance alone
    /// does, and only while it is opened, when nothing is being written.
    fn delete_orphans(&self, listing: &Listing, referenced: &HashSet<String>) {
        for object in &listing.objects {
            let is_profile = !object.key.ends_with(".json")
                && !Derived::ALL.iter().any(|d| object.key.ends_with(d.suffix()));
            if is_profile && !referenced.contains(&object.key) {
                tracing::warn!(key = %object.key, "Profile without metadata deleted.");
                self.backend.delete(&object.key).ok();
            }
        }
    }

    /// A capture's metadata at `key`, if it reads and matches its place (else logged).
    fn read_metadata(&self, key: &str, target: &str, id: &CaptureId) -> Option<CaptureMeta> {
        let read = self.backend.open(key).and_then(|file| {
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
}
