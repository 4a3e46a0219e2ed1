//! The values every stage shares, and nothing that does I/O: profile kinds, alerts and
//! their labels, triggers, decisions and their reasons, captures and what analysis found in
//! them, signals, target URLs, names, links, and the one way each is put into text.

pub mod alert;
pub mod capture;
pub mod decision;
pub mod endpoint;
pub mod id;
pub mod kind;
pub mod links;
pub mod name;
pub mod signal;
pub mod summary;
pub mod text;
pub mod trigger;

pub use alert::{Alert, AlertStatus, Labels, MalformedPayload, UnknownStatus, WebhookPayload};
pub use capture::{
    CaptureMeta, CaptureStatus, PendingCapture, PerfStats, PyroscopeSeries, SegmentRef, Window,
};
pub use decision::{AnnotationOutcome, Decision, Outcome, Reason, Refusal};
pub use endpoint::{AllowedTarget, Endpoint, EndpointError, UrlSpec, UrlTemplate};
pub use id::{CaptureId, CaptureRole, NotACaptureId};
pub use kind::{BodyFormat, ProfileKind, UnknownKind};
pub use links::CaptureLinks;
pub use name::{Name, Secret};
pub use signal::{Bases, Basis, Readings, Series, Signal, SignalCheck, SignalKey, Threshold};
pub use summary::{Diff, Summary, TopFunction};
pub use trigger::{Trigger, TriggerSource};
