//! Merges profiles of one kind into one, as `go tool pprof -proto a b c` does: samples of
//! the same stack and labels add up; functions, locations and mappings that are the same
//! are kept once; the header covers them all (the earliest start, the summed duration, the
//! largest period). Profiles are added one at a time, so only the merged one is held.

use std::collections::HashMap;
use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use prost::Message;

use super::proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};

/// Why a profile cannot join the others.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("its sample types {found} differ from {expected}")]
    SampleTypes { expected: String, found: String },
    #[error("its period type {found} differs from {expected}")]
    PeriodType { expected: String, found: String },
    #[error("it refers to {0}, which it does not have")]
    Dangling(String),
}

/// Mappings are the same if they map the same size from the same offset of the same
/// binary (by build id, else by file name), wherever they were loaded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MappingKey {
    size: u64,
    offset: u64,
    build_id_or_file: String,
    by_build_id: bool,
}

/// Locations are the same at the same offset into the same mapping, with the same lines.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LocationKey {
    mapping: u64,
    address: u64,
    lines: Vec<(u64, i64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FunctionKey {
    start_line: i64,
    name: i64,
    system_name: i64,
    filename: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SampleKey {
    locations: Vec<u64>,
    /// (key, string value, number, unit) in the merged string table, sorted.
    labels: Vec<(i64, i64, i64, i64)>,
}

/// The merged profile so far.
#[derive(Default)]
pub struct Merger {
    out: Profile,
    strings: HashMap<String, i64>,
    mappings: HashMap<MappingKey, u64>,
    locations: HashMap<LocationKey, u64>,
    functions: HashMap<FunctionKey, u64>,
    samples: HashMap<SampleKey, usize>,
    /// The sample and period types every profile must have, as text.
    types: Option<(String, String)>,
    added: usize,
}

/// A profile's mappings, functions and locations by id, every one its samples refer to
/// there.
struct Entities<'a> {
    mappings: HashMap<u64, &'a Mapping>,
    functions: HashMap<u64, &'a Function>,
    locations: HashMap<u64, &'a Location>,
}

impl<'a> Entities<'a> {
    /// The entities of `src`, or the first one a sample refers to that it does not have.
    fn of(src: &'a Profile) -> Result<Entities<'a>, MergeError> {
        let mappings: HashMap<u64, &Mapping> = src.mapping.iter().map(|m| (m.id, m)).collect();
        let functions: HashMap<u64, &Function> = src.function.iter().map(|f| (f.id, f)).collect();
        let locations: HashMap<u64, &Location> = src.location.iter().map(|l| (l.id, l)).collect();
        for sample in &src.sample {
            for id in &sample.location_id {
                let location =
                    locations.get(id).ok_or_else(|| MergeError::Dangling(format!("location {id}")))?;
                if location.mapping_id != 0 && !mappings.contains_key(&location.mapping_id) {
                    return Err(MergeError::Dangling(format!("mapping {}", location.mapping_id)));
                }
                if let Some(line) = location.line.iter().find(|l| !functions.contains_key(&l.function_id)) {
                    return Err(MergeError::Dangling(format!("function {}", line.function_id)));
                }
            }
        }
        Ok(Entities { mappings, functions, locations })
    }
}

/// The ids that one added profile's entities have in the merged one, and how far each of
/// its mappings moved.
#[derive(Default)]
struct Ids {
    mappings: HashMap<u64, (u64, i64)>,
    functions: HashMap<u64, u64>,
    locations: HashMap<u64, u64>,
}

impl Merger {
    pub fn new() -> Merger {
        let mut merger = Merger::default();
        merger.intern("");
        merger
    }

    /// How many profiles were merged.
    #[cfg(test)]
    pub fn added(&self) -> usize {
        self.added
    }

    /// Adds a profile, or says why it does not fit the ones added before (and adds
    /// nothing of it).
    pub fn add(&mut self, src: &Profile) -> Result<(), MergeError> {
        let text = |index: i64| src.string_table.get(index as usize).map(String::as_str).unwrap_or("");
        let types = self.check_types(src, &text)?;
        // Everything a sample refers to must be there before anything is merged, so a
        // refused profile leaves the merged one as it was.
        let entities = Entities::of(src)?;
        self.add_header(src, types, &text);
        // Ids of this profile's entities in the merged one, and how far its mappings moved.
        let mut ids = Ids::default();
        for sample in src.sample.iter().filter(|s| s.value.iter().any(|&v| v != 0)) {
            let stack: Vec<u64> = sample
                .location_id
                .iter()
                .map(|id| self.merged_location(*id, &entities, &mut ids, &text))
                .collect();
            let mut labels: Vec<(i64, i64, i64, i64)> = sample
                .label
                .iter()
                .map(|l| {
                    (self.intern(text(l.key)), self.intern(text(l.str)), l.num, self.intern(text(l.num_unit)))
                })
                .collect();
            labels.sort_unstable();
            self.add_sample(SampleKey { locations: stack, labels }, &sample.value);
        }
        self.added += 1;
        Ok(())
    }

    /// The profile's sample and period types, as text, if they are those of the profiles
    /// added before.
    fn check_types<'a>(
        &self,
        src: &Profile,
        text: &impl Fn(i64) -> &'a str,
    ) -> Result<(String, String), MergeError> {
        let show = |types: &[ValueType]| {
            let names: Vec<String> =
                types.iter().map(|t| format!("{}/{}", text(t.r#type), text(t.unit))).collect();
            format!("[{}]", names.join(", "))
        };
        let sample_types = show(&src.sample_type);
        let period_type = show(src.period_type.as_slice());
        match &self.types {
            Some((expected, _)) if *expected != sample_types => {
                Err(MergeError::SampleTypes { expected: expected.clone(), found: sample_types })
            }
            Some((_, expected)) if *expected != period_type => {
                Err(MergeError::PeriodType { expected: expected.clone(), found: period_type })
            }
            _ => Ok((sample_types, period_type)),
        }
    }

    /// Merges the profile's header: the types from the first profile, the earliest start,
    /// the summed duration, the largest period, every comment.
    fn add_header<'a>(&mut self, src: &Profile, types: (String, String), text: &impl Fn(i64) -> &'a str) {
        if self.types.is_none() {
            self.types = Some(types);
            self.out.sample_type = src.sample_type.iter().map(|t| self.value_type(t, text)).collect();
            self.out.period_type = src.period_type.map(|t| self.value_type(&t, text));
            self.out.drop_frames = self.intern(text(src.drop_frames));
            self.out.keep_frames = self.intern(text(src.keep_frames));
            // The first mapping is the main binary's: it stays first.
            if let Some(first) = src.mapping.first() {
                self.mapping(first, text);
            }
        }
        if src.time_nanos != 0 && (self.out.time_nanos == 0 || src.time_nanos < self.out.time_nanos) {
            self.out.time_nanos = src.time_nanos;
        }
        self.out.duration_nanos += src.duration_nanos;
        self.out.period = self.out.period.max(src.period);
        for &comment in &src.comment {
            let index = self.intern(text(comment));
            self.out.comment.push(index);
        }
        if self.out.default_sample_type == 0 {
            self.out.default_sample_type = self.intern(text(src.default_sample_type));
        }
    }

    /// The merged id of the profile's location `id`, merging it (and its mapping and
    /// functions) the first time.
    fn merged_location<'a>(
        &mut self,
        id: u64,
        entities: &Entities<'_>,
        ids: &mut Ids,
        text: &impl Fn(i64) -> &'a str,
    ) -> u64 {
        if let Some(&merged) = ids.locations.get(&id) {
            return merged;
        }
        let location = entities.locations[&id];
        let (mapping, shift) = match location.mapping_id {
            0 => (0, 0),
            id => *ids.mappings.entry(id).or_insert_with(|| self.mapping(entities.mappings[&id], text)),
        };
        let lines: Vec<Line> = location
            .line
            .iter()
            .map(|line| {
                let function = *ids
                    .functions
                    .entry(line.function_id)
                    .or_insert_with(|| self.function(entities.functions[&line.function_id], text));
                Line { function_id: function, ..*line }
            })
            .collect();
        let merged = self.location(location, mapping, shift, lines);
        ids.locations.insert(id, merged);
        merged
    }

    /// Adds `values` to the merged sample of `key`, made if there is none.
    fn add_sample(&mut self, key: SampleKey, values: &[i64]) {
        match self.samples.get(&key) {
            Some(&index) => {
                for (sum, value) in self.out.sample[index].value.iter_mut().zip(values) {
                    *sum += value;
                }
            }
            None => {
                self.samples.insert(key.clone(), self.out.sample.len());
                self.out.sample.push(Sample {
                    location_id: key.locations,
                    value: values.to_vec(),
                    label: key
                        .labels
                        .iter()
                        .map(|&(key, str, num, num_unit)| Label { key, str, num, num_unit })
                        .collect(),
                });
            }
        }
    }

    /// The merged profile; `None` if no profile was added.
    pub fn finish(mut self) -> Option<Profile> {
        if self.added == 0 {
            return None;
        }
        // Values that added up to nothing are no sample.
        self.out.sample.retain(|s| s.value.iter().any(|&v| v != 0));
        Some(self.out)
    }

    fn intern(&mut self, text: &str) -> i64 {
        if let Some(&index) = self.strings.get(text) {
            return index;
        }
        let index = self.out.string_table.len() as i64;
        self.out.string_table.push(text.to_string());
        self.strings.insert(text.to_string(), index);
        index
    }

    fn value_type<'a>(&mut self, t: &ValueType, text: &impl Fn(i64) -> &'a str) -> ValueType {
        ValueType { r#type: self.intern(text(t.r#type)), unit: self.intern(text(t.unit)) }
    }

    /// The merged mapping for `src` and how far its addresses move into it.
    fn mapping<'a>(&mut self, src: &Mapping, text: &impl Fn(i64) -> &'a str) -> (u64, i64) {
        // Sizes are rounded up to 4 KiB, as small differences do not make another binary.
        let size = (src.memory_limit.saturating_sub(src.memory_start) + 0xfff) & !0xfff;
        let (build_id, file) = (text(src.build_id), text(src.filename));
        let keys: Vec<MappingKey> = [(build_id, true), (file, false)]
            .into_iter()
            .filter(|(name, _)| !name.is_empty())
            .map(|(name, by_build_id)| MappingKey {
                size,
                offset: src.file_offset,
                build_id_or_file: name.to_string(),
                by_build_id,
            })
            .collect();
        for key in &keys {
            if let Some(&id) = self.mappings.get(key) {
                let start = self.out.mapping[id as usize - 1].memory_start;
                return (id, start as i64 - src.memory_start as i64);
            }
        }
        let id = self.out.mapping.len() as u64 + 1;
        let mapping = Mapping { id, filename: self.intern(file), build_id: self.intern(build_id), ..*src };
        self.out.mapping.push(mapping);
        for key in keys {
            self.mappings.insert(key, id);
        }
        (id, 0)
    }

    fn function<'a>(&mut self, src: &Function, text: &impl Fn(i64) -> &'a str) -> u64 {
        let function = Function {
            id: 0,
            name: self.intern(text(src.name)),
            system_name: self.intern(text(src.system_name)),
            filename: self.intern(text(src.filename)),
            start_line: src.start_line,
        };
        let key = FunctionKey {
            start_line: function.start_line,
            name: function.name,
            system_name: function.system_name,
            filename: function.filename,
        };
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let id = self.out.function.len() as u64 + 1;
        self.out.function.push(Function { id, ..function });
        self.functions.insert(key, id);
        id
    }

    fn location(&mut self, src: &Location, mapping: u64, shift: i64, lines: Vec<Line>) -> u64 {
        let address = (src.address as i64).wrapping_add(shift) as u64;
        let start = match mapping {
            0 => 0,
            id => self.out.mapping[id as usize - 1].memory_start,
        };
        let key = LocationKey {
            mapping,
            address: address.wrapping_sub(start),
            lines: lines.iter().map(|line| (line.function_id, line.line)).collect(),
        };
        if let Some(&id) = self.locations.get(&key) {
            return id;
        }
        let id = self.out.location.len() as u64 + 1;
        self.out.location.push(Location {
            id,
            mapping_id: mapping,
            address,
            line: lines,
            is_folded: src.is_folded,
        });
        self.locations.insert(key, id);
        id
    }
}

