//! One streaming walk over a gzip'd profile.proto that hands every sample's stack (function
//! names, leaf first, inlined frames expanded) and values to a visitor. Two passes over the
//! file — the locations and functions, then the samples and the names needed — so a large
//! profile is never held whole. The summary, the diff and the flame graph are built on it.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use prost::Message;

use crate::profile::proto::{Function, Location, Sample, ValueType};
use crate::profile::{InvalidBody, TopField, walk_fields};

/// What a walk learned besides the samples: the sample types, which one is the main one,
/// and the strings the stacks refer to.
#[derive(Debug)]
pub struct Walked {
    /// `(type, unit)` of each sample value.
    pub sample_types: Vec<(String, String)>,
    /// Index of the main sample type: `default_sample_type`, else the last (pprof's rule:
    /// cpu time, inuse_space, goroutine count, delay).
    pub main: usize,
    strings: HashMap<i64, String>,
}

impl Walked {
    /// The name behind a string-table index a visitor was handed.
    pub fn name(&self, index: i64) -> &str {
        self.strings.get(&index).map_or("", String::as_str)
    }

    /// `cpu/nanoseconds`.
    pub fn main_type(&self) -> String {
        let (kind, unit) = &self.sample_types[self.main];
        format!("{kind}/{unit}")
    }

    pub fn main_unit(&self) -> &str {
        &self.sample_types[self.main].1
    }
}

/// Walks the profile that `open` reads (called once per pass). `visit` gets each sample's
/// function names as string-table indices, leaf first (resolve them with `Walked::name`
/// afterwards), and its values, one per sample type.
pub fn walk_stacks<R: Read>(
    mut open: impl FnMut() -> std::io::Result<R>,
    max_unzipped: u64,
    mut visit: impl FnMut(&[i64], &[i64]),
) -> Result<Walked, InvalidBody> {
    let io = |e: std::io::Error| InvalidBody::Io(e.to_string());
    let bad = |e: prost::DecodeError| InvalidBody::NotProfile(e.to_string());

    // Pass 1: which functions each location stands for (leaf first), and their names.
    let mut location_functions: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut function_names: HashMap<u64, i64> = HashMap::new();
    let mut sample_types: Vec<ValueType> = Vec::new();
    let mut default_type: i64 = 0;
    walk_fields(open().map_err(io)?, max_unzipped, |field| {
        match field {
            TopField::Bytes(1, bytes) => sample_types.push(ValueType::decode(bytes).map_err(bad)?),
            TopField::Bytes(4, bytes) => {
                let location = Location::decode(bytes).map_err(bad)?;
                location_functions.insert(location.id, location.line.iter().map(|l| l.function_id).collect());
            }
            TopField::Bytes(5, bytes) => {
                let function = Function::decode(bytes).map_err(bad)?;
                function_names.insert(function.id, function.name);
            }
            TopField::Varint(14, value) => default_type = value as i64,
            _ => {}
        }
        Ok(())
    })?;
    if sample_types.is_empty() {
        return Err(InvalidBody::NoSampleTypes);
    }

    // Pass 2: the samples, and the strings their names and the sample types need.
    let values = sample_types.len();
    let mut wanted: HashSet<i64> = function_names.values().copied().collect();
    wanted.extend(sample_types.iter().flat_map(|t| [t.r#type, t.unit]));
    wanted.insert(default_type);
    let mut strings: HashMap<i64, String> = HashMap::new();
    let mut next_string: i64 = 0;
    let mut stack: Vec<i64> = Vec::new();
    walk_fields(open().map_err(io)?, max_unzipped, |field| {
        match field {
            TopField::Bytes(2, bytes) => {
                let sample = Sample::decode(bytes).map_err(bad)?;
                if sample.value.len() != values {
                    return Err(InvalidBody::NotProfile("sample values do not match sample types".into()));
                }
                stack.clear();
                for location in &sample.location_id {
                    let functions = location_functions.get(location).into_iter().flatten();
                    stack.extend(functions.filter_map(|f| function_names.get(f).copied()));
                }
                visit(&stack, &sample.value);
            }
            TopField::Bytes(6, bytes) => {
                if wanted.contains(&next_string) {
                    strings.insert(next_string, String::from_utf8_lossy(bytes).into_owned());
                }
                next_string += 1;
            }
            _ => {}
        }
        Ok(())
    })?;

    let text = |index: i64| strings.get(&index).cloned().unwrap_or_default();
    let main = if default_type != 0 {
        let name = text(default_type);
        sample_types.iter().position(|t| text(t.r#type) == name).unwrap_or(values - 1)
    } else {
        values - 1
    };
    let sample_types = sample_types.iter().map(|t| (text(t.r#type), text(t.unit))).collect();
    Ok(Walked { sample_types, main, strings })
}

/// Adds `values` into `into`, saturating.
pub fn add(into: &mut [i64], values: &[i64]) {
    for (sum, value) in into.iter_mut().zip(values) {
        *sum = sum.saturating_add(*value);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use crate::profile::proto::{Function, Line, Location, Profile, Sample, ValueType};

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
}
