//! Go's own symbol table, `.gopclntab`, for Go 1.16 and later: the function, file and line
//! of any PC, with the calls inlined there, as the Go runtime's traceback reads them
//! (`runtime/symtab.go`). It is in every Go binary, stripped ones too.

use super::frame::SymbolFrame;
use crate::perf::error::GoTableError;

/// `_PCDATA_InlTreeIndex`: the table giving, per PC, the innermost inlined call there.
const PCDATA_INL_TREE_INDEX: u32 = 2;
/// `_FUNCDATA_InlTree`: the inlined calls of a function.
const FUNCDATA_INL_TREE: u8 = 3;
/// Deeper inlining than this means a corrupt table, not a program.
const MAX_INLINE_DEPTH: usize = 256;

/// The layouts of the table, by the magic at its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum GoVersion {
    /// 0xfffffffa: function entries are absolute, funcdata are pointers.
    Go116,
    /// 0xfffffff0: entries are offsets from the text start, funcdata offsets from gofunc.
    Go118,
    /// 0xfffffff1: `_func` gains `startLine`; inlined calls lose file and line.
    Go120,
}

/// Where a function's funcdata (its inline tree) lives: a copy of the section that holds
/// them, and the base that 1.18+ funcdata offsets add to (`moduledata.gofunc`).
#[derive(Debug)]
pub(super) struct FuncDataMemory {
    pub gofunc: u64,
    pub address: u64,
    pub bytes: Vec<u8>,
}

/// A parsed `.gopclntab`; offsets index `data`.
#[derive(Debug)]
pub(super) struct GoTable {
    pub version: GoVersion,
    data: Vec<u8>,
    ptr_size: usize,
    quantum: u64,
    text_start: u64,
    nfunc: usize,
    funcnames: usize,
    cutab: usize,
    filetab: usize,
    pctab: usize,
    /// The function table and the `_func` records that `funcoff` points into.
    pcln: usize,
    /// None: inlined calls are left folded into their caller.
    funcdata: Option<FuncDataMemory>,
}

/// One `_func` record.
#[derive(Debug, Clone, Copy)]
struct Func {
    offset: usize,
    entry: u64,
}

impl GoTable {
    /// Parses a table. `text_start` is the `.text` address (the header's own copy is not
    /// relocated in a PIE binary).
    pub fn parse(
        data: Vec<u8>,
        text_start: u64,
        funcdata: Option<FuncDataMemory>,
    ) -> Result<GoTable, GoTableError> {
        let magic = data.get(..4).ok_or(GoTableError::Truncated)?;
        let version = match u32::from_le_bytes(magic.try_into().unwrap_or_default()) {
            0xfffffffa => GoVersion::Go116,
            0xfffffff0 => GoVersion::Go118,
            0xfffffff1 => GoVersion::Go120,
            0xfffffffb => return Err(GoTableError::BeforeGo116),
            other => return Err(GoTableError::UnknownMagic(other)),
        };
        let (ptr_size, quantum) =
            (*data.get(7).ok_or(GoTableError::Truncated)? as usize, *data.get(6).unwrap_or(&0) as u64);
        if data[4] != 0 || data[5] != 0 || !(ptr_size == 4 || ptr_size == 8) || quantum == 0 {
            return Err(GoTableError::BadHeader);
        }
        let word =
            |index: usize| read_uint(&data, 8 + index * ptr_size, ptr_size).ok_or(GoTableError::Truncated);
        let first = if version == GoVersion::Go116 { 2 } else { 3 };
        let offset = |index: usize| word(first + index).map(|value| value as usize);
        let mut table = GoTable {
            version,
            ptr_size,
            quantum,
            text_start,
            nfunc: word(0)? as usize,
            funcnames: offset(0)?,
            cutab: offset(1)?,
            filetab: offset(2)?,
            pctab: offset(3)?,
            pcln: offset(4)?,
            funcdata,
            data: Vec::new(),
        };
        let ftab_end = table.nfunc.checked_add(1).and_then(|n| n.checked_mul(2 * table.ftab_field()));
        if ftab_end.and_then(|size| size.checked_add(table.pcln)).is_none_or(|end| end > data.len()) {
            return Err(GoTableError::FunctionTableOutOfBounds);
        }
        table.data = data;
        Ok(table)
    }

