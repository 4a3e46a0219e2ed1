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
    let frames = read_frames(open().map_err(io)?, budget)?;

    // Pass 2: the samples, and the strings their names and the sample types need.
    let mut wanted: HashSet<i64> = frames.function_names.values().copied().collect();
    wanted.extend(frames.sample_types.iter().flat_map(|t| [t.r#type, t.unit]));
    wanted.insert(frames.default_type);
    let mut strings: HashMap<i64, String> = HashMap::new();
    let mut next_string: i64 = 0;
    let mut samples = Samples::new(&frames, budget);
    walk_fields(open().map_err(io)?, budget.max_unzipped, |field| {
        match field {
            TopField::Bytes(2, _) if samples.stopped.is_some() => {}
            TopField::Bytes(2, bytes) => samples.take(bytes, &mut visit)?,
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
    let cut_short = samples.cut_short();
    Ok(frames.walked(strings, cut_short))
}

fn not_profile(error: prost::DecodeError) -> InvalidBody {
    InvalidBody::NotProfile(error.to_string())
}

fn cancelled() -> InvalidBody {
    InvalidBody::Stopped("the analysis was cancelled".to_string())
}

/// What the first pass learns, all that stacks are made of: the functions each location
/// stands for, their names, and the sample types.
struct Frames {
    /// Function ids of each location, leaf first (inlined frames expanded).
    location_functions: HashMap<u64, Vec<u64>>,
    /// The string-table index of each function's name.
    function_names: HashMap<u64, i64>,
    sample_types: Vec<ValueType>,
    /// `default_sample_type`, a string-table index; 0 if none.
    default_type: i64,
}

/// Pass 1: the locations, functions and sample types of the profile `reader` reads.
fn read_frames(reader: impl Read, budget: &Budget) -> Result<Frames, InvalidBody> {
    let mut frames = Frames {
        location_functions: HashMap::new(),
        function_names: HashMap::new(),
        sample_types: Vec::new(),
        default_type: 0,
    };
    walk_fields(reader, budget.max_unzipped, |field| {
        if budget.cancel.is_cancelled() {
            return Err(cancelled());
        }
        match field {
            TopField::Bytes(1, bytes) => {
                frames.sample_types.push(ValueType::decode(bytes).map_err(not_profile)?)
            }
            TopField::Bytes(4, bytes) => {
                let location = Location::decode(bytes).map_err(not_profile)?;
                let functions = location.line.iter().map(|l| l.function_id).collect();
                frames.location_functions.insert(location.id, functions);
            }
            TopField::Bytes(5, bytes) => {
                let function = Function::decode(bytes).map_err(not_profile)?;
                frames.function_names.insert(function.id, function.name);
            }
            TopField::Varint(14, value) => frames.default_type = value as i64,
            _ => {}
        }
        Ok(())
    })?;
    if frames.sample_types.is_empty() {
        return Err(InvalidBody::NoSampleTypes);
    }
    Ok(frames)
}

impl Frames {
    /// What the walk learned, with the strings read in the second pass.
    fn walked(self, strings: HashMap<i64, String>, cut_short: Option<String>) -> Walked {
        let text = |index: i64| strings.get(&index).cloned().unwrap_or_default();
        let last = self.sample_types.len() - 1;
        let main = if self.default_type != 0 {
            let name = text(self.default_type);
            self.sample_types.iter().position(|t| text(t.r#type) == name).unwrap_or(last)
        } else {
            last
        };
        let sample_types = self.sample_types.iter().map(|t| (text(t.r#type), text(t.unit))).collect();
        Walked { cut_short, sample_types, main, strings }
    }
}

/// Pass 2 over the samples, within the budget: each sample's stack in turn, and how much
/// of the budget it has taken.
struct Samples<'a> {
    frames: &'a Frames,
    budget: &'a Budget,
    deadline: Instant,
    /// The stack of the sample being taken, its memory kept for the next.
    stack: Vec<i64>,
    /// Frames and locations looked at so far.
    work: u64,
    /// Samples met so far, taken or not.
    seen: u64,
    /// Stacks cut to the depth bound.
    cut_stacks: u64,
    /// Why the rest of the samples is left unread, once it is.
    stopped: Option<String>,
}

impl<'a> Samples<'a> {
    fn new(frames: &'a Frames, budget: &'a Budget) -> Samples<'a> {
        Samples {
            frames,
            budget,
            deadline: Instant::now() + budget.time,
            stack: Vec::new(),
            work: 0,
            seen: 0,
            cut_stacks: 0,
            stopped: None,
        }
    }

    /// Hands one encoded sample's stack and values to `visit`, unless the time is up
    /// (checked every 256 samples, as is a cancel); past the work bound, stops after it.
    fn take(&mut self, bytes: &[u8], visit: &mut impl FnMut(&[i64], &[i64])) -> Result<(), InvalidBody> {
        self.seen += 1;
        if self.seen.is_multiple_of(256) {
            if self.budget.cancel.is_cancelled() {
                return Err(cancelled());
            }
            if Instant::now() >= self.deadline {
                let why =
                    format!("the samples after the first {} took over {:?}", self.seen - 1, self.budget.time);
                self.stopped = Some(why);
                return Ok(());
            }
        }
        let sample = Sample::decode(bytes).map_err(not_profile)?;
        if sample.value.len() != self.frames.sample_types.len() {
            return Err(InvalidBody::NotProfile("sample values do not match sample types".into()));
        }
        let cut = self.fill_stack(&sample.location_id);
        self.cut_stacks += u64::from(cut);
        self.work += self.stack.len() as u64;
        visit(&self.stack, &sample.value);
        if self.work >= self.budget.max_work {
            self.stopped =
                Some(format!("the samples after the first {} were over the work bound", self.seen));
        }
        Ok(())
    }

    /// Fills `stack` with the function names of `locations`, leaf first; whether it was
    /// cut to the depth bound.
    fn fill_stack(&mut self, locations: &[u64]) -> bool {
        self.stack.clear();
        for location in locations {
            self.work += 1;
            let functions = self.frames.location_functions.get(location).map_or(&[][..], Vec::as_slice);
            for name in functions.iter().filter_map(|f| self.frames.function_names.get(f)) {
                if self.stack.len() == self.budget.max_depth {
                    return true;
                }
                self.stack.push(*name);
            }
        }
        false
    }

    /// Why the figures cover less than the whole profile, if they do.
    fn cut_short(self) -> Option<String> {
        let mut cut = Vec::new();
        if self.cut_stacks > 0 {
            cut.push(format!(
                "{} stacks deeper than {} frames were cut to their leaf end",
                self.cut_stacks, self.budget.max_depth
            ));
        }
        cut.extend(self.stopped.map(|why| format!("{why}, and were left out")));
        (!cut.is_empty()).then(|| cut.join("; "))
    }
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
