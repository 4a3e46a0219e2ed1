//! holmes' trigger rule, with a reason for every answer: a signal triggers when
//! `cur >= min`, and not `cur >= max` (at that size the profile itself is dangerous), and
//! `cur >= abs` or `cur >= avg(history) * (1 + diff/100)`; and, for signals that always
//! move, `cur >= avg(history) + zscore × stddev(history)` with stddev > 0. `diff` and
//! `zscore` need a full history; until then only `abs` can trigger. With none of `abs`,
//! `diff` and `zscore`, `min` alone decides.

use crate::model::Threshold;
use crate::model::text::reading as show;

/// Whether a signal triggers, with the reason either way (`cpu_percent 80.0 >= abs 70`,
/// `cpu_percent 12.0 < min 20`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    Triggers(String),
    Quiet(String),
}

impl Judgement {
    /// The same judgement, its reason rewritten by `reword`.
    pub fn map(self, reword: impl FnOnce(String) -> String) -> Judgement {
        match self {
            Judgement::Triggers(reason) => Judgement::Triggers(reword(reason)),
            Judgement::Quiet(reason) => Judgement::Quiet(reword(reason)),
        }
    }
}

/// Whether `current` triggers, given the `previous` readings (oldest first) and the
/// history size that counts as full.
pub fn evaluate(
    signal: &str,
    threshold: &Threshold,
    current: f64,
    previous: &[f64],
    full: usize,
) -> Judgement {
    let cur = show(signal, current);
    if let Some(min) = threshold.min
        && current < min
    {
        return Judgement::Quiet(format!("{signal} {cur} < min {min}"));
    }
    if let Some(max) = threshold.max
        && current >= max
    {
        return Judgement::Quiet(format!("{signal} {cur} >= max {max}"));
    }
    if let Some(abs) = threshold.abs
        && current >= abs
    {
        return Judgement::Triggers(format!("{signal} {cur} >= abs {abs}"));
    }
    let mut missed = Vec::new();
    if let Some(abs) = threshold.abs {
        missed.push(format!("< abs {abs}"));
    }
    if let Some(diff) = threshold.diff {
        if previous.len() < full {
            missed.push(format!("diff needs {full} samples, has {}", previous.len()));
        } else {
            let window = &previous[previous.len() - full..];
            let avg = window.iter().sum::<f64>() / window.len() as f64;
            let factor = 1.0 + diff / 100.0;
            let bar = avg * factor;
            let shown = format!("{factor} × avg {} = {}", show(signal, avg), show(signal, bar));
            if current >= bar {
                return Judgement::Triggers(format!("{signal} {cur} >= {shown}"));
            }
            missed.push(format!("< {shown}"));
        }
    }
    if let Some(z) = threshold.zscore {
        if previous.len() < full {
            missed.push(format!("zscore needs {full} samples, has {}", previous.len()));
        } else {
            let window = &previous[previous.len() - full..];
            let mean = window.iter().sum::<f64>() / window.len() as f64;
            let variance = window.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / window.len() as f64;
            let sd = variance.sqrt();
            if sd > 0.0 {
                let bar = mean + z * sd;
                let shown = format!(
                    "avg {} + {z} × sd {} = {}",
                    show(signal, mean),
                    show(signal, sd),
                    show(signal, bar)
                );
                if current >= bar {
                    return Judgement::Triggers(format!("{signal} {cur} >= {shown}"));
                }
                missed.push(format!("< {shown}"));
            } else {
                missed.push(format!("zscore: the last {full} samples are all {}", show(signal, mean)));
            }
        }
    }
    match (threshold.min, missed.is_empty()) {
        (Some(min), true) => Judgement::Triggers(format!("{signal} {cur} >= min {min}")),
        _ => Judgement::Quiet(format!("{signal} {cur} {}", missed.join(" and "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Judgement::{Quiet, Triggers};

    fn t(min: Option<f64>, abs: Option<f64>, diff: Option<f64>, max: Option<f64>) -> Threshold {
        Threshold { min, abs, diff, max, zscore: None }
    }

    fn z(zscore: f64) -> Threshold {
        Threshold { zscore: Some(zscore), ..Default::default() }
    }

    /// A noisy signal: `diff` at 50% either fires on every wobble or misses the spike, while
    /// a z-score of 3 stays quiet on the wobble and fires on the spike; a flat history has
    /// no deviation to measure; the reasons name the numbers.
    #[test]
    fn zscore_on_a_noisy_signal() {
        // Swings between 20 and 40 (mean 30, sd 10).
        let noisy = [20.0, 40.0, 20.0, 40.0, 20.0, 40.0];
        assert_eq!(
            evaluate("cpu_percent", &z(3.0), 60.0, &noisy, 6),
            Triggers("cpu_percent 60.0 >= avg 30.0 + 3 × sd 10.0 = 60.0".to_string())
        );
        assert_eq!(
            evaluate("cpu_percent", &z(3.0), 45.0, &noisy, 6),
            Quiet("cpu_percent 45.0 < avg 30.0 + 3 × sd 10.0 = 60.0".to_string())
        );
        // diff 50% fires at 45 already, on a wobble the signal makes every few samples.
        let diff = evaluate("cpu_percent", &t(None, None, Some(50.0), None), 45.0, &noisy, 6);
        assert!(matches!(diff, Triggers(_)), "{diff:?}");
        assert_eq!(
            evaluate("cpu_percent", &z(3.0), 90.0, &[30.0; 6], 6),
            Quiet("cpu_percent 90.0 zscore: the last 6 samples are all 30.0".to_string())
        );
        assert_eq!(
            evaluate("cpu_percent", &z(3.0), 90.0, &noisy[..4], 6),
            Quiet("cpu_percent 90.0 zscore needs 6 samples, has 4".to_string())
        );
        // min still guards, and abs still triggers alone.
        let guarded = Threshold { min: Some(70.0), abs: Some(95.0), zscore: Some(3.0), ..Default::default() };
        assert_eq!(
            evaluate("cpu_percent", &guarded, 65.0, &noisy, 6),
            Quiet("cpu_percent 65.0 < min 70".to_string())
        );
        assert!(matches!(evaluate("cpu_percent", &guarded, 96.0, &[], 6), Triggers(_)));
    }

    /// The boundaries of min, abs, diff and max, warm-up, and the reasons, as a table.
    #[test]
    fn trigger_table() {
        let full = [10.0, 20.0, 30.0, 40.0]; // avg 25
        let holmes = t(Some(20.0), Some(70.0), Some(25.0), Some(400.0));
        type Case<'a> = (&'a str, Threshold, f64, &'a [f64], Judgement);
        let cases: Vec<Case> = vec![
            ("below min", holmes, 12.0, &full, Quiet("cpu_percent 12.0 < min 20".into())),
            (
                "min is inclusive",
                t(Some(20.0), Some(20.0), None, None),
                20.0,
                &[],
                Triggers("cpu_percent 20.0 >= abs 20".into()),
            ),
            ("abs is inclusive", holmes, 70.0, &[], Triggers("cpu_percent 70.0 >= abs 70".into())),
            ("at max is refused", holmes, 400.0, &full, Quiet("cpu_percent 400.0 >= max 400".into())),
            ("just under max", holmes, 399.9, &full, Triggers("cpu_percent 399.9 >= abs 70".into())),
            (
                "diff reached exactly",
                holmes,
                31.25,
                &full,
                Triggers("cpu_percent 31.2 >= 1.25 × avg 25.0 = 31.2".into()),
            ),
            (
                "diff missed",
                holmes,
                31.0,
                &full,
                Quiet("cpu_percent 31.0 < abs 70 and < 1.25 × avg 25.0 = 31.2".into()),
            ),
            (
                "warm-up: diff needs a full history",
                holmes,
                69.0,
                &full[..3],
                Quiet("cpu_percent 69.0 < abs 70 and diff needs 4 samples, has 3".into()),
            ),
            ("warm-up: abs still triggers", holmes, 71.0, &[], Triggers("cpu_percent 71.0 >= abs 70".into())),
            (
                "diff over the latest window only",
                t(None, None, Some(100.0), None),
                9.0,
                &[1000.0, 4.0, 4.0, 4.0, 4.0],
                Triggers("cpu_percent 9.0 >= 2 × avg 4.0 = 8.0".into()),
            ),
            (
                "min alone",
                t(Some(5.0), None, None, None),
                5.0,
                &[],
                Triggers("cpu_percent 5.0 >= min 5".into()),
            ),
        ];
        for (name, threshold, current, previous, expected) in cases {
            let got = evaluate("cpu_percent", &threshold, current, previous, 4);
            assert_eq!(got, expected, "case {name:?}");
        }
    }

    /// Counts show whole, as in `goroutines 1200000 >= max 1000000`.
    #[test]
    fn count_reasons() {
        let guard = t(Some(100.0), Some(5000.0), None, Some(1_000_000.0));
        assert_eq!(
            evaluate("goroutines", &guard, 1_200_000.0, &[], 10),
            Quiet("goroutines 1200000 >= max 1000000".to_string())
        );
        assert_eq!(
            evaluate("goroutines", &guard, 6000.0, &[], 10),
            Triggers("goroutines 6000 >= abs 5000".to_string())
        );
    }
}
