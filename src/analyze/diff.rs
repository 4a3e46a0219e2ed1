//! A profile against a baseline, as `go tool pprof -diff_base=BASE -top PROFILE` shows it:
//! each function's flat and cum of the profile minus the base's, as percentages of the
//! base's total (of the profile's when the base has none, as pprof falls back to), sorted
//! by flat. What grew most comes first.

use serde::{Deserialize, Serialize};

use super::summary::{FunctionTable, TopFunction, sort_top};

/// The functions that changed most against a baseline capture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    /// The baseline capture's id.
    pub base: String,
    /// `type/unit`, the same for both.
    pub sample_type: String,
    /// The baseline's total, which the percentages are of (the profile's, if it is 0).
    pub base_total: i64,
    /// The profile's total.
    pub total: i64,
    /// Changes of flat and cum, largest flat growth first; unchanged functions left out.
    pub functions: Vec<TopFunction>,
}

/// Which value says that a function grew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Flat,
    /// For goroutine and threadcreate profiles: every stack ends where the runtime parks
    /// or creates (flat is all `runtime.gopark`), so the user's functions show by cum.
    Cum,
}

impl Measure {
    pub fn for_kind(kind: &str) -> Measure {
        if matches!(kind, "goroutine" | "threadcreate") { Measure::Cum } else { Measure::Flat }
    }

    fn of(self, row: &TopFunction) -> (i64, f64) {
        match self {
            Measure::Flat => (row.flat, row.flat_percent),
            Measure::Cum => (row.cum, row.cum_percent),
        }
    }
}

impl Diff {
    /// The functions that grew, most first. By cum, the runtime's own functions are left
    /// out: they are on every stack.
    pub fn grown(&self, measure: Measure) -> Vec<&TopFunction> {
        let mut grown: Vec<&TopFunction> = self
            .functions
            .iter()
            .filter(|row| measure.of(row).0 > 0)
            .filter(|row| measure == Measure::Flat || !row.function.starts_with("runtime."))
            .collect();
        grown.sort_by_key(|row| std::cmp::Reverse(measure.of(row).0));
        grown
    }

    /// `main.leak +1.50s (+300.0%)`: a row's change in the sample type's unit.
    pub fn describe(&self, row: &TopFunction, measure: Measure) -> String {
        let unit = self.sample_type.rsplit('/').next().unwrap_or("");
        let (value, percent) = measure.of(row);
        let cum = if measure == Measure::Cum { " cum" } else { "" };
        format!("{} {}{cum} ({percent:+.1}%)", row.function, signed(value, unit))
    }
}

/// A change in a sample unit, the way pprof prints it: `+1.50s`, `-12.0MB`, `+340`.
pub fn signed(value: i64, unit: &str) -> String {
    let sign = if value < 0 { "-" } else { "+" };
    let size = value.unsigned_abs() as f64;
    let scaled = |steps: &[(f64, &str)]| {
        let (div, suffix) = steps.iter().rev().find(|(div, _)| size >= *div).copied().unwrap_or(steps[0]);
        format!("{sign}{:.2}{suffix}", size / div)
    };
    match unit {
        "nanoseconds" => scaled(&[(1.0, "ns"), (1e3, "us"), (1e6, "ms"), (1e9, "s")]),
        "bytes" => scaled(&[(1.0, "B"), (1e3, "kB"), (1e6, "MB"), (1e9, "GB")]),
        _ => format!("{sign}{}", value.unsigned_abs()),
    }
}

/// Why two profiles cannot be compared.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot compare {profile} with a baseline of {base}")]
pub struct Incompatible {
    pub profile: String,
    pub base: String,
}

