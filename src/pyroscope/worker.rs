//! The worker that drains the queue into Pyroscope, one push at a time, waiting out a
//! Pyroscope that is down, slow or busy with backoff, until shutdown.

use std::hash::BuildHasher;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::client::PushOutcome;
use super::{PushQueue, PushResult, PyroscopeClient};

/// The waits between failed tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// After the first failure; doubled after each further one in a row.
    pub first: Duration,
    /// The longest wait of the doubling.
    pub max: Duration,
    /// The most of a `Retry-After` honoured: a wrong header must not stop pushes for days.
    pub max_retry_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(300),
            max_retry_after: Duration::from_secs(3600),
        }
    }
}

impl Backoff {
    /// The wait after `failures` failed tries in a row: doubling from `first` up to `max`,
    /// less up to a fifth by `random` (in 0..1) so that alertprofs do not all come back at
    /// once; and never less than Pyroscope asked for with `Retry-After`.
    pub fn wait(&self, failures: u32, retry_after: Option<Duration>, random: f64) -> Duration {
        let doubling = 1u32 << failures.saturating_sub(1).min(30);
        let wait = self.first.saturating_mul(doubling).min(self.max);
        let jittered = wait.mul_f64(1.0 - 0.2 * random.clamp(0.0, 1.0));
        jittered.max(retry_after.unwrap_or_default().min(self.max_retry_after))
    }
}

/// Drains one queue into one Pyroscope. A push that keeps failing does not hold back the
/// others: after a failed try the worker goes on with the next push, and comes back to it
/// on its next round.
pub struct PushWorker {
    queue: PushQueue,
    client: PyroscopeClient,
    backoff: Backoff,
}

/// How one try at a push went.
enum Attempt {
    /// The push is done with, for this reason.
    Done(PushResult),
    Retry {
        name: String,
        reason: String,
        retry_after: Option<Duration>,
    },
}

impl PushWorker {
    pub fn new(queue: PushQueue, client: PyroscopeClient) -> PushWorker {
        PushWorker { queue, client, backoff: Backoff::default() }
    }

    pub fn with_backoff(self, backoff: Backoff) -> PushWorker {
        PushWorker { backoff, ..self }
    }

    /// Pushes until `cancel`, which stops it at once, mid-push too: a push cut short stays
    /// queued and goes again after the restart. Spawn it on the shutdown's task tracker.
    pub async fn run(self, cancel: CancellationToken) {
        // Failed tries in a row; an answer from Pyroscope (taken or refused) ends the row.
        let mut failures = 0u32;
        // Where the next try starts: past a push that just failed.
        let mut cursor = 0u64;
        loop {
            let Some(seq) = self.queue.take(cursor) else {
                tokio::select! {
                    () = self.queue.queued() => continue,
                    () = cancel.cancelled() => return,
                }
            };
            let attempt = tokio::select! {
                attempt = self.attempt(seq) => attempt,
                () = cancel.cancelled() => {
                    self.queue.release();
                    return;
                }
            };
            let (name, reason, retry_after) = match attempt {
                Attempt::Done(result) => {
                    if matches!(result, PushResult::Ok | PushResult::Rejected) {
                        failures = 0;
                    }
                    self.queue.finish(seq, result);
                    continue;
                }
                Attempt::Retry { name, reason, retry_after } => (name, reason, retry_after),
            };
            self.queue.release();
            self.queue.metrics().count(PushResult::Retry);
            failures = failures.saturating_add(1);
            cursor = seq + 1;
            let wait = self.backoff.wait(failures, retry_after, random_fraction());
            tracing::info!(
                push = %name,
                failures,
                wait_ms = wait.as_millis() as u64,
                error = %reason,
                "Push to Pyroscope failed; trying again later."
            );
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = cancel.cancelled() => return,
            }
        }
    }

    /// One try at the push `seq`: read back, dropped if its capture's retention is over,
    /// else pushed.
    async fn attempt(&self, seq: u64) -> Attempt {
        let queue = self.queue.clone();
        let (entry, profile) = match tokio::task::spawn_blocking(move || queue.load(seq)).await {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "Queued push to Pyroscope cannot be read; dropped.");
                return Attempt::Done(PushResult::DroppedInvalid);
            }
            Err(error) => {
                tracing::warn!(seq, error = %error, "Reading a queued push to Pyroscope failed; dropped.");
                return Attempt::Done(PushResult::DroppedInvalid);
            }
        };
        let name = entry.name;
        if entry.expires_at <= Utc::now() {
            tracing::warn!(
                push = %name,
                queued_at = %entry.enqueued_at,
                expires_at = %entry.expires_at,
                "Push to Pyroscope dropped: the capture's retention ended before Pyroscope took it."
            );
            return Attempt::Done(PushResult::DroppedExpired);
        }
        match self.client.push(&name, &entry.labels, profile).await {
            PushOutcome::Accepted => {
                tracing::debug!(push = %name, "Profile pushed to Pyroscope.");
                Attempt::Done(PushResult::Ok)
            }
            PushOutcome::Rejected { status, reason } => {
                tracing::warn!(push = %name, status, reason = %reason, "Pyroscope refused a push; dropped.");
                Attempt::Done(PushResult::Rejected)
            }
            PushOutcome::Retry { reason, retry_after } => Attempt::Retry { name, reason, retry_after },
        }
    }
}

/// A number in 0..1, different on each call: enough for jitter, with no crate for it.
fn random_fraction() -> f64 {
    let bits = std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits double from the first up to the cap, however many failures; jitter only
    /// shortens them, by at most a fifth; `Retry-After` is a floor, itself capped.
    #[test]
    fn backoff_waits() {
        let backoff = Backoff::default();
        let waits: Vec<u64> = (1..=11).map(|n| backoff.wait(n, None, 0.0).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff.wait(u32::MAX, None, 0.0), Duration::from_secs(300));
        assert_eq!(backoff.wait(3, None, 1.0), Duration::from_millis(3200));
        assert_eq!(backoff.wait(3, None, 0.5), Duration::from_millis(3600));
        assert_eq!(backoff.wait(1, Some(Duration::from_secs(42)), 0.0), Duration::from_secs(42));
        assert_eq!(backoff.wait(4, Some(Duration::from_secs(2)), 0.0), Duration::from_secs(8));
        assert_eq!(backoff.wait(1, Some(Duration::from_secs(86_400)), 0.0), Duration::from_secs(3600));
    }

    /// The jitter's numbers stay in 0..1 and are not all the same.
    #[test]
    fn random_fractions() {
        let numbers: Vec<f64> = (0..100).map(|_| random_fraction()).collect();
        assert!(numbers.iter().all(|n| (0.0..1.0).contains(n)), "{numbers:?}");
        assert!(numbers.iter().any(|n| *n != numbers[0]), "{numbers:?}");
    }
}
