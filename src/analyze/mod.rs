//! What a profile says, worked out at capture time so the user does not have to: the top
//! functions as `go tool pprof -top` lists them, what grew against a baseline as
//! `-diff_base` shows it, and a flame graph; and how each is put into words, so the log,
//! the decision, the annotation and the web page say it the same way. Every function reads
//! a profile through an opener (called once per streaming pass) and holds no store.

pub mod diff;
pub mod flamegraph;
pub mod stacks;
pub mod stored;
pub mod summary;

pub use diff::{Incompatible, describe, diff, grown};
pub use stacks::Budget;
pub use summary::{FunctionTable, Measure, is_runtime, summarize};

use crate::model::{Diff, ProfileKind, Summary, TopFunction};

/// Functions named in logs, decisions and annotations.
pub const TOP_SHOWN: usize = 5;

/// Functions kept in a capture's metadata.
pub const TOP_KEPT: usize = 20;

/// Rows kept in a capture's diff.
pub const DIFF_KEPT: usize = 20;
/// Time the samples of a new capture may take to analyze (each of its walks); past it the
/// figures cover the samples read, and say so.
pub const CAPTURE_ANALYSIS_TIME: std::time::Duration = std::time::Duration::from_secs(20);

/// `main.spin 98.7%` (flat share), or `main.parkGoroutine 99.6% cum`.
pub fn short(row: &TopFunction, measure: Measure) -> String {
    let cum = if measure == Measure::Cum { " cum" } else { "" };
    format!("{} {:.1}%{cum}", row.function, measure.of(row).1)
}

