//! The recorder on the pages: which targets record and how their recordings fare, and on
//! a capture's page, the window it covers and the recorded profiles it is made of.

use std::fmt::Write;

use crate::model::CaptureMeta;
use crate::model::text::{Esc, quantity, time};
use crate::recorder::Status;

/// The recorded targets: what each records, how far back it reaches, and what is wrong.
pub(super) fn render_recorder(out: &mut String, statuses: &[Status]) {
    if statuses.is_empty() {
        return;
    }
    out.push_str(
        "<h2 id=\"recorder\">Recorder <span class=\"muted\">(each recorded target's recent profiles; \
         <a href=\"/api/v1/recorder\">JSON</a>)</span></h2>\n<table id=\"recordings\"><thead><tr>\
         <th>target</th><th>records</th><th>kind</th><th class=\"num\">profiles</th><th class=\"num\">size</th>\
         <th>from</th><th>to</th><th>state</th></tr></thead><tbody>\n",
    );
    for status in statuses {
        for (i, kind) in status.kinds.iter().enumerate() {
            let lead = match i {
                0 => format!(
                    "<td rowspan=\"{rows}\">{target}</td><td rowspan=\"{rows}\" class=\"muted\">{records}</td>",
                    rows = status.kinds.len(),
                    target = Esc(&status.target),
                    records = Esc(&status.records)
                ),
                _ => String::new(),
            };
            let (class, state) = match (&kind.backing_off_until, &kind.error, &kind.failing_since) {
                (Some(until), _, _) => {
                    ("failed", format!("someone else holds the CPU profiler; asks again at {}", time(until)))
                }
                (None, Some(error), since) => (
                    "failed",
                    format!("failing since {}: {}", since.as_ref().map(time).unwrap_or_default(), Esc(error)),
                ),
                (None, None, _) if kind.segments == 0 => ("muted", "starting".to_string()),
                (None, None, _) => ("ok", "recording".to_string()),
            };
            writeln!(
                out,
                "<tr>{lead}<td>{kind} <span class=\"muted\">every {every}</span></td><td class=\"num\">{segments}</td>\
                 <td class=\"num\">{bytes}</td><td>{from}</td><td>{to}</td><td class=\"{class}\">{state}</td></tr>",
                kind = kind.kind,
                every = Esc(&kind.every),
                segments = kind.segments,
                bytes = quantity(kind.bytes as i64, "bytes"),
                from = kind.oldest.as_ref().map(time).unwrap_or_default(),
                to = kind.newest.as_ref().map(time).unwrap_or_default(),
            )
            .unwrap();
        }
    }
    out.push_str("</tbody></table>\n");
}

/// For a capture made of recorded profiles: the window and the profiles it is made of.
pub(super) fn render_window(out: &mut String, meta: &CaptureMeta) {
    let Some(window) = &meta.window else { return };
    out.push_str("<h2 id=\"window\">From the recorder</h2>\n<p id=\"window-text\">");
    let span = format!("{} to {}", time(&window.from), time(&window.to));
    match (meta.is_before_window(), meta.segments.as_slice()) {
        (true, [segment]) => write!(
            out,
            "The recorder's snapshot from {}, the last before the window ({span}): the newest {} \
             profile of the same decision is compared with it.",
            time(&segment.to),
            meta.kind
        ),
        (false, []) => write!(
            out,
            "Taken fresh at the end of the window ({span}); compared with the recorder's snapshot \
             from before it, if it had one."
        ),
        (false, [segment]) => {
            write!(out, "The recorder's snapshot from {}, in the window {span}.", time(&segment.to))
        }
        (_, segments) => write!(
            out,
            "Merged from {} recorded segments, {} to {}, for the window {span}.",
            segments.len(),
            time(&segments[0].from),
            time(&segments[segments.len() - 1].to)
        ),
    }
    .unwrap();
    out.push_str("</p>\n");
    if meta.segments.len() > 1 {
        out.push_str(
            "<table id=\"segments\"><thead><tr><th>from</th><th>to</th><th class=\"num\">size</th></tr></thead><tbody>",
        );
        for segment in &meta.segments {
            write!(
                out,
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
                time(&segment.from),
                time(&segment.to),
                quantity(segment.bytes as i64, "bytes")
            )
            .unwrap();
        }
        out.push_str("</tbody></table>\n");
    }
}
