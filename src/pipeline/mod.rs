//! Wires the stages into the service. `App` is the composition root: it builds the parts
//! and hands each loop and step the narrow handles it uses; nothing here imports it back.
//! - [`job`]: one job's steps, from the gate's pre-check to its decision.
//! - [`loops`]: what runs until shutdown (workers, sampling and watch, the recorder, exits,
//!   Alertmanager's API polled, maintenance).
//! - The handles: [`LiveConfig`], [`DecisionLog`], [`JobQueue`] and [`RunningJobs`],
//!   [`Inbox`] (payloads in), [`Analyses`], [`Annotator`], [`Retention`], [`Pusher`]
//!   (kept profiles queued for Pyroscope).

mod analyses;
mod annotator;
mod app;
mod decisions;
mod inbox;
pub mod job;
mod live;
pub mod loops;
mod pusher;
mod queue;
mod retention;

pub use analyses::Analyses;
pub use annotator::Annotator;
pub use app::{App, AppError};
pub use decisions::DecisionLog;
pub use inbox::{Inbox, PayloadError, Taken};
pub use live::LiveConfig;
pub use pusher::Pusher;
pub use queue::{JobQueue, QueueError, RunningJobs};
pub use retention::Retention;
