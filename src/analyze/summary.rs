//! The top functions of a profile by flat and cumulative value of its main sample type
//! (`default_sample_type`, else the last: cpu time, inuse_space, goroutine count, delay),
//! as `go tool pprof -top` computes them. Two streaming passes over the gzip'd file — the
//! locations and functions, then the samples and the names needed — so a large profile is
//! never held whole.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use prost::Message;
use serde::{Deserialize, Serialize};

use crate::capture::profile::{Function, Location, Sample, ValueType};
use crate::capture::{InvalidBody, TopField, walk_fields};

/// A profile's main sample type and its top functions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// `type/unit`, e.g. `cpu/nanoseconds`.
    pub sample_type: String,
    /// Sum of the main value over all samples.
    pub total: i64,
    pub top: Vec<TopFunction>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopFunction {
    pub function: String,
    pub flat: i64,
    pub flat_percent: f64,
    pub cum: i64,
    pub cum_percent: f64,
}

impl TopFunction {
    /// `main.spin 98.7%` (flat share).
    pub fn short(&self) -> String {
        format!("{} {:.1}%", self.function, self.flat_percent)
    }
}

/// Summarizes the gzip'd profile that `open` reads (it is called once per pass).
pub fn summarize<R: Read>(
    mut open: impl FnMut() -> std::io::Result<R>,
    max_unzipped: u64,
    count: usize,
) -> Result<Summary, InvalidBody> {
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

    // Pass 2: values per function name (flat at the leaf, cum once per sample), and the
    // strings those names and the sample types need.
    let values = sample_types.len();
    let mut wanted: HashSet<i64> = function_names.values().copied().collect();
    wanted.extend(sample_types.iter().flat_map(|t| [t.r#type, t.unit]));
    wanted.insert(default_type);
    let mut flat: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut cum: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut totals = vec![0i64; values];
    let mut strings: HashMap<i64, String> = HashMap::new();
    let mut next_string: i64 = 0;
    let mut seen: Vec<i64> = Vec::new();
    walk_fields(open().map_err(io)?, max_unzipped, |field| {
        match field {
            TopField::Bytes(2, bytes) => {
                let sample = Sample::decode(bytes).map_err(bad)?;
                if sample.value.len() != values {
                    return Err(InvalidBody::NotProfile("sample values do not match sample types".into()));
                }
                let names = |location: &u64| {
                    location_functions
                        .get(location)
                        .into_iter()
                        .flatten()
                        .filter_map(|f| function_names.get(f).copied())
                };
                seen.clear();
                for (depth, location) in sample.location_id.iter().enumerate() {
                    for (line, name) in names(location).enumerate() {
                        if depth == 0 && line == 0 {
                            add(flat.entry(name).or_insert_with(|| vec![0; values]), &sample.value);
                        }
                        if !seen.contains(&name) {
                            seen.push(name);
                            add(cum.entry(name).or_insert_with(|| vec![0; values]), &sample.value);
                        }
                    }
                }
                add(&mut totals, &sample.value);
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
    let total = totals[main];
    let percent = |value: i64| if total == 0 { 0.0 } else { value as f64 / total as f64 * 100.0 };
    let mut top: Vec<TopFunction> = cum
        .iter()
        .map(|(name, cum_values)| {
            let flat = flat.get(name).map_or(0, |v| v[main]);
            TopFunction {
                function: text(*name),
                flat,
                flat_percent: percent(flat),
                cum: cum_values[main],
                cum_percent: percent(cum_values[main]),
            }
        })
        .filter(|f| f.flat != 0 || f.cum != 0)
        .collect();
    top.sort_by(|a, b| b.flat.cmp(&a.flat).then(b.cum.cmp(&a.cum)).then(a.function.cmp(&b.function)));
    top.truncate(count);
    let sample_type = format!("{}/{}", text(sample_types[main].r#type), text(sample_types[main].unit));
    Ok(Summary { sample_type, total, top })
}

fn add(into: &mut [i64], values: &[i64]) {
    for (sum, value) in into.iter_mut().zip(values) {
        *sum = sum.saturating_add(*value);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::capture::profile::{Line, Profile};

    /// A profile with two sample types and stacks main.a → main.b (leaf) and main.a (leaf),
    /// the second location inlining main.c into main.a.
    fn profile() -> Vec<u8> {
        let strings = ["", "samples", "count", "cpu", "nanoseconds", "main.a", "main.b", "main.c"];
        let profile = Profile {
            string_table: strings.iter().map(|s| s.to_string()).collect(),
            sample_type: vec![ValueType { r#type: 1, unit: 2 }, ValueType { r#type: 3, unit: 4 }],
            function: (1..=3).map(|id| Function { id, name: 4 + id as i64, ..Default::default() }).collect(),
            location: vec![
                Location {
                    id: 10,
                    line: vec![Line { function_id: 2, ..Default::default() }],
                    ..Default::default()
                },
                Location {
                    id: 11,
                    line: vec![
                        Line { function_id: 3, ..Default::default() },
                        Line { function_id: 1, ..Default::default() },
                    ],
                    ..Default::default()
                },
                Location {
                    id: 12,
                    line: vec![Line { function_id: 1, ..Default::default() }],
                    ..Default::default()
                },
            ],
            sample: vec![
                Sample { location_id: vec![10, 12], value: vec![3, 300], label: vec![] },
                Sample { location_id: vec![11, 12], value: vec![1, 100], label: vec![] },
            ],
            ..Default::default()
        };
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&profile.encode_to_vec()).unwrap();
        encoder.finish().unwrap()
    }

    /// Flat goes to the leaf (the innermost inlined frame), cum once per sample to every
    /// function on the stack, of the last sample type.
    #[test]
    fn flat_and_cum() {
        let bytes = profile();
        let summary = summarize(|| Ok(bytes.as_slice()), 1 << 20, 10).unwrap();
        assert_eq!(summary.sample_type, "cpu/nanoseconds");
        assert_eq!(summary.total, 400);
        let rows: Vec<(&str, i64, i64)> =
            summary.top.iter().map(|f| (f.function.as_str(), f.flat, f.cum)).collect();
        // main.a appears twice in the second stack (inlined and as caller): counted once.
        assert_eq!(rows, [("main.b", 300, 300), ("main.c", 100, 100), ("main.a", 0, 400)]);
        assert_eq!(summary.top[0].flat_percent, 75.0);
        assert_eq!(summary.top[0].short(), "main.b 75.0%");
        let two = summarize(|| Ok(bytes.as_slice()), 1 << 20, 2).unwrap();
        assert_eq!(two.top.len(), 2);
    }
}