/// `profile - base` per function, the first `count` rows.
pub fn diff(
    profile: &FunctionTable,
    base: &FunctionTable,
    base_id: &str,
    count: usize,
) -> Result<Diff, Incompatible> {
    if profile.sample_type != base.sample_type {
        return Err(Incompatible { profile: profile.sample_type.clone(), base: base.sample_type.clone() });
    }
    let of = if base.total != 0 { base.total } else { profile.total };
    let percent = |value: i64| if of == 0 { 0.0 } else { value as f64 / of as f64 * 100.0 };
    let names =
        profile.functions.keys().chain(base.functions.keys().filter(|n| !profile.functions.contains_key(*n)));
    let mut functions: Vec<TopFunction> = names
        .map(|name| {
            let (flat, cum) = profile.functions.get(name).copied().unwrap_or_default();
            let (base_flat, base_cum) = base.functions.get(name).copied().unwrap_or_default();
            let (flat, cum) = (flat.saturating_sub(base_flat), cum.saturating_sub(base_cum));
            TopFunction {
                function: name.clone(),
                flat,
                flat_percent: percent(flat),
                cum,
                cum_percent: percent(cum),
            }
        })
        .filter(|f| f.flat != 0 || f.cum != 0)
        .collect();
    sort_top(&mut functions);
    functions.truncate(count);
    Ok(Diff {
        base: base_id.to_string(),
        sample_type: profile.sample_type.clone(),
        base_total: base.total,
        total: profile.total,
        functions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::stacks::tests::profile;

    fn table(samples: &[(&[u64], [i64; 2])]) -> FunctionTable {
        let bytes = profile(&["main.main", "main.serve", "main.leak"], samples);
        FunctionTable::read(|| Ok(bytes.as_slice()), 1 << 20).unwrap()
    }

    /// The spike's new function tops the diff; what shrank sorts last; percentages are of
    /// the base total, as pprof -diff_base shows them.
    #[test]
    fn grown_first_of_base_total() {
        let base = table(&[(&[2, 1], [1, 100])]);
        let spike = table(&[(&[2, 1], [1, 50]), (&[3, 1], [9, 900])]);
        let diff = diff(&spike, &base, "b", 10).unwrap();
        assert_eq!(diff.base_total, 100);
        assert_eq!(diff.total, 950);
        let rows: Vec<(&str, i64, i64)> =
            diff.functions.iter().map(|f| (f.function.as_str(), f.flat, f.cum)).collect();
        assert_eq!(rows, [("main.leak", 900, 900), ("main.main", 0, 850), ("main.serve", -50, -50)]);
        assert_eq!(diff.functions[0].flat_percent, 900.0);
        let grown: Vec<&str> = diff.grown(Measure::Flat).iter().map(|f| f.function.as_str()).collect();
        assert_eq!(grown, ["main.leak"]);
        let by_cum: Vec<&str> = diff.grown(Measure::Cum).iter().map(|f| f.function.as_str()).collect();
        assert_eq!(by_cum, ["main.leak", "main.main"]);
        assert_eq!(
            diff.describe(diff.grown(Measure::Cum)[1], Measure::Cum),
            "main.main +850.00ns cum (+850.0%)"
        );
    }

    /// A function only in the base shows as a loss; an identical profile has no rows.
    #[test]
    fn gone_and_unchanged() {
        let base = table(&[(&[3, 1], [1, 70])]);
        let later = table(&[(&[2, 1], [1, 70])]);
        let rows: Vec<(String, i64)> = diff(&later, &base, "b", 10)
            .unwrap()
            .functions
            .into_iter()
            .map(|f| (f.function, f.flat))
            .collect();
        assert_eq!(rows, [("main.serve".to_string(), 70), ("main.leak".to_string(), -70)]);
        assert!(diff(&base, &base, "b", 10).unwrap().functions.is_empty());
    }

    /// Against an empty base the percentages are of the profile's total.
    #[test]
    fn empty_base() {
        let empty = table(&[]);
        let spike = table(&[(&[3, 1], [1, 300]), (&[2, 1], [1, 100])]);
        let diff = diff(&spike, &empty, "b", 10).unwrap();
        assert_eq!(diff.functions[0].function, "main.leak");
        assert_eq!(diff.functions[0].flat_percent, 75.0);
    }

    #[test]
    fn described_in_units() {
        assert_eq!(signed(1_500_000_000, "nanoseconds"), "+1.50s");
        assert_eq!(signed(-2_500_000, "nanoseconds"), "-2.50ms");
        assert_eq!(signed(12_000_000, "bytes"), "+12.00MB");
        assert_eq!(signed(340, "count"), "+340");
        assert_eq!(signed(0, "bytes"), "+0.00B");
        let base = table(&[(&[2, 1], [1, 100])]);
        let spike = table(&[(&[3, 1], [1, 400])]);
        let diff = diff(&spike, &base, "b", 10).unwrap();
        assert_eq!(diff.describe(&diff.functions[0], Measure::Flat), "main.leak +400.00ns (+400.0%)");
    }

    /// In a goroutine profile the parked runtime frame holds all flat; by cum, the user's
    /// function that spawned the goroutines is named, not the runtime's.
    #[test]
    fn goroutines_by_cum() {
        let bytes = |n| {
            profile(
                &["runtime.goexit", "main.leak", "runtime.gopark"],
                &[(&[3, 2, 1], [n, n]), (&[3, 1], [1, 1])],
            )
        };
        let (base, spike) = (bytes(1), bytes(500));
        let read = |b: &Vec<u8>| FunctionTable::read(|| Ok(b.as_slice()), 1 << 20).unwrap();
        let diff = diff(&read(&spike), &read(&base), "b", 10).unwrap();
        assert_eq!(diff.grown(Measure::Flat)[0].function, "runtime.gopark");
        let named: Vec<&str> =
            diff.grown(Measure::for_kind("goroutine")).iter().map(|f| f.function.as_str()).collect();
        assert_eq!(named, ["main.leak"]);
    }

    #[test]
    fn different_types_refused() {
        let base = table(&[(&[1], [1, 1])]);
        let other = FunctionTable { sample_type: "inuse_space/bytes".into(), ..base.clone() };
        assert_eq!(
            diff(&other, &base, "b", 10).unwrap_err().to_string(),
            "cannot compare inuse_space/bytes with a baseline of cpu/nanoseconds"
        );
    }
}
