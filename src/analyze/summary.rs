//! The top functions of a profile by flat and cumulative value of its main sample type
//! (`default_sample_type`, else the last: cpu time, inuse_space, goroutine count, delay),
//! as `go tool pprof -top` computes them, from one streaming walk of the stacks.

use std::collections::HashMap;
use std::io::Read;

use super::stacks::{add, walk_stacks};
use crate::model::{Summary, TopFunction};
use crate::profile::InvalidBody;

/// Flat and cumulative values of the main sample type for every function of a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionTable {
    /// `type/unit`.
    pub sample_type: String,
    pub total: i64,
    /// Function name → (flat, cum).
    pub functions: HashMap<String, (i64, i64)>,
}

impl FunctionTable {
    /// Reads the gzip'd profile that `open` opens (once per pass): flat goes to the leaf
    /// (the innermost inlined frame), cum once per sample to every function on its stack.
    pub fn read<R: Read>(
        open: impl FnMut() -> std::io::Result<R>,
        max_unzipped: u64,
    ) -> Result<FunctionTable, InvalidBody> {
        let mut flat: HashMap<i64, Vec<i64>> = HashMap::new();
        let mut cum: HashMap<i64, Vec<i64>> = HashMap::new();
        let mut totals: Vec<i64> = Vec::new();
        let mut seen: Vec<i64> = Vec::new();
        let walked = walk_stacks(open, max_unzipped, |stack, values| {
            let zeros = || vec![0; values.len()];
            if let Some(&leaf) = stack.first() {
                add(flat.entry(leaf).or_insert_with(zeros), values);
            }
            seen.clear();
            for &name in stack {
                if !seen.contains(&name) {
                    seen.push(name);
                    add(cum.entry(name).or_insert_with(zeros), values);
                }
            }
            if totals.is_empty() {
                totals = zeros();
            }
            add(&mut totals, values);
        })?;
        let main = walked.main;
        let mut functions: HashMap<String, (i64, i64)> = HashMap::new();
        for (name, cum_values) in &cum {
            let flat = flat.get(name).map_or(0, |v| v[main]);
            let entry = functions.entry(walked.name(*name).to_string()).or_default();
            // Two functions may share a name (different files): pprof -top merges them.
            entry.0 += flat;
            entry.1 += cum_values[main];
        }
        let total = totals.get(main).copied().unwrap_or(0);
        Ok(FunctionTable { sample_type: walked.main_type(), total, functions })
    }

    /// The top `count` functions by flat, then cum, then name, as `pprof -top` sorts.
    pub fn summary(&self, count: usize) -> Summary {
        let percent = percent_of(self.total);
        let mut top: Vec<TopFunction> = self
            .functions
            .iter()
            .filter(|(_, (flat, cum))| *flat != 0 || *cum != 0)
            .map(|(name, &(flat, cum))| TopFunction {
                function: name.clone(),
                flat,
                flat_percent: percent(flat),
                cum,
                cum_percent: percent(cum),
            })
            .collect();
        sort_top(&mut top);
        top.truncate(count);
        Summary { sample_type: self.sample_type.clone(), total: self.total, top }
    }
}

/// `value` as a percentage of `total` (0 when the total is).
fn percent_of(total: i64) -> impl Fn(i64) -> f64 {
    move |value| if total == 0 { 0.0 } else { value as f64 / total as f64 * 100.0 }
}

/// Flat descending, then cum descending, then name.
pub(crate) fn sort_top(top: &mut [TopFunction]) {
    top.sort_by(|a, b| b.flat.cmp(&a.flat).then(b.cum.cmp(&a.cum)).then(a.function.cmp(&b.function)));
}

/// Summarizes the gzip'd profile that `open` reads (it is called once per pass).
pub fn summarize<R: Read>(
    open: impl FnMut() -> std::io::Result<R>,
    max_unzipped: u64,
    count: usize,
) -> Result<Summary, InvalidBody> {
    Ok(FunctionTable::read(open, max_unzipped)?.summary(count))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use prost::Message;

    use super::*;
    use crate::profile::proto::{Function, Line, Location, Profile, Sample, ValueType};

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
        let two = summarize(|| Ok(bytes.as_slice()), 1 << 20, 2).unwrap();
        assert_eq!(two.top.len(), 2);
    }
}
