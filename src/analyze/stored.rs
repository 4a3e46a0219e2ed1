//! Analyses of kept captures: a profile's function table, the baseline to compare a
//! capture with, the diff of two captures, and a capture's flame graph, drawn once and
//! kept. Every function here blocks; async callers use `spawn_blocking`.

use std::io::Read;

use super::flamegraph::{self, Labels};
use super::{Budget, FunctionTable, Measure, diff};
use crate::model::{CaptureId, CaptureMeta, Diff, ProfileKind};
use crate::profile::InvalidBody;
use crate::store::{CaptureFilter, Derived, ProfileStore, StoreError};

/// Why an analysis of stored captures could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error("no capture {0}")]
    NotFound(CaptureId),
    /// Nothing to compare with.
    #[error("{0}")]
    NoBaseline(String),
    /// The capture exists but cannot be analyzed this way (failed, not profile.proto,
    /// incompatible with the base): the request's fault, not the server's.
    #[error("{0}")]
    NotApplicable(String),
    #[error("cannot read the profile of {id}: {error}")]
    Unreadable { id: CaptureId, error: InvalidBody },
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for AnalysisError {
    fn from(error: StoreError) -> AnalysisError {
        match error {
            StoreError::NotFound(id) => AnalysisError::NotFound(id),
            StoreError::NoProfile(id) => {
                AnalysisError::NotApplicable(format!("capture {id} failed: no profile"))
            }
            other => AnalysisError::Store(other),
        }
    }
}

fn capture(store: &ProfileStore, id: &CaptureId) -> Result<CaptureMeta, AnalysisError> {
    let meta = store.get(id).ok_or_else(|| AnalysisError::NotFound(id.clone()))?;
    if !meta.is_ok() {
        return Err(AnalysisError::NotApplicable(format!("capture {id} failed: no profile")));
    }
    if !meta.has_pprof() {
        return Err(AnalysisError::NotApplicable(format!(
            "capture {id} is a {} capture, not a profile.proto",
            meta.kind
        )));
    }
    Ok(meta)
}

/// Opens the stored profile of `id` afresh, once per pass of a streaming walk.
fn opener<'a>(
    store: &'a ProfileStore,
    id: &'a CaptureId,
) -> impl FnMut() -> std::io::Result<Box<dyn Read + Send>> + 'a {
    move || store.open_profile(id).map(|profile| profile.reader).map_err(std::io::Error::other)
}

/// Flat and cum per function of a kept profile.
pub fn function_table(
    store: &ProfileStore,
    id: &CaptureId,
    budget: &Budget,
) -> Result<FunctionTable, AnalysisError> {
    capture(store, id)?;
    FunctionTable::read(opener(store, id), budget)
        .map_err(|error| AnalysisError::Unreadable { id: id.clone(), error })
}

/// The baseline to compare `meta` with: the latest kept baseline of the same target and
/// kind taken before it, else the latest at all.
pub fn latest_baseline(store: &ProfileStore, meta: &CaptureMeta) -> Option<CaptureMeta> {
    latest_baseline_of(store, &meta.target, meta.kind, &meta.id)
}

/// The baseline to compare capture `id` of `kind` from `target` with (see
/// `latest_baseline`).
pub fn latest_baseline_of(
    store: &ProfileStore,
    target: &str,
    kind: ProfileKind,
    id: &CaptureId,
) -> Option<CaptureMeta> {
    let filter = CaptureFilter { target: Some(target.to_string()), kind: Some(kind), ..Default::default() };
    let baselines: Vec<CaptureMeta> =
        store.list(&filter).into_iter().filter(|b| b.is_baseline() && b.is_ok() && b.id != *id).collect();
    let before = baselines.iter().find(|b| b.id < *id).cloned();
    before.or_else(|| baselines.into_iter().next())
}

/// `id` against the capture `base` (`pprof -diff_base`), the first `count` rows.
pub fn diff_captures(
    store: &ProfileStore,
    id: &CaptureId,
    base: &CaptureId,
    count: usize,
    budget: &Budget,
) -> Result<Diff, AnalysisError> {
    let (profile, base_meta) = (capture(store, id)?, capture(store, base)?);
    if profile.kind != base_meta.kind {
        return Err(AnalysisError::NotApplicable(format!(
            "cannot compare a {} capture with a {} capture",
            profile.kind, base_meta.kind
        )));
    }
    let table = function_table(store, id, budget)?;
    diff(&table, &function_table(store, base, budget)?, base, count, Measure::for_kind(profile.kind))
        .map_err(|error| AnalysisError::NotApplicable(error.to_string()))
}

