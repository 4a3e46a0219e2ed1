//! One frame of a location, named.

/// One frame of a location, as a profile's `Line` and `Function` take it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(in crate::perf) struct SymbolFrame {
    /// Demangled.
    pub name: String,
    /// As linked.
    pub system_name: String,
    pub file: String,
    pub line: i64,
    /// The line of the function's start, where the binary says it (Go 1.20+).
    pub start_line: i64,
}
