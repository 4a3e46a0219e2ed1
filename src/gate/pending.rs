//! Alerts whose jobs are queued or running. HA Alertmanager peers each send every alert:
//! a copy that arrives while the first one's job waits or runs is a duplicate at intake,
//! and takes no place in the queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

/// The dedupe keys held by queued and running jobs, with when each was taken.
#[derive(Debug, Default, Clone)]
pub(super) struct PendingKeys(Arc<Mutex<HashMap<Arc<str>, DateTime<Utc>>>>);

impl PendingKeys {
    /// Holds `key` for a new job, or says since when another job holds it.
    pub(super) fn hold(&self, key: &str, now: DateTime<Utc>) -> Result<Pending, DateTime<Utc>> {
        let mut keys = self.0.lock().unwrap();
        if let Some(since) = keys.get(key) {
            return Err(*since);
        }
        let key: Arc<str> = key.into();
        keys.insert(key.clone(), now);
        Ok(Pending { key, keys: self.clone() })
    }

    pub(super) fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// A job's hold on its alert's dedupe key, from intake until the job is decided (or
/// dropped, or refused with its payload): let go when this is dropped.
#[derive(Debug)]
pub struct Pending {
    key: Arc<str>,
    keys: PendingKeys,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.keys.0.lock().unwrap().remove(&self.key);
    }
}
