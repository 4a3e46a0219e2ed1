//! A profile against a baseline, as `go tool pprof -diff_base=BASE -top PROFILE` shows it:
//! each function's flat and cum of the profile minus the base's, as percentages of the
//! base's total (of the profile's when the base has none, as pprof falls back to), sorted
//! by flat. What grew most comes first.

use super::summary::{FunctionTable, Measure, is_runtime};
use crate::model::summary::unit_of;
use crate::model::text::{change, quantity};
use crate::model::{CaptureId, Diff, TopFunction};

/// The functions of `diff` that grew, most first. By cum, the runtime's own functions are
/// left out: they are on every stack.
pub fn grown(diff: &Diff, measure: Measure) -> Vec<&TopFunction> {
    let mut grown: Vec<&TopFunction> = diff
        .functions
        .iter()
        .filter(|row| measure.of(row).0 > 0)
        .filter(|row| measure == Measure::Flat || !is_runtime(&row.function))
        .collect();
    grown.sort_by_key(|row| std::cmp::Reverse(measure.of(row).0));
    grown
}

/// Past this share of the baseline's total, a percentage says less than the baseline's
/// own size: the baseline was all but empty.
const PERCENT_SHOWN_UP_TO: f64 = 1000.0;

/// `main.leak +1.50s (+300.0%)`: a row's change in the sample type's unit. Against a
/// baseline all but empty, `main.leak +1.50s (new: the baseline had 4.00ms in all)`
/// rather than a percentage in the thousands.
pub fn describe(diff: &Diff, row: &TopFunction, measure: Measure) -> String {
    let (value, percent) = measure.of(row);
    let cum = if measure == Measure::Cum { " cum" } else { "" };
    let unit = unit_of(&diff.sample_type);
    let share = match percent.abs() <= PERCENT_SHOWN_UP_TO {
        true => format!("{percent:+.1}%"),
        false => format!("new: the baseline had {} in all", quantity(diff.base_total, unit)),
    };
    format!("{} {}{cum} ({share})", row.function, change(value, unit))
}

/// Why two profiles cannot be compared.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot compare {profile} with a baseline of {base}")]
pub struct Incompatible {
    pub profile: String,
    pub base: String,
}

