//! What a profile says, worked out at capture time so the user does not have to: the top
//! functions as `go tool pprof -top` lists them, what grew against a baseline as
//! `-diff_base` shows it, and a flame graph; and how each is put into words, so the log,
//! the decision, the annotation and the web page say it the same way. Every function reads
//! a profile through an opener (called once per streaming pass) and holds no store.

pub mod diff;
pub mod flamegraph;
pub mod stacks;
pub mod summary;

pub use diff::{Incompatible, Measure, describe, diff, grown};
pub use summary::{FunctionTable, summarize};

use crate::model::{Diff, ProfileKind, Summary, TopFunction};

/// Functions named in logs, decisions and annotations.
pub const TOP_SHOWN: usize = 5;

/// Functions kept in a capture's metadata.
pub const TOP_KEPT: usize = 20;

/// Rows kept in a capture's diff.
pub const DIFF_KEPT: usize = 20;

/// `main.spin 98.7%` (flat share).
pub fn short(row: &TopFunction) -> String {
    format!("{} {:.1}%", row.function, row.flat_percent)
}

/// `main.spin 98.7%, main.work 1.0%`: the first functions by flat share.
pub fn top_line(summary: &Summary) -> String {
    summary.top.iter().take(TOP_SHOWN).map(short).collect::<Vec<_>>().join(", ")
}

/// `main.leak +1.5s (+300.0%)`: the functions of a `kind` capture that grew most against
/// the baseline, or that nothing did.
pub fn grew_line(diff: &Diff, kind: ProfileKind) -> String {
    let measure = Measure::for_kind(kind);
    let grown: Vec<String> =
        grown(diff, measure).into_iter().take(TOP_SHOWN).map(|row| describe(diff, row, measure)).collect();
    if grown.is_empty() { "nothing grew".to_string() } else { grown.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(function: &str, flat: i64, cum: i64) -> TopFunction {
        TopFunction {
            function: function.into(),
            flat,
            flat_percent: flat as f64,
            cum,
            cum_percent: cum as f64,
        }
    }

    /// The lines name the first functions, in the profile's unit; nothing grown says so.
    #[test]
    fn lines() {
        let summary = Summary {
            sample_type: "cpu/nanoseconds".into(),
            total: 100,
            top: (0..7).map(|n| row(&format!("main.f{n}"), 10 - n, 10)).collect(),
        };
        assert_eq!(
            top_line(&summary),
            "main.f0 10.0%, main.f1 9.0%, main.f2 8.0%, main.f3 7.0%, main.f4 6.0%"
        );
        let diff = Diff {
            base: "b".into(),
            sample_type: "goroutine/count".into(),
            base_total: 10,
            total: 2010,
            functions: vec![row("runtime.gopark", 2000, 2000), row("main.leak", 0, 2000)],
        };
        assert_eq!(grew_line(&diff, ProfileKind::Goroutine), "main.leak +2000 cum (+2000.0%)");
        assert_eq!(grew_line(&diff, ProfileKind::Heap), "runtime.gopark +2000 (+2000.0%)");
        let none = Diff { functions: vec![row("main.idle", -5, -5)], ..diff };
        assert_eq!(grew_line(&none, ProfileKind::Cpu), "nothing grew");
    }
}
