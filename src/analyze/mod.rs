//! What a stored profile says, worked out at capture time so the user does not have to:
//! the top functions as `go tool pprof -top` lists them, what grew against a baseline as
//! `-diff_base` shows it, and a flame graph.

pub mod diff;
pub mod flamegraph;
pub mod stacks;
pub mod stored;
pub mod summary;

pub use diff::{Diff, Incompatible, diff};
pub use summary::{FunctionTable, Summary, TopFunction, summarize};
