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
