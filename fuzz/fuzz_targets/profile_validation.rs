//! Any bytes as a downloaded profile body, of each format: validation answers Ok or an
//! error, never panics, and never gunzips past its bound.
#![no_main]

use alertprof::capture::{BodyFormat, validate_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [BodyFormat::Pprof, BodyFormat::Trace, BodyFormat::GoroutineText] {
        let _ = validate_bytes(format, data, 1 << 24);
    }
});
