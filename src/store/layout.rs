//! The store's key layout, the same in every backend: `<target>/<id>.json` for a capture's
//! metadata, `<target>/<id>.<ext>` for its profile, `<target>/<id>.<derived>` for its
//! renderings. Only the target's name and the id make a key, and both are safe names.

use crate::model::{CaptureId, CaptureMeta};

/// A rendering kept next to a capture's profile, made on demand and deleted with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Derived {
    Flamegraph,
}

impl Derived {
    pub const ALL: [Derived; 1] = [Derived::Flamegraph];

    /// What follows the capture's id in its name: `<id>.flamegraph.svg`.
    pub fn suffix(self) -> &'static str {
        match self {
            Derived::Flamegraph => "flamegraph.svg",
        }
    }
}

pub fn metadata_key(target: &str, id: &CaptureId) -> String {
    format!("{target}/{id}.json")
}

/// The key of a kept capture's profile; `None` for a failed one.
pub fn profile_key(meta: &CaptureMeta) -> Option<String> {
    meta.file().map(|file| format!("{}/{file}", meta.target))
}

pub fn derived_key(target: &str, id: &CaptureId, derived: Derived) -> String {
    format!("{target}/{id}.{}", derived.suffix())
}

/// `(target, id)` of a metadata key, if it is one: a target's directory (not one whose
/// name starts with a dot), a valid id, `.json`.
pub fn parse_metadata_key(key: &str) -> Option<(&str, CaptureId)> {
    let (target, name) = key.split_once('/')?;
    let id = CaptureId::parse(name.strip_suffix(".json")?)?;
    (!target.starts_with('.') && !target.is_empty()).then_some((target, id))
}

/// Four hex digits from this host, process and moment: what ends this instance's ids in a
/// shared store.
pub fn instance_tag() -> String {
    use sha2::{Digest, Sha256};
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let seed = format!("{host}/{}/{:?}", std::process::id(), std::time::SystemTime::now());
    hex::encode(&Sha256::digest(seed.as_bytes())[..2])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Metadata keys are read back; what is not one (a profile, a claim, a hidden
    /// directory, a path) is not.
    #[test]
    fn keys() {
        let id = CaptureId::parse("20261121T100000.000Z-r-heap").unwrap();
        let key = metadata_key("t", &id);
        assert_eq!(key, "t/20261121T100000.000Z-r-heap.json");
        assert_eq!(parse_metadata_key(&key), Some(("t", id.clone())));
        assert_eq!(
            derived_key("t", &id, Derived::Flamegraph),
            "t/20261121T100000.000Z-r-heap.flamegraph.svg"
        );
        for other in ["t/x.pb.gz", ".claims/cooldown.json", "t/a/b.json", "x.json", "/x.json"] {
            assert_eq!(parse_metadata_key(other), None, "{other}");
        }
    }
}
