//! Any text as a config file: validation reports problems, never panics. Secret files
//! are looked up under a directory that does not exist.
#![no_main]

use std::path::Path;

use alertprof::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, Path::new("/nonexistent/alertprof"));
    }
});