/// A capture's flame graph: the kept one, else drawn now (within `budget`) and kept next to
/// the profile.
pub fn flamegraph(store: &ProfileStore, id: &CaptureId, budget: &Budget) -> Result<Vec<u8>, AnalysisError> {
    let meta = capture(store, id)?;
    if let Some(kept) = store.open_derived(id, Derived::Flamegraph)? {
        match kept.read_all() {
            Ok(svg) => return Ok(svg),
            Err(error) => {
                tracing::warn!(id = %id, error = %error, "Kept flame graph unreadable; drawing it again.")
            }
        }
    }
    let title = format!("{} {} profile", meta.target, meta.kind);
    let subtitle =
        format!("{} · rule {} · {}", meta.id, meta.rule, meta.started_at.format("%Y-%m-%d %H:%M:%S UTC"));
    let labels = Labels { title: &title, subtitle: &subtitle, kind: meta.kind };
    let svg = flamegraph::render(opener(store, id), budget, &labels)
        .map_err(|error| AnalysisError::Unreadable { id: id.clone(), error })?;
    if let Err(error) = store.put_derived(id, Derived::Flamegraph, &svg) {
        // The graph is still answered; it is drawn again next time.
        tracing::warn!(id = %id, error = %error, "Cannot keep the flame graph.");
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::analyze::stacks::tests::budget;
    use crate::model::{CaptureRole, ProfileKind};
    use crate::store::tests::keep_capture;
    use crate::store::{LocalBackend, Staging};
    use crate::testing::profiles::profile;

    /// What cannot be analyzed is refused with the reason, and nothing is written: failed
    /// captures, text kinds, captures of different kinds, unknown ids. The latest baseline
    /// before a capture is the one it is compared with.
    #[test]
    fn refusals_and_baselines() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProfileStore::with_backend(Box::new(LocalBackend::open(dir.path()).unwrap()), None, None);
        let staging = Staging::open(&dir.path().join(".tmp")).unwrap();
        let start = Utc::now();
        let mut n = 0;
        let mut keep = |kind, role, body: Option<&[u8]>| {
            n += 1;
            keep_capture(&store, &staging, kind, role, body, start + chrono::Duration::milliseconds(n))
        };
        let body = profile(&["main.main", "main.spin"], &[(&[2, 1], [1, 100])]);
        let (cpu, heap_kind) = (ProfileKind::Cpu, ProfileKind::Heap);
        let old_base = keep(cpu, CaptureRole::Baseline, Some(&body));
        let base = keep(cpu, CaptureRole::Baseline, Some(&body));
        let spike = keep(cpu, CaptureRole::Spike, Some(&body));
        let later_base = keep(cpu, CaptureRole::Baseline, Some(&body));
        let heap = keep(heap_kind, CaptureRole::Spike, Some(&body));
        let failed = keep(cpu, CaptureRole::Spike, None);
        let text = keep(ProfileKind::GoroutineText, CaptureRole::Spike, Some(b"goroutine 1 [running]:\n"));

        assert_eq!(latest_baseline(&store, &spike).unwrap().id, base.id);
        assert_eq!(latest_baseline(&store, &old_base).unwrap().id, later_base.id, "none before: the latest");
        assert!(latest_baseline(&store, &heap).is_none());
        assert!(diff_captures(&store, &spike.id, &base.id, 10, &budget()).unwrap().functions.is_empty());

        let refused = |result: Result<Diff, AnalysisError>| result.unwrap_err().to_string();
        assert_eq!(
            refused(diff_captures(&store, &spike.id, &heap.id, 10, &budget())),
            "cannot compare a cpu capture with a heap capture"
        );
        assert_eq!(
            refused(diff_captures(&store, &spike.id, &failed.id, 10, &budget())),
            format!("capture {} failed: no profile", failed.id)
        );
        let nope = CaptureId::parse("nope").unwrap();
        assert!(matches!(
            diff_captures(&store, &nope, &base.id, 10, &budget()),
            Err(AnalysisError::NotFound(_))
        ));
        assert!(matches!(flamegraph(&store, &text.id, &budget()), Err(AnalysisError::NotApplicable(_))));
        assert!(matches!(flamegraph(&store, &failed.id, &budget()), Err(AnalysisError::NotApplicable(_))));
        let files = std::fs::read_dir(dir.path().join("t")).unwrap().count();
        assert!(flamegraph(&store, &spike.id, &budget()).unwrap().starts_with(b"<?xml"));
        assert_eq!(std::fs::read_dir(dir.path().join("t")).unwrap().count(), files + 1, "one kept graph");
    }
}