/// `main.spin 98.7%, main.work 1.0%`: the first functions of a `kind` capture, as its
/// summary ranks them (by flat; by cum in goroutine and threadcreate profiles), or that
/// there were no samples.
pub fn top_line(summary: &Summary, kind: ProfileKind) -> String {
    let measure = Measure::for_kind(kind);
    if summary.total == 0 {
        return "no samples".to_string();
    }
    summary.top.iter().take(TOP_SHOWN).map(|row| short(row, measure)).collect::<Vec<_>>().join(", ")
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
            cut_short: None,
        };
        assert_eq!(
            top_line(&summary, ProfileKind::Cpu),
            "main.f0 10.0%, main.f1 9.0%, main.f2 8.0%, main.f3 7.0%, main.f4 6.0%"
        );
        let diff = Diff {
            base: crate::model::CaptureId::parse("b").unwrap(),
            sample_type: "goroutine/count".into(),
            base_total: 10,
            total: 2010,
            functions: vec![row("runtime.gopark", 2000, 2000), row("main.leak", 0, 2000)],
            cut_short: None,
            before_window: false,
        };
        assert_eq!(
            grew_line(&diff, ProfileKind::Goroutine),
            "main.leak +2000 cum (new: the baseline had 10 in all)"
        );
        assert_eq!(
            grew_line(&diff, ProfileKind::Heap),
            "runtime.gopark +2000 (new: the baseline had 10 in all)"
        );
        let none = Diff { functions: vec![row("main.idle", -5, -5)], ..diff };
        assert_eq!(grew_line(&none, ProfileKind::Cpu), "nothing grew");
    }

    use std::time::Duration;

    use super::flamegraph::{self, Labels};
    use super::stacks::tests::budget;
    use crate::testing::profiles::{deep_stacks, inlined_bomb};

    /// Runs `work` on its own thread and fails if it has not finished within `within`.
    fn within<T: Send + 'static>(within: Duration, work: impl FnOnce() -> T + Send + 'static) -> T {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || done_tx.send(work()).ok());
        done_rx.recv_timeout(within).expect("did not finish in time")
    }

    fn labels() -> Labels<'static> {
        Labels { title: "t", subtitle: "s", kind: ProfileKind::Heap }
    }

    /// About a kilobyte that expands to 250 million frames: every stack is cut to its leaf
    /// end at the depth bound, the summary and the flame graph come back at once, and both
    /// say they were cut short.
    #[test]
    fn a_tiny_profile_does_not_take_all_memory() {
        let bomb = inlined_bomb(1000, 250_000);
        assert!(bomb.len() < 2000, "{} bytes", bomb.len());
        let (table, svg) = within(Duration::from_secs(20), move || {
            let table = FunctionTable::read(|| Ok(bomb.as_slice()), &budget()).unwrap();
            let svg = flamegraph::render(|| Ok(bomb.as_slice()), &budget(), &labels()).unwrap();
            (table, svg)
        });
        let cut = table.cut_short.clone().unwrap();
        assert!(cut.contains("1 stacks deeper than 2048 frames were cut to their leaf end"), "{cut}");
        assert_eq!(table.functions["main.f"], (1, 1), "on the stack once, however often it recurs");
        let svg = String::from_utf8(svg).unwrap();
        assert!(svg.contains("cut short: 1 stacks deeper than 2048 frames"), "{}", &svg[..500]);
    }

    /// Deep stacks cost time in proportion to their frames, not their square: 200 stacks of
    /// 10,000 distinct functions take well under a second where a per-frame search of the
    /// stack took minutes.
    #[test]
    fn deep_stacks_are_linear() {
        let profile = deep_stacks(10_000, 200);
        let table = within(Duration::from_secs(20), move || {
            let budget = super::Budget { max_depth: 10_000, ..budget() };
            FunctionTable::read(|| Ok(profile.as_slice()), &budget).unwrap()
        });
        assert_eq!(table.cut_short, None);
        assert_eq!(table.functions["main.f9999"], (0, 2000));
        assert_eq!(table.functions["main.f0"], (2000, 2000));
        assert_eq!(table.total, 2000);
    }

    /// Past its work or its time a walk leaves the rest of the samples unread, and the
    /// figures say how many were read; a cancelled walk stops at once.
    #[test]
    fn work_and_time_are_bounded() {
        let profile = deep_stacks(1000, 3000);
        let worked = super::Budget { max_work: 100_000, ..budget() };
        let table = FunctionTable::read(|| Ok(profile.as_slice()), &worked).unwrap();
        assert_eq!(table.total, 500, "50 samples of 2,000 frames and locations each");
        let cut = table.cut_short.unwrap();
        assert_eq!(cut, "the samples after the first 50 were over the work bound, and were left out");
        let timed = super::Budget { time: Duration::ZERO, ..budget() };
        let table = FunctionTable::read(|| Ok(profile.as_slice()), &timed).unwrap();
        assert_eq!(table.total, 2550, "255 samples read before the clock is first looked at");
        assert!(table.cut_short.unwrap().starts_with("the samples after the first 255 took over 0ns"));
        let cancelled = budget();
        cancelled.cancel.cancel();
        let stopped = FunctionTable::read(|| Ok(profile.as_slice()), &cancelled).unwrap_err();
        assert_eq!(stopped.to_string(), "the analysis was cancelled");
    }

    /// A goroutine profile is summed up by the first code outside the runtime, by cum, in
    /// its table and its line alike; the diff of two ranks the same way. A profile with no
    /// samples says so.
    #[test]
    fn goroutines_name_code() {
        let stacks = |parked: i64| {
            crate::testing::profiles::profile(
                &[
                    "runtime.goexit",
                    "main.parkGoroutine",
                    "runtime.gopark",
                    "main.main",
                    "runtime/pprof.writeGoroutine",
                ],
                &[(&[3, 2, 1], [parked, parked]), (&[3, 4, 1], [1, 1]), (&[5, 4, 1], [1, 1])],
            )
        };
        let (base, spike) = (stacks(10), stacks(2000));
        let table = |bytes: &Vec<u8>| FunctionTable::read(|| Ok(bytes.as_slice()), &budget()).unwrap();
        let summary = table(&spike).summary(10, Measure::Cum);
        let names: Vec<&str> = summary.top.iter().map(|row| row.function.as_str()).collect();
        assert_eq!(names, ["main.parkGoroutine", "main.main"], "no runtime frame in the table");
        assert_eq!(
            top_line(&summary, ProfileKind::Goroutine),
            "main.parkGoroutine 99.9% cum, main.main 0.1% cum"
        );
        let flat = table(&spike).summary(10, Measure::Flat);
        assert_eq!(flat.top[0].function, "runtime.gopark", "a CPU-like ranking would name the scheduler");

        let diff = diff(
            &table(&spike),
            &table(&base),
            &crate::model::CaptureId::parse("b").unwrap(),
            10,
            Measure::Cum,
        )
        .unwrap();
        assert_eq!(diff.functions[0].function, "main.parkGoroutine");
        assert_eq!(diff.functions[0].cum, 1990);
        assert_eq!(
            grew_line(&diff, ProfileKind::Goroutine),
            "main.parkGoroutine +1.99us cum (new: the baseline had 12ns in all)"
        );

        let empty = crate::testing::profiles::profile(&["main.main"], &[]);
        assert_eq!(top_line(&table(&empty).summary(10, Measure::Flat), ProfileKind::Cpu), "no samples");
    }
}
