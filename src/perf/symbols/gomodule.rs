//! Finds a Go binary's `.gopclntab` and, through the runtime's `moduledata` (found by the
//! pointer it holds to the table), where its funcdata such as inline trees live: in
//! stripped binaries, which keep their sections, and in PIE ones, through relocations.

use std::collections::HashMap;

use object::{Object, ObjectSection, ReadRef, SectionKind};

use super::gopclntab::{FuncDataMemory, GoTable, read_uint};
use crate::perf::error::{BinaryError, GoTableError};

/// Offsets into `moduledata` (amd64/arm64): `text`, `funcnametab`'s data pointer, and
/// `gofunc`, which moves down by the coverage counters Go 1.20 added before it.
const MODULEDATA_TEXT: u64 = 176;
const MODULEDATA_FUNCNAMETAB: u64 = 8;
const MODULEDATA_GOFUNC_GO118: u64 = 304;
const MODULEDATA_GOFUNC_GO120: u64 = 320;

/// The Go table of `file`, None if it is not a Go binary.
pub(super) fn load<'data, R: ReadRef<'data>>(
    file: &object::File<'data, R>,
) -> Result<Option<GoTable>, BinaryError> {
    let Some(section) =
        file.section_by_name(".gopclntab").or_else(|| file.section_by_name(".data.rel.ro.gopclntab"))
    else {
        return Ok(None);
    };
    let bad = |source| BinaryError::GoTable { source };
    let data = section.data().map_err(|_| bad(GoTableError::Truncated))?.to_vec();
    let text_start = file.section_by_name(".text").ok_or(bad(GoTableError::NoText))?.address();
    let magic = data.get(..4).map(|magic| u32::from_le_bytes([magic[0], magic[1], magic[2], magic[3]]));
    let funcdata = match magic {
        Some(0xfffffffa) => rodata(file),
        Some(0xfffffff0) => gofunc(file, section.address(), &data, text_start, MODULEDATA_GOFUNC_GO118),
        Some(0xfffffff1) => gofunc(file, section.address(), &data, text_start, MODULEDATA_GOFUNC_GO120),
        _ => None,
    };
    GoTable::parse(data, text_start, funcdata).map(Some).map_err(bad)
}

/// Go 1.16–1.17 funcdata are pointers into `.rodata`.
fn rodata<'data, R: ReadRef<'data>>(file: &object::File<'data, R>) -> Option<FuncDataMemory> {
    let section = file.section_by_name(".rodata")?;
    Some(FuncDataMemory { gofunc: 0, address: section.address(), bytes: section.data().ok()?.to_vec() })
}

/// Go 1.18+ funcdata are offsets from `moduledata.gofunc`: finds `moduledata` by its
/// first field, the address of the pclntab, checks two more fields, and copies the
/// section `gofunc` points into.
fn gofunc<'data, R: ReadRef<'data>>(
    file: &object::File<'data, R>,
    pclntab: u64,
    header: &[u8],
    text_start: u64,
    gofunc_offset: u64,
) -> Option<FuncDataMemory> {
    let words = Words::new(file);
    let ptr_size = usize::from(*header.get(7)?);
    let funcnames = pclntab + read_uint(header, 8 + 3 * ptr_size, ptr_size)?;
    let moduledata = words.holding(pclntab).into_iter().find(|&at| {
        words.read(at + MODULEDATA_TEXT) == Some(text_start)
            && words.read(at + MODULEDATA_FUNCNAMETAB) == Some(funcnames)
    })?;
    let gofunc = words.read(moduledata + gofunc_offset)?;
    let section = file.sections().find(|section| {
        section.kind() != SectionKind::UninitializedData
            && (section.address()..section.address() + section.size()).contains(&gofunc)
    })?;
    Some(FuncDataMemory { gofunc, address: section.address(), bytes: section.data().ok()?.to_vec() })
}

/// Pointer-sized words of the loaded image: writable sections' bytes, or in a PIE binary
/// the relative relocations that will fill them at load.
struct Words<'data> {
    sections: Vec<(u64, &'data [u8])>,
    relocated: HashMap<u64, u64>,
}

impl<'data> Words<'data> {
    fn new<R: ReadRef<'data>>(file: &object::File<'data, R>) -> Words<'data> {
        let sections = file
            .sections()
            .filter(|section| section.kind() == SectionKind::Data)
            .filter_map(|section| Some((section.address(), section.data().ok()?)))
            .collect();
        let relative = [object::elf::R_X86_64_RELATIVE, object::elf::R_AARCH64_RELATIVE];
        let relocated = file
            .dynamic_relocations()
            .into_iter()
            .flatten()
            .filter(|(_, relocation)| {
                matches!(relocation.flags(), object::RelocationFlags::Elf { r_type } if relative.contains(&r_type))
            })
            .map(|(offset, relocation)| (offset, relocation.addend() as u64))
            .collect();
        Words { sections, relocated }
    }

    /// The addresses of the aligned words that hold `value`.
    fn holding(&self, value: u64) -> Vec<u64> {
        let mut found: Vec<u64> =
            self.relocated.iter().filter(|(_, addend)| **addend == value).map(|(at, _)| *at).collect();
        for (address, bytes) in &self.sections {
            let words = bytes.chunks_exact(8).enumerate();
            found.extend(
                words.filter(|(_, word)| *word == value.to_le_bytes()).map(|(i, _)| address + 8 * i as u64),
            );
        }
        found
    }

    fn read(&self, address: u64) -> Option<u64> {
        if let Some(value) = self.relocated.get(&address) {
            return Some(*value);
        }
        let (start, bytes) = self
            .sections
            .iter()
            .find(|(start, bytes)| address >= *start && address + 8 <= start + bytes.len() as u64)?;
        read_uint(bytes, (address - start) as usize, 8)
    }
}
