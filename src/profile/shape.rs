//! The checks every kept profile passes, gathered field by field: each sub-message is
//! decoded and dropped, so validating a 100 MB heap profile takes kilobytes, not the
//! profile's size.

use std::collections::BTreeSet;
use std::io::Read;

use prost::Message;

use super::InvalidBody;
use super::proto::{Function, Location, Mapping, Profile, Sample, ValueType};
use super::walk::{TopField, walk_fields};

/// What validation needs to know of a profile, gathered field by field.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Shape {
    pub strings: u64,
    first_string_empty: bool,
    pub sample_types: u64,
    pub samples: u64,
    /// Distinct counts of values per sample; each must equal `sample_types`.
    value_counts: BTreeSet<usize>,
    /// The highest string index used by sample types and functions, and whether any was
    /// negative.
    max_string_ref: i64,
    negative_ref: bool,
}

impl Shape {
    /// The shape of a decoded profile.
    pub fn of(profile: &Profile) -> Shape {
        let mut shape = Shape::default();
        for string in &profile.string_table {
            shape.add_string(string);
        }
        for value_type in &profile.sample_type {
            shape.add_value_type(value_type);
        }
        for sample in &profile.sample {
            shape.add_sample(sample);
        }
        for function in &profile.function {
            shape.add_function(function);
        }
        shape
    }

    fn add_string(&mut self, string: &str) {
        if self.strings == 0 {
            self.first_string_empty = string.is_empty();
        }
        self.strings += 1;
    }

    fn refer(&mut self, index: i64) {
        self.negative_ref |= index < 0;
        self.max_string_ref = self.max_string_ref.max(index);
    }

    fn add_value_type(&mut self, value_type: &ValueType) {
        self.sample_types += 1;
        self.refer(value_type.r#type);
        self.refer(value_type.unit);
    }

    fn add_sample(&mut self, sample: &Sample) {
        self.samples += 1;
        self.value_counts.insert(sample.value.len());
    }

    fn add_function(&mut self, function: &Function) {
        self.refer(function.name);
        self.refer(function.system_name);
        self.refer(function.filename);
    }

    /// The checks every kept profile passes.
    pub fn check(&self) -> Result<(), InvalidBody> {
        if self.strings == 0 || !self.first_string_empty {
            return Err(InvalidBody::NotProfile("string_table[0] is not empty".into()));
        }
        if self.sample_types == 0 {
            return Err(InvalidBody::NoSampleTypes);
        }
        if self.negative_ref || self.max_string_ref >= self.strings as i64 {
            return Err(InvalidBody::NotProfile("string index out of range".into()));
        }
        if self.value_counts.iter().any(|&count| count as u64 != self.sample_types) {
            return Err(InvalidBody::NotProfile("sample values do not match sample types".into()));
        }
        Ok(())
    }
}

/// Gunzips `body` and walks its profile.proto, refusing anything that is not a plausible
/// pprof profile; at most `max_unzipped` bytes are gunzipped.
pub fn scan_profile(body: impl Read, max_unzipped: u64) -> Result<Shape, InvalidBody> {
    let mut shape = Shape::default();
    let bad = |e: prost::DecodeError| InvalidBody::NotProfile(e.to_string());
    walk_fields(body, max_unzipped, |field| {
        let TopField::Bytes(number, bytes) = field else { return Ok(()) };
        match number {
            1 => shape.add_value_type(&ValueType::decode(bytes).map_err(bad)?),
            2 => shape.add_sample(&Sample::decode(bytes).map_err(bad)?),
            3 => drop(Mapping::decode(bytes).map_err(bad)?),
            4 => drop(Location::decode(bytes).map_err(bad)?),
            5 => shape.add_function(&Function::decode(bytes).map_err(bad)?),
            6 => shape.add_string(
                std::str::from_utf8(bytes)
                    .map_err(|_| InvalidBody::NotProfile("a string is not UTF-8".into()))?,
            ),
            11 => drop(ValueType::decode(bytes).map_err(bad)?),
            _ => {}
        }
        Ok(())
    })?;
    shape.check()?;
    Ok(shape)
}
