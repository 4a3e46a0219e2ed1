//! What any ELF binary tells of itself: its build id, where its segments load, its function
//! symbols (`.symtab`, `.dynsym`) and DWARF lines with inlined frames, names demangled.

use std::borrow::Cow;
use std::sync::Arc;

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, ReadRef, SymbolKind};

use super::frame::SymbolFrame;

/// DWARF sections shared by reference count, so a cached binary owns its tables.
type DwarfReader = gimli::EndianArcSlice<gimli::RunTimeEndian>;

/// One `PT_LOAD` segment: file bytes `[offset, offset + size)` load at `address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LoadSegment {
    pub offset: u64,
    pub size: u64,
    pub address: u64,
}

/// The loadable segments, to turn a file offset (from a mapping) into the address the
/// binary's tables use, whatever the load bias of a PIE or shared library.
pub(super) fn load_segments<'data, R: ReadRef<'data>>(file: &object::File<'data, R>) -> Vec<LoadSegment> {
    file.segments()
        .map(|segment| {
            let (offset, size) = segment.file_range();
            LoadSegment { offset, size, address: segment.address() }
        })
        .collect()
}

/// The GNU build id as hex, else Go's build id (`.note.go.buildid`), else None.
pub(super) fn build_id<'data, R: ReadRef<'data>>(file: &object::File<'data, R>) -> Option<String> {
    if let Ok(Some(id)) = file.build_id() {
        return Some(id.iter().map(|byte| format!("{byte:02x}")).collect());
    }
    let note = file.section_by_name(".note.go.buildid")?.data().ok()?;
    let int = |at: usize| Some(u32::from_le_bytes(note.get(at..at + 4)?.try_into().ok()?) as usize);
    let (name_size, desc_size) = (int(0)?, int(4)?);
    let desc_start = 12 + name_size.next_multiple_of(4);
    let id = note.get(desc_start..desc_start + desc_size)?;
    (note.get(12..15) == Some(b"Go\0")).then(|| String::from_utf8_lossy(id).into_owned())
}

/// A function symbol: `[address, address + size)`, its name as linked.
#[derive(Debug)]
struct ElfSymbol {
    address: u64,
    size: u64,
    name: Box<str>,
}

/// Function symbols sorted by address, and DWARF if the binary has it.
pub(super) struct ElfSymbols {
    symbols: Vec<ElfSymbol>,
    dwarf: Option<addr2line::Context<DwarfReader>>,
}

impl std::fmt::Debug for ElfSymbols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElfSymbols")
            .field("symbols", &self.symbols.len())
            .field("dwarf", &self.dwarf.is_some())
            .finish()
    }
}

impl ElfSymbols {
    /// Reads the symbols, and DWARF when `with_dwarf` (a Go binary's pclntab does better).
    /// Unreadable DWARF is left out: the symbols still name the functions.
    pub fn load<'data, R: ReadRef<'data>>(file: &object::File<'data, R>, with_dwarf: bool) -> ElfSymbols {
        let mut symbols: Vec<ElfSymbol> = file
            .symbols()
            .chain(file.dynamic_symbols())
            .filter(|symbol| {
                symbol.kind() == SymbolKind::Text && symbol.is_definition() && symbol.address() != 0
            })
            .filter_map(|symbol| {
                let name = symbol.name().ok().filter(|name| !name.is_empty())?;
                Some(ElfSymbol { address: symbol.address(), size: symbol.size(), name: name.into() })
            })
            .collect();
        symbols.sort_by(|a, b| a.address.cmp(&b.address).then(b.size.cmp(&a.size)));
        symbols.dedup_by_key(|symbol| symbol.address);
        let dwarf = if with_dwarf { load_dwarf(file) } else { None };
        ElfSymbols { symbols, dwarf }
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty() && self.dwarf.is_none()
    }

    pub fn has_dwarf(&self) -> bool {
        self.dwarf.is_some()
    }

