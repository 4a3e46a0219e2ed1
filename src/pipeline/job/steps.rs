//! What a job's steps use of the service.

use std::sync::Arc;

use super::capture::Capturer;
use crate::gate::{Claims, Gate};
use crate::pipeline::annotator::Annotator;
use crate::pipeline::retention::Retention;
use crate::recorder::Recorder;
use crate::verify::Verifier;

/// The handles a job's steps use, each built by the composition root; a step takes only
/// those it needs.
#[derive(Clone)]
pub struct JobSteps {
    pub gate: Arc<Gate>,
    /// With a shared bucket: claims that make every instance capture an alert once.
    pub claims: Option<Arc<Claims>>,
    pub verifier: Arc<Verifier>,
    pub recorder: Arc<Recorder>,
    pub capturer: Capturer,
    pub annotator: Annotator,
    pub retention: Retention,
}
