//! Any bytes as a downloaded profile body, of each format: validation answers Ok or an
//! error, never panics, and never gunzips past its bound. The streaming check of
//! profile.proto agrees with decoding the whole profile.
#![no_main]

use alertprof::capture::validate_bytes;
use alertprof::model::BodyFormat;
use alertprof::profile::{decode_profile, scan_profile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [BodyFormat::Pprof, BodyFormat::Trace, BodyFormat::GoroutineText] {
        let _ = validate_bytes(format, data, 1 << 24);
    }
    let streamed = scan_profile(data, 1 << 24);
    let decoded = decode_profile(data, 1 << 24);
    assert_eq!(streamed.is_ok(), decoded.is_ok(), "streamed {streamed:?}, decoded {:?}", decoded.map(|_| ()));
});
