//! Capture once across instances: before any request to a target, an instance claims the
//! alert's dedupe key and the rule's cooldown on the target in the shared bucket, with
//! conditional writes (`If-None-Match: *` to create a claim, `If-Match` on its ETag to take
//! over an expired one). Whoever writes first holds it; the others are refused, and say
//! who holds it. A dedupe claim is held for the capture's timeout until its capture is
//! done, so a claim whose holder died mid-capture expires and another instance may take
//! the alert.
//!
//! `.claims/dedupe/<sha256 of the key>.json` and `.claims/cooldown/<rule>/<target>.json`
//! under the bucket's prefix; the local gate stays in front of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::keys::{CooldownKey, DedupeKey};
use crate::bucket::{Bucket, BucketError};
use crate::model::Refusal;

/// A claim as kept in the bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claim {
    holder: String,
    at: DateTime<Utc>,
    /// A dedupe claim: until when it holds while its capture runs; a cooldown: its end.
    until: DateTime<Utc>,
    /// A dedupe claim whose capture is over: it holds for `dedupe_ttl` from `at`.
    #[serde(default)]
    done: bool,
}

/// Why the bucket could not say who holds a claim: nothing may be requested of the
/// target.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(transparent)]
    Bucket(#[from] BucketError),
    #[error("the bucket gave no ETag for {0}; claims need conditional writes")]
    NoETag(String),
    #[error("{key}: not a claim: {source}")]
    NotAClaim { key: String, source: serde_json::Error },
}

/// What an instance claimed, to mark done or give back.
#[derive(Debug, Clone)]
pub struct Claimed {
    dedupe: Option<String>,
    cooldown: Option<String>,
}

/// How often dedupe claims are listed for pruning: each holds for `dedupe_ttl` (days), and
/// there may be tens of thousands, so once an hour is soon enough and cheap.
const PRUNE_DEDUPE_EVERY: chrono::Duration = chrono::Duration::hours(1);

/// A cooldown claim's end, with the version (ETag) it was read at.
type Versioned = (Option<String>, DateTime<Utc>);

pub struct Claims {
    bucket: Arc<Bucket>,
    /// Who this instance is, as other instances' reasons name it.
    holder: String,
    dedupe_ttl: Duration,
    /// When each cooldown claim seen ends, by key, with the version it was read at: a
    /// claim is read again only once it changed.
    cooldowns: Mutex<HashMap<String, Versioned>>,
    /// When the dedupe claims were last listed for pruning.
    dedupe_pruned: Mutex<Option<DateTime<Utc>>>,
}

impl Claims {
    pub fn new(bucket: Arc<Bucket>, holder: String, dedupe_ttl: Duration) -> Claims {
        Claims {
            bucket,
            holder,
            dedupe_ttl,
            cooldowns: Mutex::new(HashMap::new()),
            dedupe_pruned: Mutex::new(None),
        }
    }

    fn dedupe_key(key: &DedupeKey) -> String {
        format!(".claims/dedupe/{}.json", hex::encode(&Sha256::digest(key.as_str().as_bytes())[..16]))
    }

    /// The target is a target's name, or `name@host:port` for an instance of a templated
    /// one (an IPv6 host's brackets left out: object names keep them only encoded).
    fn cooldown_key(key: &CooldownKey<'_>) -> String {
        format!(".claims/cooldown/{}/{}.json", key.rule(), key.target().replace(['[', ']'], ""))
    }

    /// Claims the alert and the cooldown before a capture that may take `hold`. Blocks.
    /// `Ok(Err(refusal))`: another instance holds one of them (nothing is left claimed).
    /// `Err`: the bucket could not say; nothing may be requested of the target.
    pub fn claim(
        &self,
        dedupe: Option<&DedupeKey>,
        key: &CooldownKey<'_>,
        cooldown: Duration,
        hold: Duration,
        now: DateTime<Utc>,
    ) -> Result<Result<Claimed, Refusal>, ClaimError> {
        let held = match dedupe {
            None => None,
            Some(key) => {
                let until = now + chrono::Duration::from_std(hold).unwrap_or_default();
                let claim = Claim { holder: self.holder.clone(), at: now, until, done: false };
                match self.take(&Self::dedupe_key(key), &claim, |held| self.dedupe_holds(held, now))? {
                    Ok(()) => Some(Self::dedupe_key(key)),
                    Err(other) => {
                        return Ok(Err(Refusal::DuplicateElsewhere {
                            first_seen: other.at,
                            by: other.holder,
                        }));
                    }
                }
            }
        };
        let mut cooldown_key = None;
        if !cooldown.is_zero() {
            let until = now + chrono::Duration::from_std(cooldown).unwrap_or_default();
            let claim = Claim { holder: self.holder.clone(), at: now, until, done: true };
            let key = Self::cooldown_key(key);
            let taken = self.take(&key, &claim, |held| held.until > now);
            if matches!(taken, Ok(Ok(()))) {
                cooldown_key = Some(key);
            }
            let refused = match taken {
                Ok(Ok(())) => None,
                Ok(Err(other)) => {
                    Some(Ok(Err(Refusal::CooldownElsewhere { until: other.until, by: other.holder })))
                }
                Err(error) => Some(Err(error)),
            };
            if let Some(result) = refused {
                // The alert was not captured: a later delivery may be, once the cooldown ends.
                if let Some(key) = &held {
                    self.bucket.delete(key).ok();
                }
                return result;
            }
        }
        Ok(Ok(Claimed { dedupe: held, cooldown: cooldown_key }))
    }

