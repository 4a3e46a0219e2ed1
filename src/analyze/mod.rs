//! What a stored profile says, worked out at capture time so the user does not have to:
//! the top functions, as `go tool pprof -top` lists them.

pub mod summary;

pub use summary::{Summary, TopFunction, summarize};