    /// Frames at `pc`, innermost inlined call first and the function that holds the code
    /// last; None if no Go function holds `pc`.
    pub fn frames(&self, pc: u64) -> Option<Vec<SymbolFrame>> {
        let func = self.find(pc)?;
        let mut frames = Vec::new();
        let mut trace_pc = pc;
        if let Some(tree) = self.funcdata(func, FUNCDATA_INL_TREE) {
            let index_table = self.pcdata_table(func, PCDATA_INL_TREE_INDEX);
            while frames.len() < MAX_INLINE_DEPTH {
                let Some(index) = self.pcvalue(func, index_table, trace_pc).filter(|index| *index >= 0)
                else {
                    break;
                };
                let Some((name_offset, parent_pc, start_line)) = self.inlined_call(tree, index as u64) else {
                    break;
                };
                frames.push(self.frame(func, trace_pc, self.name(name_offset), start_line));
                trace_pc = func.entry.wrapping_add(parent_pc as u64);
            }
        }
        let start_line = if self.version >= GoVersion::Go120 { self.field(func, 9) as i32 } else { 0 };
        frames.push(self.frame(func, trace_pc, self.name(self.field(func, 1)), start_line));
        Some(frames)
    }

    /// Whether the Go function at `pc` has not moved its stack pointer there (a frameless
    /// leaf, or its prologue): its return address is then at the top of the stack and
    /// the frame pointer is still its caller's. None if no Go function holds `pc`.
    pub fn frameless_at(&self, pc: u64) -> Option<bool> {
        let func = self.find(pc)?;
        self.pcvalue(func, self.field(func, 4), pc).map(|sp_delta| sp_delta == 0)
    }

    fn frame(&self, func: Func, pc: u64, name: String, start_line: i32) -> SymbolFrame {
        let line = self.pcvalue(func, self.field(func, 6), pc).unwrap_or(0).max(0);
        let file = self.pcvalue(func, self.field(func, 5), pc).and_then(|file| self.file(func, file));
        SymbolFrame {
            system_name: name.clone(),
            name,
            file: file.unwrap_or_default(),
            line: i64::from(line),
            start_line: i64::from(start_line.max(0)),
        }
    }

    fn ftab_field(&self) -> usize {
        if self.version == GoVersion::Go116 { self.ptr_size } else { 4 }
    }

    /// The entry PC of function `index` (`index == nfunc` is the end of the last one).
    fn entry(&self, index: usize) -> u64 {
        let size = self.ftab_field();
        let value = read_uint(&self.data, self.pcln + 2 * index * size, size).unwrap_or(0);
        if self.version == GoVersion::Go116 { value } else { self.text_start.wrapping_add(value) }
    }

    fn find(&self, pc: u64) -> Option<Func> {
        if self.nfunc == 0 || pc < self.entry(0) || pc >= self.entry(self.nfunc) {
            return None;
        }
        let (mut low, mut high) = (0, self.nfunc);
        while high - low > 1 {
            let middle = (low + high) / 2;
            if self.entry(middle) <= pc { low = middle } else { high = middle }
        }
        let size = self.ftab_field();
        let funcoff = read_uint(&self.data, self.pcln + (2 * low + 1) * size, size)? as usize;
        let offset = self.pcln.checked_add(funcoff)?;
        (offset + self.fixed_size() <= self.data.len()).then_some(Func { offset, entry: self.entry(low) })
    }

    /// Bytes of `_func` before its pcdata table.
    fn fixed_size(&self) -> usize {
        let entry = if self.version == GoVersion::Go116 { self.ptr_size } else { 4 };
        let fields = if self.version >= GoVersion::Go120 { 9 } else { 8 };
        entry + fields * 4 + 4
    }

