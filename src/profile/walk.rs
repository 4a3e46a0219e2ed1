//! Streams through a gzip'd profile.proto without holding it: each top-level field of the
//! Profile message is read on its own, bounded in size, and handed to a visitor.

use std::io::{BufRead, BufReader, ErrorKind, Read};

use flate2::bufread::GzDecoder;

use super::InvalidBody;

/// Largest single top-level field (one sample, one location) taken in; a real one is
/// kilobytes.
const MAX_FIELD: u64 = 64 << 20;

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
