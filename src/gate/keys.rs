//! What the gate keeps its state under: an alert's dedupe key, and a rule's cooldown on a
//! target. Both are written to the state log and the bucket's claims as text; they are
//! made here, and nowhere else.

use std::borrow::Cow;
use std::fmt::Write;

use crate::model::CaptureRole;

/// One capture per alert (its fingerprint and `startsAt`), rule and target:
/// `fp@1763719200000000000/cpu-spike/checkout`, and `…/resolved` for the baseline of the
/// same alert resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct DedupeKey(String);

impl DedupeKey {
    pub fn new(
        fingerprint: &str,
        starts_at_nanos: i64,
        rule: &str,
        target: &str,
        resolved: bool,
    ) -> DedupeKey {
        let mut key = DedupeKey::default();
        key.rewrite(fingerprint, starts_at_nanos, rule, target, resolved);
        key
    }

    /// Makes this the key of other parts, keeping its buffer: a storm of repeats, refused
    /// by the gate, allocates no key.
    pub fn rewrite(
        &mut self,
        fingerprint: &str,
        starts_at_nanos: i64,
        rule: &str,
        target: &str,
        resolved: bool,
    ) {
        self.0.clear();
        let resolved = if resolved { "/resolved" } else { "" };
        write!(self.0, "{fingerprint}@{starts_at_nanos}/{rule}/{target}{resolved}")
            .expect("a String takes it");
    }

    /// A key as the state log or a claim has it.
    pub fn from_stored(text: String) -> DedupeKey {
        DedupeKey(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A rule's cooldown on a target: the rule's name, with `/baseline` for the cooldown of its
/// baselines (rule names have no `/`, so a baseline right after a spike is not refused by
/// the spike's cooldown, nor a spike by a baseline's); the target's name, or
/// `name@host:port` for an instance of a templated target. Borrowed where it can be: the
/// webhook asks for every alert.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CooldownKey<'a> {
    rule: Cow<'a, str>,
    target: Cow<'a, str>,
}

impl<'a> CooldownKey<'a> {
    pub fn new(rule: &'a str, role: CaptureRole, target: Cow<'a, str>) -> CooldownKey<'a> {
        let rule = match role {
            CaptureRole::Baseline => Cow::Owned(format!("{rule}/baseline")),
            CaptureRole::Spike | CaptureRole::BeforeWindow => Cow::Borrowed(rule),
        };
        CooldownKey { rule, target }
    }

    /// A key as the state log has it.
    pub fn from_stored(rule: String, target: String) -> CooldownKey<'static> {
        CooldownKey { rule: Cow::Owned(rule), target: Cow::Owned(target) }
    }

    pub fn rule(&self) -> &str {
        &self.rule
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn into_owned(self) -> CooldownKey<'static> {
        CooldownKey { rule: Cow::Owned(self.rule.into_owned()), target: Cow::Owned(self.target.into_owned()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys read as the state log and the claims have always had them.
    #[test]
    fn keys_as_text() {
        let key = DedupeKey::new("fp", 5, "cpu-spike", "checkout", false);
        assert_eq!(key.as_str(), "fp@5/cpu-spike/checkout");
        assert_eq!(DedupeKey::new("fp", 5, "r", "t", true).as_str(), "fp@5/r/t/resolved");
        let cooldown =
            CooldownKey::new("cpu-spike", CaptureRole::Baseline, Cow::Borrowed("pods@10.0.0.5:6060"));
        assert_eq!((cooldown.rule(), cooldown.target()), ("cpu-spike/baseline", "pods@10.0.0.5:6060"));
        assert_eq!(CooldownKey::new("r", CaptureRole::Spike, Cow::Borrowed("t")).rule(), "r");
    }
}
