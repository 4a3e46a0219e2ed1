//! The in-memory index of kept captures that every store keeps: ids in time order, ids
//! handed out but not yet kept, and what retention deletes first.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::error::StoreError;
use crate::model::{CaptureId, CaptureMeta, ProfileKind};

/// Which captures to list.
#[derive(Debug, Clone, Default)]
pub struct CaptureFilter {
    pub target: Option<String>,
    pub rule: Option<String>,
    pub kind: Option<ProfileKind>,
    pub limit: Option<usize>,
}

impl CaptureFilter {
    pub fn matches(&self, meta: &CaptureMeta) -> bool {
        self.target.as_ref().is_none_or(|t| *t == meta.target)
            && self.rule.as_ref().is_none_or(|r| *r == meta.rule)
            && self.kind.is_none_or(|k| k == meta.kind)
    }
}

/// A capture in the index, with what its files take besides the profile.
pub(super) struct Indexed {
    pub meta: CaptureMeta,
    /// Bytes of its metadata and renderings: a capture's labels can weigh more than its
    /// profile, and retention counts them all.
    pub other_bytes: u64,
}

impl Indexed {
    fn bytes(&self) -> u64 {
        self.meta.bytes().saturating_add(self.other_bytes)
    }
}

#[derive(Default)]
pub(super) struct Index {
    /// By id; ids start with their UTC time, so this is time order.
    captures: RwLock<BTreeMap<CaptureId, Indexed>>,
    /// Ids handed out whose capture has not been kept, so two captures started in the
    /// same millisecond never share one.
    reserved: Mutex<HashSet<CaptureId>>,
}

impl Index {
    pub fn len(&self) -> usize {
        self.captures.read().unwrap().len()
    }

    pub fn ids(&self) -> HashSet<CaptureId> {
        self.captures.read().unwrap().keys().cloned().collect()
    }

    /// `base`, or `base-2`, `base-3`…: the first id neither kept nor handed out.
    pub fn new_id(&self, base: CaptureId) -> CaptureId {
        let captures = self.captures.read().unwrap();
        let mut reserved = self.reserved.lock().unwrap();
        let id = (1..)
            .map(|n| if n == 1 { base.clone() } else { base.with_suffix(&n.to_string()) })
            .find(|id| !captures.contains_key(id) && !reserved.contains(id))
            .expect("an unused id");
        reserved.insert(id.clone());
        id
    }

    /// Ends the reservation of `id`, kept or not.
    pub fn release(&self, id: &CaptureId) {
        self.reserved.lock().unwrap().remove(id);
    }

    pub fn insert(&self, meta: CaptureMeta, other_bytes: u64) {
        self.captures.write().unwrap().insert(meta.id.clone(), Indexed { meta, other_bytes });
    }

    pub fn remove(&self, id: &CaptureId) {
        self.captures.write().unwrap().remove(id);
    }

    /// Counts a rendering kept for `id`; false if the capture is gone meanwhile.
    pub fn add_other_bytes(&self, id: &CaptureId, bytes: u64) -> bool {
        match self.captures.write().unwrap().get_mut(id) {
            Some(indexed) => {
                indexed.other_bytes = indexed.other_bytes.saturating_add(bytes);
                true
            }
            None => false,
        }
    }

    pub fn get(&self, id: &CaptureId) -> Option<CaptureMeta> {
        self.captures.read().unwrap().get(id).map(|indexed| indexed.meta.clone())
    }

    /// Newest first.
    pub fn list(&self, filter: &CaptureFilter) -> Vec<CaptureMeta> {
        let captures = self.captures.read().unwrap();
        captures
            .values()
            .rev()
            .map(|indexed| &indexed.meta)
            .filter(|meta| filter.matches(meta))
            .take(filter.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    /// Deletes (with `delete`) and forgets what retention takes at `now`; returns how many.
    pub fn retire(
        &self,
        now: DateTime<Utc>,
        max_age: Option<Duration>,
        max_bytes: Option<u64>,
        delete: impl Fn(&CaptureMeta) -> Result<(), StoreError>,
    ) -> Result<usize, StoreError> {
        let victims = self.past_retention(now, max_age, max_bytes);
        for meta in &victims {
            delete(meta)?;
            self.remove(&meta.id);
            tracing::info!(id = %meta.id, target = %meta.target, bytes = meta.bytes(), "Capture deleted by retention.");
        }
        Ok(victims.len())
    }

    /// What retention deletes, oldest first: past `max_age`, then while the total is over
    /// `max_bytes`. The newest capture is always kept, even if it alone is over.
    fn past_retention(
        &self,
        now: DateTime<Utc>,
        max_age: Option<Duration>,
        max_bytes: Option<u64>,
    ) -> Vec<CaptureMeta> {
        let captures = self.captures.read().unwrap();
        let mut total: u64 = captures.values().map(Indexed::bytes).sum();
        let newest = captures.keys().next_back().cloned();
        let mut victims = Vec::new();
        for indexed in captures.values() {
            let meta = &indexed.meta;
            if Some(&meta.id) == newest.as_ref() {
                break;
            }
            let too_old = max_age.is_some_and(|age| {
                now.signed_duration_since(meta.finished_at).to_std().is_ok_and(|elapsed| elapsed > age)
            });
            let too_big = max_bytes.is_some_and(|max| total > max);
            if !(too_old || too_big) {
                continue;
            }
            total -= indexed.bytes();
            victims.push(meta.clone());
        }
        victims
    }
}
