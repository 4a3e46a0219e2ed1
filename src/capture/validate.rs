//! Checks a downloaded body before it is kept: profile.proto must gunzip and decode, a
//! trace and a goroutine dump must start with their headers.

use std::io::Read;
use std::path::Path;

use crate::model::BodyFormat;
use crate::profile::{InvalidBody, scan_profile};

/// Validates `bytes` as a body of `format`. `max_unzipped` bounds gunzip output, so a
/// gzip bomb cannot take the memory.
pub fn validate_bytes(format: BodyFormat, bytes: &[u8], max_unzipped: u64) -> Result<(), InvalidBody> {
    validate_reader(format, bytes, max_unzipped)
}

/// Validates the file at `path` as a body of `format`.
pub fn validate_file(format: BodyFormat, path: &Path, max_unzipped: u64) -> Result<(), InvalidBody> {
    let file = std::fs::File::open(path).map_err(|error| InvalidBody::Io(error.to_string()))?;
    validate_reader(format, std::io::BufReader::new(file), max_unzipped)
}

fn validate_reader(format: BodyFormat, mut body: impl Read, max_unzipped: u64) -> Result<(), InvalidBody> {
    match format {
        BodyFormat::Pprof => scan_profile(body, max_unzipped).map(|_| ()),
        BodyFormat::Trace => check_prefix(&mut body, b"go 1.", InvalidBody::NotTrace),
        BodyFormat::GoroutineText => check_prefix(&mut body, b"goroutine ", InvalidBody::NotGoroutineText),
    }
}

fn check_prefix(body: &mut impl Read, prefix: &[u8], error: InvalidBody) -> Result<(), InvalidBody> {
    let mut head = Vec::with_capacity(prefix.len());
    body.take(prefix.len() as u64)
        .read_to_end(&mut head)
        .map_err(|error| InvalidBody::Io(error.to_string()))?;
    match head.as_slice() {
        [] => Err(InvalidBody::Empty),
        head if head == prefix => Ok(()),
        _ => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::profile::decode_profile;
    use crate::profile::proto::{Function, Profile, Sample, ValueType};
    use crate::testing::profiles::gzip;

    fn small_profile() -> Vec<u8> {
        let profile = Profile {
            string_table: vec!["".into(), "samples".into(), "count".into(), "main.work".into()],
            sample_type: vec![ValueType { r#type: 1, unit: 2 }],
            sample: vec![Sample { location_id: vec![], value: vec![3], label: vec![] }],
            function: vec![Function { id: 1, name: 3, system_name: 3, filename: 0, start_line: 1 }],
            ..Default::default()
        };
        gzip(&profile.encode_to_vec())
    }

    /// A real-shaped profile passes; each kind of garbage is refused with its reason.
    #[test]
    fn pprof_bodies() {
        let max = 1 << 20;
        assert_eq!(validate_bytes(BodyFormat::Pprof, &small_profile(), max), Ok(()));
        assert_eq!(validate_bytes(BodyFormat::Pprof, b"", max), Err(InvalidBody::Empty));
        assert!(matches!(
            validate_bytes(BodyFormat::Pprof, b"<html>oops</html>", max),
            Err(InvalidBody::NotGzip(_))
        ));
        assert!(matches!(
            validate_bytes(BodyFormat::Pprof, &gzip(b"\xff\xff\xff\xff"), max),
            Err(InvalidBody::NotProfile(_))
        ));
        // A gzip of nothing decodes as an empty message: no sample types, so refused.
        assert!(validate_bytes(BodyFormat::Pprof, &gzip(b""), max).is_err());
        // A gzip bomb of zeros is refused at its first bytes; a plausible profile larger
        // than the bound stops at the bound.
        let bomb = gzip(&vec![0u8; 4 << 20]);
        assert!(validate_bytes(BodyFormat::Pprof, &bomb, max).is_err());
        let huge = Profile {
            string_table: std::iter::once(String::new())
                .chain((0..4096).map(|i| format!("{i:01024}")))
                .collect(),
            sample_type: vec![ValueType { r#type: 0, unit: 0 }],
            ..Default::default()
        };
        let huge = gzip(&huge.encode_to_vec());
        assert_eq!(validate_bytes(BodyFormat::Pprof, &huge, max), Err(InvalidBody::TooLarge(max)));
        assert!(decode_profile(huge.as_slice(), 8 << 20).is_ok());
        // A truncated download fails too.
        let whole = small_profile();
        assert!(validate_bytes(BodyFormat::Pprof, &whole[..whole.len() - 6], max).is_err());
    }

    /// Trace and goroutine dumps are checked by their headers.
    #[test]
    fn text_and_trace_bodies() {
        assert_eq!(validate_bytes(BodyFormat::Trace, b"go 1.19 trace\x00\x00", 0), Ok(()));
        assert_eq!(validate_bytes(BodyFormat::Trace, b"<html>", 0), Err(InvalidBody::NotTrace));
        assert_eq!(validate_bytes(BodyFormat::Trace, b"", 0), Err(InvalidBody::Empty));
        assert_eq!(validate_bytes(BodyFormat::GoroutineText, b"goroutine 1 [running]:\n", 0), Ok(()));
        assert_eq!(
            validate_bytes(BodyFormat::GoroutineText, b"404 page not found", 0),
            Err(InvalidBody::NotGoroutineText)
        );
    }
}
