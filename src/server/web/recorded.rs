//! The recorder on the pages: which targets record and how their recordings fare, and on
//! a capture's page, the window it covers and the recorded profiles it is made of.

use crate::model::CaptureMeta;
use crate::model::text::{quantity, time};
use crate::recorder::{KindStatus, Status};

/// One row of the recorder's table (`templates/captures.html`): one kind of one target.
pub struct RecorderRow<'a> {
    /// On a target's first row: the target, what it records, and how many rows it spans.
    pub lead: Option<(&'a str, &'a str, usize)>,
    pub kind: &'a KindStatus,
    pub bytes: String,
    pub from: String,
    pub to: String,
    /// How the recording fares: its class (`ok`, `failed`, `muted`) and the words.
    pub state: (&'static str, String),
}

/// The recorded targets' rows: what each records, how far back it reaches, what is wrong.
pub fn rows(statuses: &[Status]) -> Vec<RecorderRow<'_>> {
    let mut rows = Vec::new();
    for status in statuses {
        for (i, kind) in status.kinds.iter().enumerate() {
            rows.push(RecorderRow {
                lead: (i == 0).then_some((
                    status.target.as_str(),
                    status.records.as_str(),
                    status.kinds.len(),
                )),
                kind,
                bytes: quantity(kind.bytes as i64, "bytes"),
                from: kind.oldest.as_ref().map(time).unwrap_or_default(),
                to: kind.newest.as_ref().map(time).unwrap_or_default(),
                state: state(kind),
            });
        }
    }
    rows
}

fn state(kind: &KindStatus) -> (&'static str, String) {
    match (&kind.backing_off_until, &kind.error, &kind.failing_since) {
        (Some(until), _, _) => {
            ("failed", format!("someone else holds the CPU profiler; asks again at {}", time(until)))
        }
        (None, Some(error), since) => {
            ("failed", format!("failing since {}: {error}", since.as_ref().map(time).unwrap_or_default()))
        }
        (None, None, _) if kind.segments == 0 => ("muted", "starting".to_string()),
        (None, None, _) => ("ok", "recording".to_string()),
    }
}

/// For a capture made of recorded profiles: the window and the profiles it is made of.
pub struct Window {
    pub text: String,
    /// The segments (from, to, size), when there is more than one.
    pub segments: Vec<(String, String, String)>,
}

impl Window {
    pub fn of(meta: &CaptureMeta) -> Option<Window> {
        let window = meta.window.as_ref()?;
        let span = format!("{} to {}", time(&window.from), time(&window.to));
        let text = match (meta.is_before_window(), meta.segments.as_slice()) {
            (true, [segment]) => format!(
                "The recorder's snapshot from {}, the last before the window ({span}): the newest {} \
                 profile of the same decision is compared with it.",
                time(&segment.to),
                meta.kind
            ),
            (false, []) => format!(
                "Taken fresh at the end of the window ({span}); compared with the recorder's snapshot \
                 from before it, if it had one."
            ),
            (false, [segment]) => {
                format!("The recorder's snapshot from {}, in the window {span}.", time(&segment.to))
            }
            (_, segments) => format!(
                "Merged from {} recorded segments, {} to {}, for the window {span}.",
                segments.len(),
                time(&segments[0].from),
                time(&segments[segments.len() - 1].to)
            ),
        };
        let segments = match meta.segments.len() {
            0 | 1 => Vec::new(),
            _ => meta
                .segments
                .iter()
                .map(|s| (time(&s.from), time(&s.to), quantity(s.bytes as i64, "bytes")))
                .collect(),
        };
        Some(Window { text, segments })
    }
}
