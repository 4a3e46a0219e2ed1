//! Streams through a gzip'd profile.proto without holding it: each top-level field is read
//! on its own and each sub-message decoded and dropped, so validating a 100 MB heap
//! profile takes kilobytes, not the profile's size.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, ErrorKind, Read};

use flate2::bufread::GzDecoder;
use prost::Message;

use super::InvalidBody;
use super::profile::{Function, Location, Mapping, Profile, Sample, ValueType};

/// Largest single top-level field (one sample, one location) taken in; a real one is
/// kilobytes.
const MAX_FIELD: u64 = 64 << 20;

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

/// One top-level field of a Profile message.
pub enum TopField<'a> {
    Varint(u64, u64),
    Bytes(u64, &'a [u8]),
}

/// Gunzips `body` and hands each top-level field of its Profile message to `visit`, one at
/// a time, holding no more than the largest field.
pub fn walk_fields(
    body: impl Read,
    max_unzipped: u64,
    mut visit: impl FnMut(TopField<'_>) -> Result<(), InvalidBody>,
) -> Result<(), InvalidBody> {
    let mut body = BufReader::new(body);
    if body.fill_buf().map_err(|e| InvalidBody::Io(e.to_string()))?.is_empty() {
        return Err(InvalidBody::Empty);
    }
    let mut reader = Counted { inner: BufReader::new(GzDecoder::new(body)), read: 0, max: max_unzipped };
    let mut field = Vec::new();
    while let Some(key) = reader.varint_or_end()? {
        let (number, wire) = (key >> 3, key & 7);
        if number == 0 {
            return Err(InvalidBody::NotProfile("field number 0".into()));
        }
        match wire {
            0 => {
                let value = reader.varint()?;
                visit(TopField::Varint(number, value))?;
            }
            1 => reader.skip(8)?,
            5 => reader.skip(4)?,
            2 => {
                let len = reader.varint()?;
                if len > MAX_FIELD {
                    return Err(InvalidBody::NotProfile(format!("a field of {len} bytes")));
                }
                reader.read_into(&mut field, len as usize)?;
                visit(TopField::Bytes(number, &field))?;
            }
            _ => return Err(InvalidBody::NotProfile(format!("wire type {wire} of field {number}"))),
        }
    }
    Ok(())
}

/// The gunzipped stream, counted against its bound.
struct Counted<R> {
    inner: R,
    read: u64,
    max: u64,
}

impl<R: BufRead> Counted<R> {
    fn byte(&mut self) -> Result<Option<u8>, InvalidBody> {
        let buffer = self.inner.fill_buf().map_err(gzip_error)?;
        let Some(&byte) = buffer.first() else { return Ok(None) };
        self.inner.consume(1);
        self.count(1)?;
        Ok(Some(byte))
    }

    fn count(&mut self, n: u64) -> Result<(), InvalidBody> {
        self.read += n;
        if self.read > self.max {
            return Err(InvalidBody::TooLarge(self.max));
        }
        Ok(())
    }

    /// A varint, or `None` at the clean end of the stream (between fields).
    fn varint_or_end(&mut self) -> Result<Option<u64>, InvalidBody> {
        let Some(first) = self.byte()? else { return Ok(None) };
        self.varint_from(first).map(Some)
    }

    fn varint(&mut self) -> Result<u64, InvalidBody> {
        let first = self.byte()?.ok_or_else(truncated)?;
        self.varint_from(first)
    }

    fn varint_from(&mut self, first: u8) -> Result<u64, InvalidBody> {
        let mut value = u64::from(first & 0x7f);
        let mut byte = first;
        let mut shift = 7;
        while byte & 0x80 != 0 {
            if shift > 63 {
                return Err(InvalidBody::NotProfile("varint too long".into()));
            }
            byte = self.byte()?.ok_or_else(truncated)?;
            value |= u64::from(byte & 0x7f) << shift;
            shift += 7;
        }
        Ok(value)
    }

    fn skip(&mut self, n: u64) -> Result<(), InvalidBody> {
        self.count(n)?;
        let copied =
            std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink()).map_err(gzip_error)?;
        if copied < n {
            return Err(truncated());
        }
        Ok(())
    }

    fn read_into(&mut self, buffer: &mut Vec<u8>, len: usize) -> Result<(), InvalidBody> {
        self.count(len as u64)?;
        buffer.clear();
        let read = (&mut self.inner).take(len as u64).read_to_end(buffer).map_err(gzip_error)?;
        if read < len {
            return Err(truncated());
        }
        Ok(())
    }
}

fn truncated() -> InvalidBody {
    InvalidBody::NotProfile("truncated".into())
}

fn gzip_error(error: std::io::Error) -> InvalidBody {
    match error.kind() {
        ErrorKind::UnexpectedEof => InvalidBody::NotGzip("truncated gzip stream".into()),
        _ => InvalidBody::NotGzip(error.to_string()),
    }
}
