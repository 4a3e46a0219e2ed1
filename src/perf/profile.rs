//! A recording as a pprof profile, shaped like a Go CPU profile (`samples/count`,
//! `cpu/nanoseconds`): mappings with build ids, locations with their inlined frames as
//! lines (innermost first), and what was lost or unreadable in the comments.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::UNIX_EPOCH;

use crate::profile::proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
use crate::profile::write_gzipped;

use super::error::{BinaryError, PerfError};
use super::maps::{BinaryId, MappedRange, MappingId};
use super::recording::{Frame, PerfRecording, StackKey};
use super::settings::{PerfSummary, PerfTarget, UnreadableBinary};
use super::symbols::{BinaryKey, BinarySymbols, SymbolFrame, Symbolizer};

impl Symbolizer {
    /// Names the frames of `recording` and writes it to `out` as a gzip'd profile.proto.
    /// A binary that cannot be read leaves its frames as addresses and is listed in the
    /// summary; only failing to write fails.
    pub fn write_profile(
        &mut self,
        mut recording: PerfRecording,
        out: &mut impl Write,
    ) -> Result<PerfSummary, PerfError> {
        self.begin_capture();
        let (keys, unreadable) = self.open_used(&mut recording);
        let symbols: Vec<Option<&BinarySymbols>> = keys.iter().map(|key| self.get(key.as_ref()?)).collect();
        let mut builder = ProfileBuilder::new(&recording, symbols);
        for (stack, count) in &recording.stacks {
            builder.add_sample(stack, *count);
        }
        let unsymbolized = builder.unsymbolized;
        let profile = builder.finish(&recording, &unreadable);
        write_gzipped(&profile, out).map_err(|source| PerfError::Write { source })?;
        Ok(PerfSummary {
            samples: recording.samples,
            lost: recording.lost,
            cut_short: recording.cut_short,
            unsymbolized_locations: unsymbolized,
            unreadable_binaries: unreadable,
            processes: recording.stacks.keys().map(|stack| stack.pid).collect::<HashSet<_>>().len(),
            threads: recording.threads.len(),
            duration: recording.duration,
            exited_after: recording.exited_after,
        })
    }

    /// Reads the binaries that sampled frames fall in: their cache keys by binary id, and
    /// those that cannot name anything, with why. The others are closed unread.
    fn open_used(
        &mut self,
        recording: &mut PerfRecording,
    ) -> (Vec<Option<BinaryKey>>, Vec<UnreadableBinary>) {
        let used: HashSet<BinaryId> = recording
            .stacks
            .keys()
            .flat_map(|stack| stack.frames.iter())
            .filter_map(|frame| recording.maps.ranges[frame.mapping? as usize].binary)
            .collect();
        let mut keys = Vec::new();
        let mut unreadable = Vec::new();
        for (id, binary) in recording.maps.binaries.drain(..).enumerate() {
            if !used.contains(&(id as BinaryId)) {
                keys.push(None);
                continue;
            }
            let opened = binary.file.and_then(|file| self.open(&file)).and_then(|key| {
                let named = self.get(&key).is_some_and(|symbols| symbols.has_functions());
                if named { Ok(key) } else { Err(BinaryError::NoSymbols) }
            });
            match opened {
                Ok(key) => keys.push(Some(key)),
                Err(error) => {
                    keys.push(None);
                    unreadable.push(UnreadableBinary { path: binary.path, error });
                }
            }
        }
        (keys, unreadable)
    }
}

/// Functions are the same with the same names, file and start.
#[derive(Debug, PartialEq, Eq, Hash)]
struct FunctionKey {
    name: String,
    system_name: String,
    file: String,
    start_line: i64,
}

/// Locations are the same at the same address of the same mapping, looked up the same
/// way (a leaf's own address, a caller's return address less one).
#[derive(Debug, PartialEq, Eq, Hash)]
struct LocationKey {
    mapping: Option<MappingId>,
    address: u64,
    leaf: bool,
}

