//! The top functions of a profile by flat and cumulative value of its main sample type
//! (`default_sample_type`, else the last: cpu time, inuse_space, goroutine count, delay),
//! as `go tool pprof -top` computes them, from one streaming walk of the stacks.

use std::collections::HashMap;
use std::io::Read;

use super::stacks::{Budget, add, walk_stacks};
use crate::model::text::clip;
use crate::model::{ProfileKind, Summary, TopFunction};
use crate::profile::InvalidBody;

/// Longest function name kept, in bytes: names come from the profile, which the target
/// writes.
pub const MAX_NAME: usize = 1024;

/// Flat and cumulative values of the main sample type for every function of a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionTable {
    /// `type/unit`.
    pub sample_type: String,
    pub total: i64,
    /// Function name → (flat, cum).
    pub functions: HashMap<String, (i64, i64)>,
    /// Why the figures cover less than the whole profile, if they do.
    pub cut_short: Option<String>,
}

impl FunctionTable {
    /// Reads the gzip'd profile that `open` opens (once per pass), within `budget`: flat
    /// goes to the leaf (the innermost inlined frame), cum once per sample to every function
    /// on its stack. Linear in the frames read.
    pub fn read<R: Read>(
        open: impl FnMut() -> std::io::Result<R>,
        budget: &Budget,
    ) -> Result<FunctionTable, InvalidBody> {
        let mut flat: HashMap<i64, Vec<i64>> = HashMap::new();
        // Per function: the last sample that added to its cum (a function is on a stack
        // once however often it recurs), and the sums.
        let mut cum: HashMap<i64, (u64, Vec<i64>)> = HashMap::new();
        let mut totals: Vec<i64> = Vec::new();
        let mut sample: u64 = 0;
        let walked = walk_stacks(open, budget, |stack, values| {
            sample += 1;
            let zeros = || vec![0; values.len()];
            if let Some(&leaf) = stack.first() {
                add(flat.entry(leaf).or_insert_with(zeros), values);
            }
            for &name in stack {
                let (seen_in, sums) = cum.entry(name).or_insert_with(|| (0, zeros()));
                if *seen_in != sample {
                    *seen_in = sample;
                    add(sums, values);
                }
            }
            if totals.is_empty() {
                totals = zeros();
            }
            add(&mut totals, values);
        })?;
        let main = walked.main;
        let mut functions: HashMap<String, (i64, i64)> = HashMap::new();
        for (name, (_, cum_values)) in &cum {
            let flat = flat.get(name).map_or(0, |v| v[main]);
            let entry = functions.entry(clip(walked.name(*name), MAX_NAME).into_owned()).or_default();
            // Two functions may share a name (different files): pprof -top merges them.
            entry.0 = entry.0.saturating_add(flat);
            entry.1 = entry.1.saturating_add(cum_values[main]);
        }
        let total = totals.get(main).copied().unwrap_or(0);
        Ok(FunctionTable { sample_type: walked.main_type(), total, functions, cut_short: walked.cut_short })
    }

    /// The top `count` functions by `measure`: by flat, then cum, then name, as
    /// `pprof -top` sorts; or by cum, the runtime's own functions left out.
    pub fn summary(&self, count: usize, measure: Measure) -> Summary {
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
        measure.rank(&mut top);
        top.truncate(count);
        Summary {
            sample_type: self.sample_type.clone(),
            total: self.total,
            top,
            cut_short: self.cut_short.clone(),
        }
    }
}

/// `value` as a percentage of `total` (0 when the total is).
fn percent_of(total: i64) -> impl Fn(i64) -> f64 {
    move |value| if total == 0 { 0.0 } else { value as f64 / total as f64 * 100.0 }
}

/// Which value ranks a profile's functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// What a function spends itself: cpu time, memory, delay.
    Flat,
    /// For goroutine and threadcreate profiles: every stack ends where the runtime parks
    /// or creates (flat is all `runtime.gopark`), so the user's functions show by cum, and
    /// the runtime's own functions, on every stack, are left out.
    Cum,
}

impl Measure {
    pub fn for_kind(kind: ProfileKind) -> Measure {
        if kind.grows_by_cum() { Measure::Cum } else { Measure::Flat }
    }

    /// A row's value and share by this measure.
    pub fn of(self, row: &TopFunction) -> (i64, f64) {
        match self {
            Measure::Flat => (row.flat, row.flat_percent),
            Measure::Cum => (row.cum, row.cum_percent),
        }
    }

    /// Orders rows by this measure, largest first: flat (then cum, then name), or cum
    /// (then flat, then name) with the runtime's functions left out.
    pub fn rank(self, rows: &mut Vec<TopFunction>) {
        match self {
            Measure::Flat => rows.sort_by(|a, b| {
                b.flat.cmp(&a.flat).then(b.cum.cmp(&a.cum)).then(a.function.cmp(&b.function))
            }),
            Measure::Cum => {
                rows.retain(|row| !is_runtime(&row.function));
                rows.sort_by(|a, b| {
                    b.cum.cmp(&a.cum).then(b.flat.cmp(&a.flat)).then(a.function.cmp(&b.function))
                });
            }
        }
    }
}

/// Whether a function is the Go runtime's own (the scheduler, the profiler's writers).
pub fn is_runtime(function: &str) -> bool {
    function.starts_with("runtime.") || function.starts_with("runtime/")
}

/// Summarizes the gzip'd profile that `open` reads (it is called once per pass).
pub fn summarize<R: Read>(
    open: impl FnMut() -> std::io::Result<R>,
    budget: &Budget,
    count: usize,
    measure: Measure,
) -> Result<Summary, InvalidBody> {
    Ok(FunctionTable::read(open, budget)?.summary(count, measure))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use prost::Message;

    use super::*;
    use crate::analyze::stacks::tests::budget;
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
        let summary = summarize(|| Ok(bytes.as_slice()), &budget(), 10, Measure::Flat).unwrap();
        assert_eq!(summary.sample_type, "cpu/nanoseconds");
        assert_eq!(summary.total, 400);
        let rows: Vec<(&str, i64, i64)> =
            summary.top.iter().map(|f| (f.function.as_str(), f.flat, f.cum)).collect();
        // main.a appears twice in the second stack (inlined and as caller): counted once.
        assert_eq!(rows, [("main.b", 300, 300), ("main.c", 100, 100), ("main.a", 0, 400)]);
        assert_eq!(summary.top[0].flat_percent, 75.0);
        let two = summarize(|| Ok(bytes.as_slice()), &budget(), 2, Measure::Flat).unwrap();
        assert_eq!(two.top.len(), 2);
    }
}