    /// Field `n` (1-based after the entry) of `_func`: 1 name, 5 pcfile, 6 pcln,
    /// 7 npcdata, 8 cuOffset, 9 startLine (1.20+).
    fn field(&self, func: Func, n: usize) -> u32 {
        let entry = if self.version == GoVersion::Go116 { self.ptr_size } else { 4 };
        read_u32(&self.data, func.offset + entry + (n - 1) * 4).unwrap_or(0)
    }

    fn pcdata_table(&self, func: Func, table: u32) -> u32 {
        if table >= self.field(func, 7) {
            return 0;
        }
        read_u32(&self.data, func.offset + self.fixed_size() + table as usize * 4).unwrap_or(0)
    }

    /// The address of funcdata `index` of `func`, if it has one.
    fn funcdata(&self, func: Func, index: u8) -> Option<u64> {
        let memory = self.funcdata.as_ref()?;
        let count = *self.data.get(func.offset + self.fixed_size() - 1)?;
        if index >= count {
            return None;
        }
        let after_pcdata = self.fixed_size() + self.field(func, 7) as usize * 4;
        if self.version == GoVersion::Go116 {
            // Pointers, aligned to their size (the `_func` itself is).
            let start = after_pcdata.next_multiple_of(self.ptr_size);
            let at = func.offset + start + usize::from(index) * self.ptr_size;
            return read_uint(&self.data, at, self.ptr_size).filter(|address| *address != 0);
        }
        let offset = read_u32(&self.data, func.offset + after_pcdata + usize::from(index) * 4)?;
        (offset != u32::MAX).then(|| memory.gofunc + u64::from(offset))
    }

    /// Entry `index` of the inline tree at `tree`: (name offset, parent PC offset, start line).
    fn inlined_call(&self, tree: u64, index: u64) -> Option<(u32, i32, i32)> {
        let memory = self.funcdata.as_ref()?;
        let size: u64 = if self.version >= GoVersion::Go120 { 16 } else { 20 };
        let at =
            usize::try_from(tree.checked_sub(memory.address)?.checked_add(index.checked_mul(size)?)?).ok()?;
        let int = |offset: usize| read_u32(&memory.bytes, at + offset);
        if self.version >= GoVersion::Go120 {
            Some((int(4)?, int(8)? as i32, int(12)? as i32))
        } else {
            Some((int(12)?, int(16)? as i32, 0))
        }
    }

    /// The value of pc-value table `offset` at `target`, as `runtime.pcvalue` decodes it.
    fn pcvalue(&self, func: Func, offset: u32, target: u64) -> Option<i32> {
        if offset == 0 {
            return None;
        }
        let mut at = self.pctab.checked_add(offset as usize)?;
        let (mut pc, mut value, mut first) = (func.entry, -1i32, true);
        loop {
            let (value_delta, used) = read_varint(&self.data, at)?;
            if value_delta == 0 && !first {
                return None;
            }
            at += used;
            value = value.wrapping_add((-((value_delta & 1) as i32)) ^ (value_delta >> 1) as i32);
            let (pc_delta, used) = read_varint(&self.data, at)?;
            at += used;
            pc = pc.wrapping_add(u64::from(pc_delta) * self.quantum);
            if target < pc {
                return Some(value);
            }
            first = false;
        }
    }

    fn name(&self, offset: u32) -> String {
        c_string(&self.data, self.funcnames + offset as usize)
    }

