//! What the unit tests share: a fixed clock, and the made-up profiles that the integration
//! tests and benchmarks use too. Built for tests only.

use chrono::{DateTime, Utc};

#[path = "../tests/support/profiles.rs"]
pub mod profiles;

/// `seconds` after a fixed moment (in January 2027), the same in every test.
pub fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
}
