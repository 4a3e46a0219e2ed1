//! profile.proto, the format of every pprof profile but traces and goroutine dumps: the
//! types generated from the vendored `proto/profile.proto`, a streaming walk over a gzip'd
//! profile's fields, and the checks every kept profile passes. Capture validates with it;
//! analysis reads stacks with it.

mod merge;
#[allow(clippy::all)]
pub mod proto;
mod shape;
mod walk;

use std::io::Read;

use flate2::read::GzDecoder;
use prost::Message;

pub use merge::{MergeError, Merger, write_gzipped};
pub use shape::{Shape, scan_profile};
pub use walk::{TopField, walk_fields};

use proto::Profile;

/// Why a body is not what its kind promises.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidBody {
    #[error("empty body")]
    Empty,
    #[error("not gzip: {0}")]
    NotGzip(String),
    #[error("gunzipped profile is over {0} bytes")]
    TooLarge(u64),
    #[error("not a profile.proto: {0}")]
    NotProfile(String),
    #[error("profile has no sample types")]
    NoSampleTypes,
    #[error("not a Go execution trace (does not start with \"go 1.\")")]
    NotTrace,
    #[error("not a goroutine dump (does not start with \"goroutine \")")]
    NotGoroutineText,
    #[error("cannot read the downloaded body: {0}")]
    Io(String),
    /// Reading stopped before the end, on purpose (cancelled).
    #[error("{0}")]
    Stopped(String),
}

/// Gunzips and decodes a profile, refusing anything that is not a plausible pprof profile.
pub fn decode_profile(body: impl Read, max_unzipped: u64) -> Result<Profile, InvalidBody> {
    let mut unzipped = Vec::new();
    let mut decoder = GzDecoder::new(body).take(max_unzipped + 1);
    decoder.read_to_end(&mut unzipped).map_err(|error| {
        if error.kind() == std::io::ErrorKind::UnexpectedEof && unzipped.is_empty() {
            InvalidBody::Empty
        } else {
            InvalidBody::NotGzip(error.to_string())
        }
    })?;
    if unzipped.len() as u64 > max_unzipped {
        return Err(InvalidBody::TooLarge(max_unzipped));
    }
    let profile =
        Profile::decode(unzipped.as_slice()).map_err(|error| InvalidBody::NotProfile(error.to_string()))?;
    Shape::of(&profile).check()?;
    Ok(profile)
}
