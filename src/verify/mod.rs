//! Re-checks a rule's signals against the target's latest local readings before anything
//! touches the target: an alert is late by the time it arrives.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::config::SignalCheck;

/// Latest reading of each signal, by name.
pub type Readings = BTreeMap<String, f64>;

/// Whether a rule's condition holds now, with the readings it was judged on.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Holds { readings: Readings },
    NotVerified { reason: String, readings: Readings },
}

/// Holds each target's latest readings for the verify stage.
#[derive(Default)]
pub struct Verifier {
    latest: Mutex<HashMap<String, Readings>>,
}

impl Verifier {
    /// Records a target's latest readings.
    pub fn update(&self, target: &str, readings: Readings) {
        self.latest
            .lock()
            .unwrap()
            .insert(target.to_string(), readings);
    }

    /// Judges `checks` on the target's latest readings. No checks: the alert alone is
    /// enough. A signal without a reading does not verify.
    pub fn verify(&self, target: &str, checks: &[SignalCheck]) -> Verdict {
        let readings = self
            .latest
            .lock()
            .unwrap()
            .get(target)
            .cloned()
            .unwrap_or_default();
        for check in checks {
            let name = check.signal.name();
            let Some(&value) = readings.get(name) else {
                return Verdict::NotVerified {
                    reason: format!("no reading of {name} for {target}"),
                    readings,
                };
            };
            if let Some(min) = check.threshold.min
                && value < min
            {
                return Verdict::NotVerified {
                    reason: format!("{name} {value:.1} < min {min}"),
                    readings,
                };
            }
        }
        Verdict::Holds { readings }
    }
}