    fn file(&self, func: Func, index: i32) -> Option<String> {
        let slot = self.field(func, 8).checked_add(u32::try_from(index).ok()?)? as usize;
        let offset = read_u32(&self.data, self.cutab + slot * 4).filter(|offset| *offset != u32::MAX)?;
        Some(c_string(&self.data, self.filetab + offset as usize))
    }
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

pub(super) fn read_uint(data: &[u8], at: usize, size: usize) -> Option<u64> {
    match size {
        4 => read_u32(data, at).map(u64::from),
        _ => Some(u64::from_le_bytes(data.get(at..at.checked_add(8)?)?.try_into().ok()?)),
    }
}

fn read_varint(data: &[u8], at: usize) -> Option<(u32, usize)> {
    let mut value = 0u32;
    for (index, byte) in data.get(at..)?.iter().take(5).enumerate() {
        value |= u32::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((value, index + 1));
        }
    }
    None
}

fn c_string(data: &[u8], at: usize) -> String {
    let bytes = data.get(at..).unwrap_or_default();
    let end = bytes.iter().position(|byte| *byte == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    use object::ReadCache;

    use super::*;

    /// The test Go program built offline by `go` (a path or the one on PATH) into `dir`,
    /// with `args` for `go build`.
    fn go_build(go: &Path, dir: &Path, name: &str, args: &[&str]) -> PathBuf {
        let out = dir.join(name);
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/perf/goburn");
        let status = Command::new(go)
            .arg("build")
            .args(args)
            .arg("-o")
            .arg(&out)
            .arg(".")
            .current_dir(source)
            .env("CGO_ENABLED", "0")
            .env("GOPROXY", "off")
            .env("GOFLAGS", "-mod=mod")
            .env("GOTOOLCHAIN", "local")
            .status()
            .expect("`go` runs (apt-get install golang-go)");
        assert!(status.success());
        out
    }

    /// The Go toolchains installed from Debian besides the default one
    /// (`/usr/lib/go-1.N/bin/go`), to check other versions' layouts where they are.
    fn other_toolchains() -> Vec<PathBuf> {
        let output = Command::new("go").args(["env", "GOROOT"]).output().expect("`go` runs");
        let default = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        let Ok(entries) = std::fs::read_dir("/usr/lib") else { return Vec::new() };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_name().to_string_lossy().starts_with("go-1."))
            .filter(|entry| entry.path().canonicalize().ok() != default.canonicalize().ok())
            .map(|entry| entry.path().join("bin/go"))
            .filter(|go| go.exists())
            .collect();
        found.sort();
        found
    }

    fn table(binary: &Path) -> GoTable {
        let file = std::fs::File::open(binary).unwrap();
        let cache = ReadCache::new(&file);
        let object = object::File::parse(&cache).unwrap();
        super::super::gomodule::load(&object).unwrap().expect("a Go table")
    }

    /// `go tool addr2line`'s answer for each address: (function, file:line).
    fn addr2line(go: &Path, binary: &Path, addresses: &[u64]) -> Vec<(String, String)> {
        let mut child = Command::new(go)
            .args(["tool", "addr2line"])
            .arg(binary)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let input: String = addresses.iter().map(|address| format!("{address:#x}\n")).collect();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap();
        let text = String::from_utf8(output.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        lines.chunks(2).map(|pair| (pair[0].to_string(), pair[1].to_string())).collect()
    }

    /// For thousands of PCs (each function's entry, middle and last byte), the outermost
    /// function and the innermost file:line agree with `go tool addr2line`, which reads
    /// the same table with Go's own `debug/gosym`.
    fn agrees_with_go_addr2line(go: &Path, binary: &Path) {
        let table = table(binary);
        let mut addresses = Vec::new();
        for index in 0..table.nfunc {
            let (entry, end) = (table.entry(index), table.entry(index + 1));
            addresses.extend([entry, entry + (end - entry) / 2, end - 1]);
        }
        assert!(addresses.len() > 3000, "{} addresses", addresses.len());
        let theirs = addr2line(go, binary, &addresses);
        assert_eq!(theirs.len(), addresses.len());
        for (address, (function, file_line)) in addresses.iter().zip(&theirs) {
            let frames =
                table.frames(*address).unwrap_or_else(|| panic!("{address:#x} ({function}) not found"));
            let (outer, inner) = (frames.last().unwrap(), &frames[0]);
            assert_eq!(&outer.name, function, "at {address:#x}");
            // Past a function's last instruction (padding) Go says line -1; unknown is 0 here.
            let file_line = file_line.replace(":-1", ":0");
            assert_eq!(format!("{}:{}", inner.file, inner.line), file_line, "at {address:#x} in {function}");
        }
    }

    /// The inline tree gives the frames the Go runtime gives for a stack taken inside an
    /// inlined call: `traceHere` inlined into `tracedCaller`, with their lines.
    fn agrees_with_runtime_frames(binary: &Path) {
        let mut child = Command::new(binary).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(b"trace\nexit\n").unwrap();
        let output = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
        let frames: Vec<(u64, String)> = output
            .lines()
            .filter_map(|line| line.strip_prefix("frame 0x"))
            .map(|line| {
                let (pc, rest) = line.split_once(' ').unwrap();
                (u64::from_str_radix(pc, 16).unwrap(), rest.to_string())
            })
            .collect();
        assert_eq!(frames[0].1.split(' ').next(), Some("main.traceHere"), "{output}");
        let table = table(binary);
        let ours = table.frames(frames[0].0 - 1).unwrap();
        let ours: Vec<String> =
            ours.iter().map(|frame| format!("{} {}:{}", frame.name, frame.file, frame.line)).collect();
        let runtime: Vec<String> = frames[..2].iter().map(|(_, frame)| frame.clone()).collect();
        assert_eq!(ours, runtime);
        // The physical caller's return address names only it.
        let caller = table.frames(frames[2].0 - 1).unwrap();
        assert_eq!(format!("{} {}:{}", caller[0].name, caller[0].file, caller[0].line), frames[2].1);
        assert_eq!(caller.len(), 1);
    }

    /// The PCs of the function named `name`.
    fn pcs_of(table: &GoTable, name: &str) -> std::ops::Range<u64> {
        let index = (0..table.nfunc).find(|index| {
            let func = table.find(table.entry(*index)).unwrap();
            table.name(table.field(func, 1)) == name
        });
        let index = index.unwrap_or_else(|| panic!("no {name}"));
        table.entry(index)..table.entry(index + 1)
    }

    /// The pcsp table tells a function that sets up no frame (`hotLoop`, a leaf) from
    /// one that does once past its prologue (`tracedCaller`).
    fn tells_frameless_code(binary: &Path) {
        let table = table(binary);
        // Past the last instruction (padding) the table says nothing.
        let leaf: Vec<Option<bool>> =
            pcs_of(&table, "main.hotLoop").map(|pc| table.frameless_at(pc)).collect();
        assert!(leaf[0] == Some(true) && !leaf.contains(&Some(false)), "{leaf:?}");
        let framed = pcs_of(&table, "main.tracedCaller");
        assert_eq!(table.frameless_at(framed.start), Some(true), "at entry nothing is pushed yet");
        assert!(framed.clone().any(|pc| table.frameless_at(pc) == Some(false)));
    }

    /// A binary as the default Go (1.19: magic 0xfffffff0) builds it.
    #[test]
    fn go_binary() {
        let go = Path::new("go");
        let dir = tempfile::tempdir().unwrap();
        let binary = go_build(go, dir.path(), "plain", &[]);
        assert_eq!(table(&binary).version, GoVersion::Go118);
        agrees_with_go_addr2line(go, &binary);
        agrees_with_runtime_frames(&binary);
        tells_frameless_code(&binary);
    }

    /// Stripped of its symbol table and DWARF: the pclntab and the inline trees remain.
    #[test]
    fn stripped_go_binary() {
        let go = Path::new("go");
        let dir = tempfile::tempdir().unwrap();
        let binary = go_build(go, dir.path(), "stripped", &["-ldflags=-s -w"]);
        agrees_with_go_addr2line(go, &binary);
        agrees_with_runtime_frames(&binary);
    }

    /// Binaries of every other Go installed here (1.20+ is magic 0xfffffff1, with the
    /// inline tree's new layout), plain and stripped, where there is one.
    #[test]
    fn other_go_versions() {
        let toolchains = other_toolchains();
        if toolchains.is_empty() {
            eprintln!("SKIPPED: no Go besides the default in /usr/lib/go-1.N");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for (index, go) in toolchains.iter().enumerate() {
            for (kind, args) in [("plain", &[][..]), ("stripped", &["-ldflags=-s -w"][..])] {
                let binary = go_build(go, dir.path(), &format!("{kind}-{index}"), args);
                let version = table(&binary).version;
                let newer =
                    ["1.19", "1.18"].iter().all(|old| !go.to_string_lossy().contains(&format!("go-{old}/")));
                assert_eq!(
                    version == GoVersion::Go120,
                    newer,
                    "{} built with {}",
                    binary.display(),
                    go.display()
                );
                agrees_with_go_addr2line(go, &binary);
                agrees_with_runtime_frames(&binary);
                tells_frameless_code(&binary);
            }
        }
    }

    /// Position-independent (which Go 1.19's addr2line cannot read): every function symbol
    /// `go tool nm` lists is found at its address, the inline tree through relocations.
    #[test]
    fn pie_go_binary() {
        let dir = tempfile::tempdir().unwrap();
        let binary = go_build(Path::new("go"), dir.path(), "pie", &["-buildmode=pie"]);
        let table = table(&binary);
        assert!(table.funcdata.is_some(), "moduledata found through relocations");
        let output = Command::new("go").args(["tool", "nm"]).arg(&binary).output().unwrap();
        let text = String::from_utf8(output.stdout).unwrap();
        // Several symbols can share an address (runtime.text and the first function); the
        // table names generated equality functions `type..eq.[...]T`, not by their length.
        let mut symbols: HashMap<u64, Vec<&str>> = HashMap::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [address, "T" | "t", name] = fields[..] else { continue };
            if name.starts_with("type..") {
                continue;
            }
            let address = u64::from_str_radix(address, 16).unwrap();
            symbols.entry(address).or_default().push(name.trim_end_matches(".abi0"));
        }
        let mut checked = 0;
        for (address, names) in &symbols {
            let Some(frames) = table.frames(*address) else { continue };
            assert!(names.contains(&frames.last().unwrap().name.as_str()), "at {address:#x}: {names:?}");
            checked += 1;
        }
        assert!(checked > 1000, "{checked} functions checked");
        let hot = text.lines().find(|line| line.ends_with(" main.hotLoop")).unwrap();
        let hot = u64::from_str_radix(hot.split_whitespace().next().unwrap(), 16).unwrap();
        let inlined =
            (hot..hot + 64).any(|pc| table.frames(pc).is_some_and(|frames| frames[0].name == "main.mix"));
        assert!(inlined, "main.mix found inlined in main.hotLoop");
    }

    /// pc-value tables decode as the runtime's `step` does: zig-zag values, PC deltas
    /// scaled by the quantum, a zero value delta ending the table.
    #[test]
    fn varints_and_values() {
        assert_eq!(read_varint(&[0x96, 0x01], 0), Some((150, 2)));
        assert_eq!(read_varint(&[0x80, 0x80], 0), None);
        assert_eq!(c_string(b"main.f\0main.g\0", 7), "main.g");
        let old = GoTable::parse(vec![0xfb, 0xff, 0xff, 0xff, 0, 0, 1, 8], 0, None);
        assert_eq!(old.unwrap_err(), GoTableError::BeforeGo116);
        let truncated = GoTable::parse(vec![0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8], 0, None);
        assert_eq!(truncated.unwrap_err(), GoTableError::Truncated);
        let unknown = GoTable::parse(vec![0x7f, b'E', b'L', b'F', 0, 0, 1, 8], 0, None);
        assert_eq!(unknown.unwrap_err(), GoTableError::UnknownMagic(0x464c457f));
    }
}
