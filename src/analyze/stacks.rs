//! One streaming walk over a gzip'd profile.proto that hands every sample's stack (function
//! names, leaf first, inlined frames expanded) and values to a visitor. Two passes over the
//! file — the locations and functions, then the samples and the names needed — so a large
//! profile is never held whole. The summary, the diff and the flame graph are built on it.
//! A `Budget` bounds the walk whatever the profile says: stacks deeper than its depth are
//! cut, and past its work or its time the rest of the samples is left unread; the result
//! says so.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::time::{Duration, Instant};

use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::profile::proto::{Function, Location, Sample, ValueType};
use crate::profile::{InvalidBody, TopField, walk_fields};

/// How much one analysis may do, whatever the profile says.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Bound on gunzipped bytes read (validation already bounded the body).
    pub max_unzipped: u64,
    /// Frames of one sample's stack, inlined frames expanded; a deeper stack is cut to its
    /// leaf end. Go's own profiles hold stacks of at most a few hundred frames.
    pub max_depth: usize,
    /// Frames and locations looked at over all samples; past it the rest of the samples is
    /// left unread.
    pub max_work: u64,
    /// Time for the samples; past it the rest is left unread.
    pub time: Duration,
    /// Told when the result is no longer wanted (the client went away, shutdown): the walk
    /// stops at once.
    pub cancel: CancellationToken,
}

impl Budget {
    pub const MAX_DEPTH: usize = 2048;
    pub const MAX_WORK: u64 = 50_000_000;

    /// The default bounds, with `time` for the samples.
    pub fn new(time: Duration) -> Budget {
        Budget {
            max_unzipped: 8 << 30,
            max_depth: Budget::MAX_DEPTH,
            max_work: Budget::MAX_WORK,
            time,
            cancel: CancellationToken::new(),
        }
    }

    pub fn with_cancel(self, cancel: CancellationToken) -> Budget {
        Budget { cancel, ..self }
    }
}

/// What a walk learned besides the samples: the sample types, which one is the main one,
/// and the strings the stacks refer to.
#[derive(Debug)]
pub struct Walked {
    /// Why the figures cover less than the whole profile, if they do.
    pub cut_short: Option<String>,
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

/// Walks the profile that `open` reads (called once per pass), within `budget`. `visit`
/// gets each sample's function names as string-table indices, leaf first (resolve them with
/// `Walked::name` afterwards), and its values, one per sample type. A cancelled walk
/// stops at once with `InvalidBody::Stopped`.
pub fn walk_stacks<R: Read>(
    mut open: impl FnMut() -> std::io::Result<R>,
    budget: &Budget,
    mut visit: impl FnMut(&[i64], &[i64]),
) -> Result<Walked, InvalidBody> {
    let io = |e: std::io::Error| InvalidBody::Io(e.to_string());
    let bad = |e: prost::DecodeError| InvalidBody::NotProfile(e.to_string());
    let cancelled = || InvalidBody::Stopped("the analysis was cancelled".to_string());
    let max_unzipped = budget.max_unzipped;

    // Pass 1: which functions each location stands for (leaf first), and their names.
    let mut location_functions: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut function_names: HashMap<u64, i64> = HashMap::new();
    let mut sample_types: Vec<ValueType> = Vec::new();
    let mut default_type: i64 = 0;
    walk_fields(open().map_err(io)?, max_unzipped, |field| {
        if budget.cancel.is_cancelled() {
            return Err(cancelled());
        }
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
    let deadline = Instant::now() + budget.time;
    let (mut work, mut samples, mut cut_stacks) = (0u64, 0u64, 0u64);
    // Why the rest of the samples is left unread, once it is.
    let mut stopped: Option<String> = None;
    walk_fields(open().map_err(io)?, max_unzipped, |field| {
        match field {
            TopField::Bytes(2, _) if stopped.is_some() => {}
            TopField::Bytes(2, bytes) => {
                samples += 1;
                if samples % 256 == 0 {
                    if budget.cancel.is_cancelled() {
                        return Err(cancelled());
                    }
                    if Instant::now() >= deadline {
                        stopped = Some(format!(
                            "the samples after the first {} took over {:?}",
                            samples - 1,
                            budget.time
                        ));
                        return Ok(());
                    }
                }
                let sample = Sample::decode(bytes).map_err(bad)?;
                if sample.value.len() != values {
                    return Err(InvalidBody::NotProfile("sample values do not match sample types".into()));
                }
                stack.clear();
                let mut cut = false;
                'locations: for location in &sample.location_id {
                    work += 1;
                    let functions = location_functions.get(location).map_or(&[][..], Vec::as_slice);
                    for name in functions.iter().filter_map(|f| function_names.get(f)) {
                        if stack.len() == budget.max_depth {
                            cut = true;
                            break 'locations;
                        }
                        stack.push(*name);
                    }
                }
                cut_stacks += u64::from(cut);
                work += stack.len() as u64;
                visit(&stack, &sample.value);
                if work >= budget.max_work {
                    stopped = Some(format!("the samples after the first {samples} were over the work bound"));
                }
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
    let mut cut = Vec::new();
    if cut_stacks > 0 {
        cut.push(format!(
            "{cut_stacks} stacks deeper than {} frames were cut to their leaf end",
            budget.max_depth
        ));
    }
    cut.extend(stopped.map(|why| format!("{why}, and were left out")));
    let cut_short = (!cut.is_empty()).then(|| cut.join("; "));
    Ok(Walked { cut_short, sample_types, main, strings })
}

/// Adds `values` into `into`, saturating.
pub fn add(into: &mut [i64], values: &[i64]) {
    for (sum, value) in into.iter_mut().zip(values) {
        *sum = sum.saturating_add(*value);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::Budget;

    /// The default budget, with time enough for any test profile.
    pub fn budget() -> Budget {
        Budget::new(std::time::Duration::from_secs(60))
    }
}
