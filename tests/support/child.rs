//! A child process, killed and reaped when dropped: a failing test or benchmark leaves
//! nothing running. Shared by the tests and `benches/service.rs`.

use std::process::Child;

pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}
