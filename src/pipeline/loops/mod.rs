//! The long-running loops, each owning its state: the queue's workers, the sampling and
//! watch loops, the recorder's loops, the keeping of exited processes' last profiles,
//! Alertmanager's API polled, maintenance, and the pushes to Pyroscope.

pub mod exits;
pub mod maintenance;
pub mod polling;
pub mod pushing;
pub mod recording;
pub mod sampling;
pub mod workers;