    /// A dedupe claim holds while its capture may still run, and once done for `dedupe_ttl`.
    fn dedupe_holds(&self, claim: &Claim, now: DateTime<Utc>) -> bool {
        match claim.done {
            true => claim.at + chrono::Duration::from_std(self.dedupe_ttl).unwrap_or_default() > now,
            false => claim.until > now,
        }
    }

    /// Writes `claim` at `key` if nobody holds it: creates it, or takes over one that no
    /// longer `holds`, on its ETag. `Ok(Err(other))`: `other` holds it.
    fn take(
        &self,
        key: &str,
        claim: &Claim,
        holds: impl Fn(&Claim) -> bool,
    ) -> Result<Result<(), Claim>, ClaimError> {
        let body = Bytes::from(serde_json::to_vec(claim).expect("a claim serializes"));
        // Two rounds: a claim deleted or taken over between our read and our write.
        for _ in 0..2 {
            match self.bucket.create(key, body.clone()) {
                Ok(_) => return Ok(Ok(())),
                Err(BucketError::Conflict(_)) => {}
                Err(error) => return Err(error.into()),
            }
            let (bytes, object) = match self.bucket.get(key) {
                Ok(found) => found,
                Err(BucketError::NotFound(_)) => continue,
                Err(error) => return Err(error.into()),
            };
            let current: Claim = match serde_json::from_slice(&bytes) {
                Ok(current) => current,
                // Not a claim this version wrote: taken over like an expired one.
                Err(_) => Claim {
                    holder: "unknown".into(),
                    at: DateTime::<Utc>::MIN_UTC,
                    until: DateTime::<Utc>::MIN_UTC,
                    done: false,
                },
            };
            if holds(&current) {
                return Ok(Err(current));
            }
            let Some(e_tag) = object.e_tag else {
                return Err(ClaimError::NoETag(key.to_string()));
            };
            tracing::info!(key = %key, holder = %current.holder, "Taking over an expired claim.");
            match self.bucket.update(key, body.clone(), &e_tag) {
                Ok(_) => return Ok(Ok(())),
                Err(BucketError::Conflict(_) | BucketError::NotFound(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        let (bytes, _) = self.bucket.get(key)?;
        serde_json::from_slice::<Claim>(&bytes)
            .map(Err)
            .map_err(|source| ClaimError::NotAClaim { key: key.to_string(), source })
    }

    /// Nothing was captured after all (the local gate refused the job): what was claimed
    /// is given back, so that another instance, or a later delivery, may capture. Blocks;
    /// a failure is logged (the claims then expire).
    pub fn give_back(&self, held: &Claimed) {
        for key in held.dedupe.iter().chain(&held.cooldown) {
            if let Err(error) = self.bucket.delete(key) {
                tracing::warn!(key = %key, error = %error, "Cannot give back a claim; it expires.");
            }
            self.cooldowns.lock().unwrap().remove(key);
        }
    }

    /// The capture is over: its dedupe claim now holds for `dedupe_ttl`. Blocks; a failure
    /// is logged (the claim then expires after the capture's timeout).
    pub fn done(&self, held: &Claimed, now: DateTime<Utc>) {
        let Some(key) = &held.dedupe else { return };
        let claim = Claim { holder: self.holder.clone(), at: now, until: now, done: true };
        let body = Bytes::from(serde_json::to_vec(&claim).expect("a claim serializes"));
        if let Err(error) = self.bucket.put(key, body) {
            tracing::warn!(key = %key, error = %error, "Cannot mark a claim done; it expires after the capture's timeout.");
        }
    }

    /// Deletes cooldowns that have ended and, once an hour, dedupe claims written longer
    /// than `dedupe_ttl` ago (by then every one is over, done or expired). Blocks.
    pub fn prune(&self, now: DateTime<Utc>) -> Result<usize, BucketError> {
        let mut pruned = self.prune_cooldowns(now)?;
        let due = self.dedupe_pruned.lock().unwrap().is_none_or(|last| last + PRUNE_DEDUPE_EVERY <= now);
        if due {
            let ttl = chrono::Duration::from_std(self.dedupe_ttl).unwrap_or_default();
            let objects = self.bucket.list(".claims/dedupe")?;
            for object in objects {
                if object.modified.is_some_and(|modified| modified + ttl < now)
                    && self.bucket.delete(&object.key).is_ok()
                {
                    pruned += 1;
                }
            }
            *self.dedupe_pruned.lock().unwrap() = Some(now);
        }
        Ok(pruned)
    }

    /// Deletes the cooldown claims that have ended: one per rule and target (or instance
    /// of one) that captured lately, each read once per version.
    fn prune_cooldowns(&self, now: DateTime<Utc>) -> Result<usize, BucketError> {
        let objects = self.bucket.list(".claims/cooldown")?;
        let mut seen = self.cooldowns.lock().unwrap().clone();
        seen.retain(|key, _| objects.iter().any(|object| &object.key == key));
        let mut pruned = 0;
        for object in objects {
            let until = match seen.get(&object.key) {
                Some((e_tag, until)) if *e_tag == object.e_tag => *until,
                _ => {
                    let Ok((bytes, read)) = self.bucket.get(&object.key) else { continue };
                    let Ok(claim) = serde_json::from_slice::<Claim>(&bytes) else { continue };
                    seen.insert(object.key.clone(), (read.e_tag, claim.until));
                    claim.until
                }
            };
            if until <= now && self.bucket.delete(&object.key).is_ok() {
                seen.remove(&object.key);
                pruned += 1;
            }
        }
        *self.cooldowns.lock().unwrap() = seen;
        Ok(pruned)
    }
}

/// This instance's name in claims: its host and process.
pub fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    format!("{} pid {}", if host.is_empty() { "unknown host" } else { host }, std::process::id())
}