/// Writes `profile` gzip'd, as Go serves profiles.
pub fn write_gzipped(profile: &Profile, out: impl Write) -> std::io::Result<()> {
    let mut encoder = GzEncoder::new(out, Compression::default());
    encoder.write_all(&profile.encode_to_vec())?;
    encoder.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::decode_profile;
    use crate::testing::profiles::profile;

    fn decoded(bytes: &[u8]) -> Profile {
        decode_profile(bytes, 1 << 30).unwrap()
    }

    /// Totals of each function name as the leaf, to compare profiles whatever their ids.
    fn flat(profile: &Profile) -> std::collections::BTreeMap<String, [i64; 2]> {
        let mut totals = std::collections::BTreeMap::new();
        for sample in &profile.sample {
            let leaf = profile.location.iter().find(|l| l.id == sample.location_id[0]).unwrap();
            let function = profile.function.iter().find(|f| f.id == leaf.line[0].function_id).unwrap();
            let entry: &mut [i64; 2] =
                totals.entry(profile.string_table[function.name as usize].clone()).or_default();
            entry[0] += sample.value[0];
            entry[1] += sample.value[1];
        }
        totals
    }

    /// The same stack in two profiles (with different ids and string tables) adds up to
    /// one sample; functions are kept once; the header spans both.
    #[test]
    fn same_stacks_add_up() {
        let mut a = decoded(&profile(&["main.burn", "main.main"], &[(&[1, 2], [3, 30]), (&[2], [1, 10])]));
        a.time_nanos = 2_000;
        a.duration_nanos = 10;
        a.period = 100;
        let mut b =
            decoded(&profile(&["other.f", "main.main", "main.burn"], &[(&[3, 2], [5, 50]), (&[1], [2, 20])]));
        b.time_nanos = 1_000;
        b.duration_nanos = 20;
        b.period = 50;
        let mut merger = Merger::new();
        merger.add(&a).unwrap();
        merger.add(&b).unwrap();
        assert_eq!(merger.added(), 2);
        let merged = merger.finish().unwrap();
        assert_eq!(merged.sample.len(), 3, "burn←main twice is one sample: {:?}", merged.sample);
        assert_eq!(merged.function.len(), 3);
        assert_eq!((merged.time_nanos, merged.duration_nanos, merged.period), (1_000, 30, 100));
        let totals = flat(&merged);
        assert_eq!(totals["main.burn"], [8, 80]);
        assert_eq!(totals["main.main"], [1, 10]);
        assert_eq!(totals["other.f"], [2, 20]);
        // It is a valid profile again, through gzip and decode.
        let mut bytes = Vec::new();
        write_gzipped(&merged, &mut bytes).unwrap();
        assert_eq!(flat(&decoded(&bytes)), totals);
    }

    /// A profile of other sample types is refused, and leaves the merged one untouched; so
    /// is one that refers to a location it does not have.
    #[test]
    fn incompatible_profiles_are_refused_whole() {
        let a = decoded(&profile(&["main.f"], &[(&[1], [1, 10])]));
        let mut merger = Merger::new();
        merger.add(&a).unwrap();
        let mut heap = a.clone();
        heap.string_table[3] = "alloc_space".into();
        let error = merger.add(&heap).unwrap_err();
        assert!(error.to_string().contains("alloc_space"), "{error}");
        let mut dangling = a.clone();
        dangling.sample[0].location_id = vec![99];
        assert_eq!(merger.add(&dangling).unwrap_err(), MergeError::Dangling("location 99".into()));
        assert_eq!(merger.added(), 1);
        assert_eq!(flat(&merger.finish().unwrap())["main.f"], [1, 10]);
    }

    /// Labels tell samples apart: the same stack with another label is another sample.
    #[test]
    fn labels_tell_samples_apart() {
        let mut a = decoded(&profile(&["main.f"], &[(&[1], [1, 10]), (&[1], [2, 20])]));
        a.string_table.extend(["handler".to_string(), "/a".to_string()]);
        let (key, value) = (a.string_table.len() as i64 - 2, a.string_table.len() as i64 - 1);
        a.sample[1].label = vec![Label { key, str: value, num: 0, num_unit: 0 }];
        let mut merger = Merger::new();
        merger.add(&a).unwrap();
        merger.add(&a).unwrap();
        let merged = merger.finish().unwrap();
        let mut values: Vec<i64> = merged.sample.iter().map(|s| s.value[0]).collect();
        values.sort();
        assert_eq!(values, [2, 4]);
    }

    /// Nothing added is no profile.
    #[test]
    fn nothing_to_merge() {
        assert!(Merger::new().finish().is_none());
    }
}