/// `profile - base` per function, the first `count` rows by `measure`.
pub fn diff(
    profile: &FunctionTable,
    base: &FunctionTable,
    base_id: &CaptureId,
    count: usize,
    measure: Measure,
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
    measure.rank(&mut functions);
    functions.truncate(count);
    let cut_short = [("the profile", &profile.cut_short), ("the baseline", &base.cut_short)]
        .into_iter()
        .filter_map(|(which, cut)| cut.as_ref().map(|cut| format!("{which}: {cut}")))
        .collect::<Vec<_>>();
    Ok(Diff {
        base: base_id.clone(),
        sample_type: profile.sample_type.clone(),
        base_total: base.total,
        total: profile.total,
        functions,
        cut_short: (!cut_short.is_empty()).then(|| cut_short.join("; ")),
        before_window: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::stacks::tests::budget;
    use crate::model::ProfileKind;

    fn b() -> CaptureId {
        CaptureId::parse("b").unwrap()
    }
    use crate::testing::profiles::profile;

    fn table(samples: &[(&[u64], [i64; 2])]) -> FunctionTable {
        let bytes = profile(&["main.main", "main.serve", "main.leak"], samples);
        FunctionTable::read(|| Ok(bytes.as_slice()), &budget()).unwrap()
    }

    /// The spike's new function tops the diff; what shrank sorts last; percentages are of
    /// the base total, as pprof -diff_base shows them.
    #[test]
    fn grown_first_of_base_total() {
        let base = table(&[(&[2, 1], [1, 100])]);
        let spike = table(&[(&[2, 1], [1, 50]), (&[3, 1], [9, 900])]);
        let diff = diff(&spike, &base, &b(), 10, Measure::Flat).unwrap();
        assert_eq!(diff.base_total, 100);
        assert_eq!(diff.total, 950);
        let rows: Vec<(&str, i64, i64)> =
            diff.functions.iter().map(|f| (f.function.as_str(), f.flat, f.cum)).collect();
        assert_eq!(rows, [("main.leak", 900, 900), ("main.main", 0, 850), ("main.serve", -50, -50)]);
        assert_eq!(diff.functions[0].flat_percent, 900.0);
        let by_flat: Vec<&str> = grown(&diff, Measure::Flat).iter().map(|f| f.function.as_str()).collect();
        assert_eq!(by_flat, ["main.leak"]);
        let by_cum: Vec<&str> = grown(&diff, Measure::Cum).iter().map(|f| f.function.as_str()).collect();
        assert_eq!(by_cum, ["main.leak", "main.main"]);
        assert_eq!(
            describe(&diff, grown(&diff, Measure::Cum)[1], Measure::Cum),
            "main.main +850ns cum (+850.0%)"
        );
    }

    /// A function only in the base shows as a loss; an identical profile has no rows.
    #[test]
    fn gone_and_unchanged() {
        let base = table(&[(&[3, 1], [1, 70])]);
        let later = table(&[(&[2, 1], [1, 70])]);
        let rows: Vec<(String, i64)> = diff(&later, &base, &b(), 10, Measure::Flat)
            .unwrap()
            .functions
            .into_iter()
            .map(|f| (f.function, f.flat))
            .collect();
        assert_eq!(rows, [("main.serve".to_string(), 70), ("main.leak".to_string(), -70)]);
        assert!(diff(&base, &base, &b(), 10, Measure::Flat).unwrap().functions.is_empty());
    }

    /// Against an empty base the percentages are of the profile's total.
    #[test]
    fn empty_base() {
        let empty = table(&[]);
        let spike = table(&[(&[3, 1], [1, 300]), (&[2, 1], [1, 100])]);
        let diff = diff(&spike, &empty, &b(), 10, Measure::Flat).unwrap();
        assert_eq!(diff.functions[0].function, "main.leak");
        assert_eq!(diff.functions[0].flat_percent, 75.0);
    }

    #[test]
    fn described_in_units() {
        let base = table(&[(&[2, 1], [1, 100])]);
        let spike = table(&[(&[3, 1], [1, 4_000_000_000])]);
        let diff = diff(&spike, &base, &b(), 10, Measure::Flat).unwrap();
        assert_eq!(
            describe(&diff, &diff.functions[0], Measure::Flat),
            "main.leak +4.00s (new: the baseline had 100ns in all)"
        );
        let base = table(&[(&[2, 1], [1, 1_000_000_000])]);
        let diff = super::diff(&spike, &base, &b(), 10, Measure::Flat).unwrap();
        assert_eq!(describe(&diff, &diff.functions[0], Measure::Flat), "main.leak +4.00s (+400.0%)");
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
        let read = |b: &Vec<u8>| FunctionTable::read(|| Ok(b.as_slice()), &budget()).unwrap();
        let diff = diff(&read(&spike), &read(&base), &b(), 10, Measure::Flat).unwrap();
        assert_eq!(grown(&diff, Measure::Flat)[0].function, "runtime.gopark");
        let named: Vec<&str> = grown(&diff, Measure::for_kind(ProfileKind::Goroutine))
            .iter()
            .map(|f| f.function.as_str())
            .collect();
        assert_eq!(named, ["main.leak"]);
    }

    #[test]
    fn different_types_refused() {
        let base = table(&[(&[1], [1, 1])]);
        let other = FunctionTable { sample_type: "inuse_space/bytes".into(), ..base.clone() };
        assert_eq!(
            diff(&other, &base, &b(), 10, Measure::Flat).unwrap_err().to_string(),
            "cannot compare inuse_space/bytes with a baseline of cpu/nanoseconds"
        );
    }
}
