//! Recorded CPU segments merged into one profile over a window, as `go tool pprof -proto`
//! merges them. Segments are read one at a time: only the merged profile is held.

use std::io::BufReader;
use std::path::Path;

use super::tape::Opened;
use crate::model::SegmentRef;
use crate::profile::{Merger, decode_profile, write_gzipped};

/// What came of merging.
#[derive(Debug, Default)]
pub struct Merged {
    /// The segments in the profile, oldest first.
    pub used: Vec<SegmentRef>,
    /// The segments left out, and why.
    pub skipped: Vec<String>,
}

/// Merges `segments` and writes the result gzip'd to `dest`. A segment that cannot be read
/// or does not fit the others is left out and named; with none left, nothing is written
/// and the error says why.
pub fn merge_segments(segments: Vec<Opened>, max_unzipped: u64, dest: &Path) -> Result<Merged, String> {
    let mut merger = Merger::new();
    let mut merged = Merged::default();
    for Opened { segment, file } in segments {
        let when = segment.from.format("%H:%M:%S");
        match decode_profile(BufReader::new(file), max_unzipped) {
            Ok(profile) => match merger.add(&profile) {
                Ok(()) => merged.used.push(segment.reference()),
                Err(error) => merged.skipped.push(format!("the segment from {when}: {error}")),
            },
            Err(error) => merged.skipped.push(format!("the segment from {when}: {error}")),
        }
    }
    let Some(profile) = merger.finish() else {
        return Err(match merged.skipped.is_empty() {
            true => "no segment".to_string(),
            false => merged.skipped.join("; "),
        });
    };
    let file =
        std::fs::File::create(dest).map_err(|error| format!("cannot write {}: {error}", dest.display()))?;
    write_gzipped(&profile, std::io::BufWriter::new(file))
        .map_err(|error| format!("cannot write {}: {error}", dest.display()))?;
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::model::ProfileKind;
    use crate::profile::fixtures::profile;
    use crate::recorder::Tape;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

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
        assert!(merged.skipped[0].contains("not gzip"), "{:?}", merged.skipped);
        assert!(merged.skipped[1].contains("inuse_space"), "{:?}", merged.skipped);
        let profile = crate::profile::decode_profile(std::fs::File::open(&dest).unwrap(), 1 << 20).unwrap();
        assert_eq!(profile.sample.iter().map(|s| s.value[1]).sum::<i64>(), 100);

        let bad = Tape::open(&dir.path().join("bad")).unwrap();
        std::fs::write(&part, b"not a profile").unwrap();
        bad.add(ProfileKind::Cpu, at(0), at(10), &part).unwrap();
        let nothing = dir.path().join("nothing.pb.gz");
        let error = merge_segments(bad.overlapping(ProfileKind::Cpu, window), 1 << 20, &nothing).unwrap_err();
        assert!(error.contains("not gzip"), "{error}");
        assert!(!nothing.exists());
        assert_eq!(merge_segments(Vec::new(), 1 << 20, &nothing).unwrap_err(), "no segment");
    }
}