/// The profile being built, each table interned.
struct ProfileBuilder<'a> {
    profile: Profile,
    strings: HashMap<String, i64>,
    mappings: HashMap<MappingId, u64>,
    locations: HashMap<LocationKey, u64>,
    functions: HashMap<FunctionKey, u64>,
    /// Samples by their locations and pid label: index into `profile.sample`.
    samples: HashMap<(Vec<u64>, Option<u32>), usize>,
    ranges: &'a [MappedRange],
    /// By binary id: its symbols, if it could be read.
    symbols: Vec<Option<&'a BinarySymbols>>,
    /// For a cgroup, samples carry their process's pid and name.
    process_labels: Option<&'a HashMap<u32, String>>,
    period: i64,
    unsymbolized: u64,
}

impl<'a> ProfileBuilder<'a> {
    fn new(recording: &'a PerfRecording, symbols: Vec<Option<&'a BinarySymbols>>) -> ProfileBuilder<'a> {
        let period = 1_000_000_000 / i64::from(recording.frequency_hz.max(1));
        let mut builder = ProfileBuilder {
            profile: Profile::default(),
            strings: HashMap::new(),
            mappings: HashMap::new(),
            locations: HashMap::new(),
            functions: HashMap::new(),
            samples: HashMap::new(),
            ranges: &recording.maps.ranges,
            symbols,
            process_labels: matches!(recording.target, PerfTarget::Cgroup(_)).then_some(&recording.comms),
            period,
            unsymbolized: 0,
        };
        builder.string("");
        let (samples, count) = (builder.string("samples"), builder.string("count"));
        let (cpu, nanoseconds) = (builder.string("cpu"), builder.string("nanoseconds"));
        builder.profile.sample_type =
            vec![ValueType { r#type: samples, unit: count }, ValueType { r#type: cpu, unit: nanoseconds }];
        builder.profile.period_type = Some(ValueType { r#type: cpu, unit: nanoseconds });
        builder.profile.period = period;
        builder
    }

    fn string(&mut self, text: &str) -> i64 {
        if let Some(index) = self.strings.get(text) {
            return *index;
        }
        let index = self.profile.string_table.len() as i64;
        self.profile.string_table.push(text.to_string());
        self.strings.insert(text.to_string(), index);
        index
    }

    fn add_sample(&mut self, stack: &StackKey, count: u64) {
        let mut location_id: Vec<u64> =
            stack.frames.iter().enumerate().map(|(depth, frame)| self.location(*frame, depth == 0)).collect();
        if let Some(caller) = stack.leaf_caller.filter(|_| self.frameless(stack.frames[0])) {
            let caller = self.location(caller, false);
            location_id.insert(1, caller);
        }
        let count = count as i64;
        let pid = self.process_labels.map(|_| stack.pid);
        // Stacks told apart only by a top-of-stack word that was no return address end
        // up the same: one sample.
        if let Some(index) = self.samples.get(&(location_id.clone(), pid)) {
            let values = &mut self.profile.sample[*index].value;
            values[0] += count;
            values[1] += count * self.period;
            return;
        }
        let mut label = Vec::new();
        if let (Some(comms), Some(pid)) = (self.process_labels, pid) {
            label.push(Label { key: self.string("pid"), num: i64::from(pid), ..Label::default() });
            if let Some(comm) = comms.get(&pid) {
                label.push(Label { key: self.string("comm"), str: self.string(comm), ..Label::default() });
            }
        }
        self.samples.insert((location_id.clone(), pid), self.profile.sample.len());
        self.profile.sample.push(Sample { location_id, value: vec![count, count * self.period], label });
    }

    fn location(&mut self, frame: Frame, leaf: bool) -> u64 {
        let key = LocationKey { mapping: frame.mapping, address: frame.address, leaf };
        if let Some(id) = self.locations.get(&key) {
            return *id;
        }
        let frames = self.symbolize(frame, leaf);
        if frames.is_empty() {
            self.unsymbolized += 1;
        }
        let line = frames
            .iter()
            .map(|symbol| Line { function_id: self.function(symbol), line: symbol.line, column: 0 })
            .collect();
        let id = self.profile.location.len() as u64 + 1;
        let mapping_id = frame.mapping.map_or(0, |mapping| self.mapping(mapping));
        self.profile.location.push(Location {
            id,
            mapping_id,
            address: frame.address,
            line,
            is_folded: false,
        });
        self.locations.insert(key, id);
        id
    }

    /// Frames at a sampled address, innermost first, less one for a return address.
    fn symbolize(&self, frame: Frame, leaf: bool) -> Vec<SymbolFrame> {
        let Some((symbols, address)) = self.resolve(frame) else { return Vec::new() };
        symbols.frames(if leaf { address } else { address.saturating_sub(1) })
    }

    /// Whether a leaf runs without its own frame there, so its caller is missing.
    fn frameless(&self, leaf: Frame) -> bool {
        self.resolve(leaf).is_some_and(|(symbols, address)| symbols.frameless_at(address))
    }

    /// The symbols of a frame's binary and the frame's address in its terms: a file offset
    /// by its mapping, then the binary's own address by its segments.
    fn resolve(&self, frame: Frame) -> Option<(&'a BinarySymbols, u64)> {
        let range = &self.ranges[frame.mapping? as usize];
        let symbols = self.symbols[range.binary? as usize]?;
        Some((symbols, symbols.address(frame.address - range.start + range.pgoff)?))
    }

    fn function(&mut self, symbol: &SymbolFrame) -> u64 {
        let key = FunctionKey {
            name: symbol.name.clone(),
            system_name: symbol.system_name.clone(),
            file: symbol.file.clone(),
            start_line: symbol.start_line,
        };
        if let Some(id) = self.functions.get(&key) {
            return *id;
        }
        let id = self.profile.function.len() as u64 + 1;
        let function = Function {
            id,
            name: self.string(&symbol.name),
            system_name: self.string(&symbol.system_name),
            filename: self.string(&symbol.file),
            start_line: symbol.start_line,
        };
        self.profile.function.push(function);
        self.functions.insert(key, id);
        id
    }

    fn mapping(&mut self, mapping: MappingId) -> u64 {
        if let Some(id) = self.mappings.get(&mapping) {
            return *id;
        }
        let range = &self.ranges[mapping as usize];
        let symbols = range.binary.and_then(|binary| self.symbols[binary as usize]);
        let id = self.profile.mapping.len() as u64 + 1;
        let build_id = symbols.and_then(|symbols| symbols.build_id.clone()).unwrap_or_default();
        let lines = symbols.is_some_and(|symbols| symbols.has_lines());
        let entry = Mapping {
            id,
            memory_start: range.start,
            memory_limit: range.end,
            file_offset: range.pgoff,
            filename: self.string(&range.path.to_string_lossy()),
            build_id: self.string(&build_id),
            has_functions: symbols.is_some_and(|symbols| symbols.has_functions()),
            has_filenames: lines,
            has_line_numbers: lines,
            has_inline_frames: lines,
        };
        self.profile.mapping.push(entry);
        self.mappings.insert(mapping, id);
        id
    }

    /// The header and the comments that say what the profile lacks.
    fn finish(mut self, recording: &PerfRecording, unreadable: &[UnreadableBinary]) -> Profile {
        let started = recording.started.duration_since(UNIX_EPOCH).unwrap_or_default();
        self.profile.time_nanos = started.as_nanos() as i64;
        self.profile.duration_nanos = recording.duration.as_nanos() as i64;
        let target = match &recording.target {
            PerfTarget::Pid(pid) => format!("process {pid}"),
            PerfTarget::Cgroup(dir) => format!("cgroup {}", dir.display()),
        };
        let mut comments =
            vec![format!("perf cpu-clock samples of {target} at {} Hz", recording.frequency_hz)];
        if let Some(after) = recording.exited_after {
            comments.push(format!("the process exited {:.1}s into the capture", after.as_secs_f64()));
        }
        if recording.lost > 0 {
            comments.push(format!("{} samples lost (ring buffer full)", recording.lost));
        }
        if recording.cut_short > 0 {
            comments.push(format!("{} of {} call chains cut short", recording.cut_short, recording.samples));
        }
        for binary in unreadable {
            comments.push(format!("{} left unsymbolized: {}", binary.path.display(), binary.error));
        }
        self.profile.comment = comments.iter().map(|comment| self.string(comment)).collect();
        self.profile
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::PerfSettings;
    use crate::profile::decode_profile;

    /// A function of this test binary to find by address.
    #[inline(never)]
    fn marker() -> u64 {
        std::hint::black_box(7)
    }

    /// A recording of this very process with one stack: a caller's return address
    /// inside `marker`, under the leaf `marker` itself.
    fn recording_of_self() -> PerfRecording {
        let pid = std::process::id();
        let mut recording = PerfRecording::new(&PerfTarget::Pid(pid), &PerfSettings::default());
        recording.learn(pid).unwrap();
        let address = marker as fn() -> u64 as usize as u64;
        recording.add_sample(pid, pid, &[address + 1, address + 2], None).unwrap();
        recording.add_sample(pid, pid, &[u64::MAX - 511, 0x10], Some(0x20)).unwrap();
        recording
    }

    fn function_names(profile: &Profile, location: u64) -> Vec<(&str, &str)> {
        let location = &profile.location[location as usize - 1];
        let text = |index: i64| profile.string_table[index as usize].as_str();
        location
            .line
            .iter()
            .map(|line| {
                let function = &profile.function[line.function_id as usize - 1];
                (text(function.name), text(function.filename))
            })
            .collect()
    }

    /// Addresses in this (PIE) test binary are named from its DWARF, demangled, with the
    /// file; an address outside every mapping stays an address and counts as cut short;
    /// the binary is read once for two captures.
    #[test]
    fn symbolizes_this_binary_and_caches_it() {
        let mut symbolizer = Symbolizer::new();
        let mut bytes = Vec::new();
        let summary = symbolizer.write_profile(recording_of_self(), &mut bytes).unwrap();
        assert_eq!(
            (summary.samples, summary.cut_short, summary.unsymbolized_locations),
            (2, 1, 1),
            "{summary:?}"
        );
        assert!(summary.unreadable_binaries.is_empty(), "{summary:?}");
        let profile = decode_profile(bytes.as_slice(), 1 << 30).unwrap();
        let marked = profile.sample.iter().find(|sample| sample.location_id.len() == 2).unwrap();
        for location in &marked.location_id {
            let names = function_names(&profile, *location);
            assert_eq!(
                names.last().map(|(name, _)| *name),
                Some("alertprof::perf::profile::tests::marker"),
                "{names:?}"
            );
            assert!(names.last().unwrap().1.ends_with("src/perf/profile.rs"), "{names:?}");
        }
        let unmapped = profile.sample.iter().find(|sample| sample.location_id.len() == 1).unwrap();
        let location = &profile.location[unmapped.location_id[0] as usize - 1];
        assert_eq!((location.address, location.mapping_id, location.line.len()), (0x10, 0, 0));
        assert_eq!((profile.period, profile.sample_type.len()), (1_000_000_000 / 99, 2));
        assert_eq!(symbolizer.len(), 1);
        symbolizer.write_profile(recording_of_self(), &mut Vec::new()).unwrap();
        assert_eq!(symbolizer.len(), 1, "the second capture reads no binary again");
    }

    /// A symbolizer can move to a blocking thread and back.
    #[test]
    fn symbolizer_is_send() {
        fn send<T: Send>() {}
        send::<Symbolizer>();
        send::<PerfRecording>();
    }
}