    /// Frames at `address`, innermost first: DWARF's inlined frames and lines where it has
    /// them, else the symbol that holds the address.
    pub fn frames(&self, address: u64) -> Vec<SymbolFrame> {
        let mut frames = self.dwarf_frames(address);
        let symbol = self.symbol(address);
        match (frames.last_mut(), symbol) {
            (Some(outer), Some(symbol)) if outer.system_name.is_empty() => {
                outer.system_name = symbol.to_string();
                outer.name = demangle(symbol).into_owned();
            }
            (None, Some(symbol)) => frames.push(SymbolFrame {
                name: demangle(symbol).into_owned(),
                system_name: symbol.to_string(),
                ..SymbolFrame::default()
            }),
            _ => {}
        }
        frames.retain(|frame| !frame.system_name.is_empty());
        frames
    }

    fn symbol(&self, address: u64) -> Option<&str> {
        let index = self.symbols.partition_point(|symbol| symbol.address <= address).checked_sub(1)?;
        let symbol = &self.symbols[index];
        let inside = symbol.size == 0 || address < symbol.address + symbol.size;
        inside.then_some(&*symbol.name)
    }

    fn dwarf_frames(&self, address: u64) -> Vec<SymbolFrame> {
        let Some(context) = &self.dwarf else { return Vec::new() };
        let Ok(mut iter) = context.find_frames(address).skip_all_loads() else { return Vec::new() };
        let mut frames = Vec::new();
        while let Ok(Some(frame)) = iter.next() {
            let name = frame.function.as_ref().and_then(|function| function.raw_name().ok());
            let name = name.map(|name| name.into_owned()).unwrap_or_default();
            let (file, line) =
                frame.location.map_or(("", 0), |at| (at.file.unwrap_or(""), at.line.unwrap_or(0)));
            frames.push(SymbolFrame {
                name: demangle(&name).into_owned(),
                system_name: name,
                file: file.to_string(),
                line: i64::from(line),
                start_line: 0,
            });
        }
        frames
    }
}

/// The DWARF of `file`, if it has any that is readable (compressed sections are not).
fn load_dwarf<'data, R: ReadRef<'data>>(
    file: &object::File<'data, R>,
) -> Option<addr2line::Context<DwarfReader>> {
    file.section_by_name(".debug_info")?;
    let endian =
        if file.is_little_endian() { gimli::RunTimeEndian::Little } else { gimli::RunTimeEndian::Big };
    let load = |id: gimli::SectionId| -> Result<DwarfReader, gimli::Error> {
        let data = match file.section_by_name(id.name()) {
            Some(section) => section.uncompressed_data().map_err(|_| gimli::Error::Io)?,
            None => Cow::Borrowed(&[][..]),
        };
        Ok(gimli::EndianArcSlice::new(Arc::from(&*data), endian))
    };
    let dwarf = gimli::Dwarf::load(load).ok()?;
    addr2line::Context::from_dwarf(dwarf).ok()
}

/// A readable name: Rust's (legacy or v0, without the hash) and C++'s Itanium names
/// demangled, others as they are.
pub(super) fn demangle(name: &str) -> Cow<'_, str> {
    if let Ok(rust) = rustc_demangle::try_demangle(name) {
        return Cow::Owned(format!("{rust:#}"));
    }
    if name.starts_with("_Z")
        && let Ok(symbol) = cpp_demangle::Symbol::new(name)
        && let Ok(text) = symbol.demangle()
    {
        return Cow::Owned(text);
    }
    Cow::Borrowed(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rust names lose their hash, C++ names read as source, C names stay.
    #[test]
    fn names_are_demangled() {
        assert_eq!(demangle("_ZN4core3fmt5write17h5c1fbd3e3b0f6f3aE"), "core::fmt::write");
        assert_eq!(demangle("_RNvCs1234_7mycrate4main"), "mycrate::main");
        assert_eq!(demangle("_ZN7mytools7Spinner4spinEi"), "mytools::Spinner::spin(int)");
        assert_eq!(
            demangle("_ZNSt6vectorIiSaIiEE9push_backERKi"),
            "std::vector<int, std::allocator<int> >::push_back(int const&)"
        );
        assert_eq!(demangle("burn_c"), "burn_c");
        assert_eq!(demangle("main.hotLoop"), "main.hotLoop");
    }
}
