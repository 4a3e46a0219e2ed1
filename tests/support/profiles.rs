//! Profiles made up for tests and benchmarks: small real-shaped ones, and ones that say
//! too much (a location of a thousand inlined lines referred to a quarter of a million
//! times; thousands of samples of ten-thousand-frame stacks).
//!
//! Written against alertprof's public API and included by `#[path]` where it is needed:
//! by `tests/support`, by the benchmarks, and by the crate's own unit tests
//! (`src/testing.rs`, where `alertprof` names the crate itself). So it is in no build of
//! the library. A `pub mod` (even `#[doc(hidden)]`) or a cargo feature would put it in the
//! library's public API, for anyone to turn on; and a feature turned on by a dev-dependency
//! of the crate on itself makes `cargo build` and `cargo test` build two different
//! libraries.
#![allow(dead_code)]

use std::io::Write;

use alertprof::profile::proto::{Function, Line, Location, Profile, Sample, ValueType};

/// A gzip'd profile with sample types `samples/count` and `cpu/nanoseconds`, functions
/// `names` (ids 1..), one location per function (id 10 + function id) and samples given
/// as (function ids leaf first, [count, nanoseconds]).
pub fn profile(names: &[&str], samples: &[(&[u64], [i64; 2])]) -> Vec<u8> {
    let mut strings: Vec<String> =
        ["", "samples", "count", "cpu", "nanoseconds"].iter().map(|s| s.to_string()).collect();
    strings.extend(names.iter().map(|s| s.to_string()));
    let profile = Profile {
        string_table: strings,
        sample_type: vec![ValueType { r#type: 1, unit: 2 }, ValueType { r#type: 3, unit: 4 }],
        function: (1..=names.len() as u64)
            .map(|id| Function { id, name: 4 + id as i64, ..Default::default() })
            .collect(),
        location: (1..=names.len() as u64)
            .map(|id| Location {
                id: 10 + id,
                line: vec![Line { function_id: id, ..Default::default() }],
                ..Default::default()
            })
            .collect(),
        sample: samples
            .iter()
            .map(|(stack, value)| Sample {
                location_id: stack.iter().map(|f| 10 + f).collect(),
                value: value.to_vec(),
                label: vec![],
            })
            .collect(),
        ..Default::default()
    };
    gzip(&prost::Message::encode_to_vec(&profile))
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A kilobyte of profile that says a lot: one location of `lines` inlined
/// lines (of one function, `main.f`), and one sample that refers to it `refs` times.
pub fn inlined_bomb(lines: usize, refs: usize) -> Vec<u8> {
    let strings: Vec<String> = ["", "inuse_space", "bytes", "main.f"].iter().map(|s| s.to_string()).collect();
    let profile = Profile {
        string_table: strings,
        sample_type: vec![ValueType { r#type: 1, unit: 2 }],
        function: vec![Function { id: 1, name: 3, ..Default::default() }],
        location: vec![Location {
            id: 1,
            line: vec![Line { function_id: 1, ..Default::default() }; lines],
            ..Default::default()
        }],
        sample: vec![Sample { location_id: vec![1; refs], value: vec![1], label: vec![] }],
        ..Default::default()
    };
    gzip(&prost::Message::encode_to_vec(&profile))
}

/// `samples` samples, each with the same stack of `depth` distinct functions.
pub fn deep_stacks(depth: u64, samples: usize) -> Vec<u8> {
    let mut strings: Vec<String> = ["", "cpu", "nanoseconds"].iter().map(|s| s.to_string()).collect();
    strings.extend((0..depth).map(|n| format!("main.f{n}")));
    let stack: Vec<u64> = (1..=depth).collect();
    let profile = Profile {
        string_table: strings,
        sample_type: vec![ValueType { r#type: 1, unit: 2 }],
        function: (1..=depth).map(|id| Function { id, name: 2 + id as i64, ..Default::default() }).collect(),
        location: (1..=depth)
            .map(|id| Location {
                id,
                line: vec![Line { function_id: id, ..Default::default() }],
                ..Default::default()
            })
            .collect(),
        sample: (0..samples)
            .map(|_| Sample { location_id: stack.clone(), value: vec![10], label: vec![] })
            .collect(),
        ..Default::default()
    };
    gzip(&prost::Message::encode_to_vec(&profile))
}
