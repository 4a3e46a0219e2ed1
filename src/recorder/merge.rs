//! Recorded CPU segments merged into one profile over a window, as `go tool pprof -proto`
//! merges them. Segments are opened and read one at a time, however many the window
//! holds: only the merged profile is held.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::tape::Segment;
use crate::durable::Hashed;
use crate::model::SegmentRef;
use crate::profile::{InvalidBody, MergeError, Merger, decode_profile, write_gzipped};

/// What came of merging.
#[derive(Debug, Default)]
pub struct Merged {
    /// The segments in the profile, oldest first.
    pub used: Vec<SegmentRef>,
    /// The segments left out, and why.
    pub skipped: Vec<SkippedSegment>,
    /// The size and SHA-256 of what was written, taken as it was written.
    pub bytes: u64,
    pub sha256: String,
}

/// A segment left out of a merge: named by its start, with why.
#[derive(Debug, thiserror::Error)]
#[error("the segment from {}: {why}", .from.format("%H:%M:%S"))]
pub struct SkippedSegment {
    pub from: DateTime<Utc>,
    #[source]
    pub why: SkipReason,
}

/// Why a segment is left out.
#[derive(Debug, thiserror::Error)]
pub enum SkipReason {
    /// Pruned between the listing and the merge, say.
    #[error("cannot open it: {0}")]
    Open(#[source] std::io::Error),
    /// A disk fault, or a crash before its data reached the disk.
    #[error("{0}")]
    Invalid(#[from] InvalidBody),
    /// It does not fit the segments before it.
    #[error("{0}")]
    Mismatch(#[from] MergeError),
}

/// Why segments make no merged profile; nothing is written.
#[derive(Debug, thiserror::Error)]
pub enum SegmentMergeError {
    #[error("no segment")]
    NoSegment,
    /// Every segment was left out: each, with why.
    #[error("{}", skipped_text(.0))]
    AllSkipped(Vec<SkippedSegment>),
    #[error("cannot write {}: {source}", .path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

/// Segments left out, as a log line or a reason names them: `the segment from 12:00:00:
/// not gzip: …; the segment from …`.
pub fn skipped_text(skipped: &[SkippedSegment]) -> String {
    let each: Vec<String> = skipped.iter().map(SkippedSegment::to_string).collect();
    each.join("; ")
}

/// Merges `segments` and writes the result gzip'd to `dest`. A segment that cannot be read
/// (pruned meanwhile, say) or does not fit the others is left out and named; with none
/// left, nothing is written and the error says why.
pub fn merge_segments(
    segments: Vec<Segment>,
    max_unzipped: u64,
    dest: &Path,
) -> Result<Merged, SegmentMergeError> {
    let mut merger = Merger::new();
    let mut merged = Merged::default();
    for segment in segments {
        let added = std::fs::File::open(&segment.path)
            .map_err(SkipReason::Open)
            .and_then(|file| Ok(decode_profile(BufReader::new(file), max_unzipped)?))
            .and_then(|profile| Ok(merger.add(&profile)?));
        match added {
            Ok(()) => merged.used.push(segment.reference()),
            Err(why) => merged.skipped.push(SkippedSegment { from: segment.from, why }),
        }
    }
    let Some(profile) = merger.finish() else {
        return Err(match merged.skipped.is_empty() {
            true => SegmentMergeError::NoSegment,
            false => SegmentMergeError::AllSkipped(merged.skipped),
        });
    };
    let cannot_write = |source| SegmentMergeError::Write { path: dest.to_path_buf(), source };
    let mut out = Hashed::new(std::io::BufWriter::new(std::fs::File::create(dest).map_err(cannot_write)?));
    write_gzipped(&profile, &mut out).map_err(cannot_write)?;
    (_, merged.bytes, merged.sha256) = out.finish().map_err(cannot_write)?;
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ProfileKind;
    use crate::recorder::Tape;
    use crate::testing::at;
    use crate::testing::profiles::profile;

    /// A segment that no longer decodes (a disk fault, a crash before its data reached the
    /// disk) or does not fit the others is left out and named; the rest are merged. With
    /// nothing usable, nothing is written and the error says why.
    #[test]
    fn a_bad_segment_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let tape = Tape::open(&dir.path().join("t")).unwrap();
        let part = dir.path().join("part");
        let good = profile(&["main.burn"], &[(&[1], [5, 50])]);
        let mut heap = crate::profile::decode_profile(good.as_slice(), 1 << 20).unwrap();
        heap.string_table[3] = "inuse_space".into();
        let mut heap_bytes = Vec::new();
        write_gzipped(&heap, &mut heap_bytes).unwrap();
        for (i, body) in [good.clone(), b"\x1f\x8b garbage".to_vec(), heap_bytes, good].iter().enumerate() {
            std::fs::write(&part, body).unwrap();
            tape.add(ProfileKind::Cpu, at(i as i64 * 10), at(i as i64 * 10 + 10), &part).unwrap();
        }
        let window = crate::model::Window { from: at(0), to: at(40) };
        let dest = dir.path().join("merged.pb.gz");
        let merged = merge_segments(tape.overlapping(ProfileKind::Cpu, window), 1 << 20, &dest).unwrap();
        assert_eq!(merged.used.iter().map(|s| s.from).collect::<Vec<_>>(), [at(0), at(30)]);
        assert_eq!(merged.skipped.len(), 2, "{:?}", merged.skipped);
        assert!(matches!(merged.skipped[0].why, SkipReason::Invalid(InvalidBody::NotGzip(_))));
        assert_eq!(merged.skipped[0].from, at(10));
        assert!(matches!(merged.skipped[1].why, SkipReason::Mismatch(MergeError::SampleTypes { .. })));
        let skipped = skipped_text(&merged.skipped);
        assert!(skipped.starts_with("the segment from 08:00:10: not gzip"), "{skipped}");
        assert!(skipped.contains("; the segment from 08:00:20: its sample types"), "{skipped}");
        assert!(skipped.contains("inuse_space"), "{skipped}");
        let profile = crate::profile::decode_profile(std::fs::File::open(&dest).unwrap(), 1 << 20).unwrap();
        assert_eq!(profile.sample.iter().map(|s| s.value[1]).sum::<i64>(), 100);
        // Its size and digest, taken as it was written, are the file's.
        let written = std::fs::read(&dest).unwrap();
        assert_eq!(merged.bytes, written.len() as u64);
        use sha2::Digest;
        assert_eq!(merged.sha256, hex::encode(sha2::Sha256::digest(&written)));

        // A segment pruned between the listing and the merge is left out and named.
        let listed = tape.overlapping(ProfileKind::Cpu, window);
        std::fs::remove_file(&listed[3].path).unwrap();
        let merged = merge_segments(listed, 1 << 20, &dest).unwrap();
        assert_eq!(merged.used.len(), 1);
        assert!(
            matches!(&merged.skipped[2].why, SkipReason::Open(e) if e.kind() == std::io::ErrorKind::NotFound)
        );
        assert!(merged.skipped[2].to_string().contains("cannot open it"), "{:?}", merged.skipped);

        let bad = Tape::open(&dir.path().join("bad")).unwrap();
        std::fs::write(&part, b"not a profile").unwrap();
        bad.add(ProfileKind::Cpu, at(0), at(10), &part).unwrap();
        let nothing = dir.path().join("nothing.pb.gz");
        let error = merge_segments(bad.overlapping(ProfileKind::Cpu, window), 1 << 20, &nothing).unwrap_err();
        assert!(matches!(&error, SegmentMergeError::AllSkipped(skipped) if skipped.len() == 1), "{error}");
        assert!(error.to_string().starts_with("the segment from 08:00:00: not gzip"), "{error}");
        assert!(!nothing.exists());
        let error = merge_segments(Vec::new(), 1 << 20, &nothing).unwrap_err();
        assert!(matches!(error, SegmentMergeError::NoSegment));
        assert_eq!(error.to_string(), "no segment");
    }
}
