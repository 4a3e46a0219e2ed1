//! Marks captures where users look: a Grafana region annotation per kept profile, with a
//! link back to it. Failures are retried and recorded; they never touch the capture.

pub mod grafana;

pub use grafana::{AnnotateError, Annotation, GrafanaClient};
