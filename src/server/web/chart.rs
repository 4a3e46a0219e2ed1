//! Inline SVG charts, drawn on the server with presentation attributes only (the page's
//! Content-Security-Policy allows no inline style): a signal's readings over time, with the
//! moments that matter marked on it. Nothing is loaded from elsewhere.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use crate::model::text::{Esc, reading};

const WIDTH: f64 = 640.0;
/// Room on the left for the value axis, and below for the times.
const LEFT: f64 = 52.0;
const BOTTOM: f64 = 16.0;
const TOP: f64 = 6.0;

/// What is marked on a chart, in epoch milliseconds.
#[derive(Debug, Default)]
pub struct Marks<'a> {
    /// When the condition began (an alert's `startsAt`).
    pub trigger_start: Option<i64>,
    /// When alertprof got the alert (or the watch tick).
    pub received: Option<i64>,
    /// What the profile covers.
    pub window: Option<(i64, i64)>,
    /// Captures of the target: when each started, and its id (linked).
    pub captures: Vec<(i64, &'a str)>,
}

/// A chart of one signal's `points` (epoch ms, value) from `from` to `to`, `height` pixels
/// high, with `marks`; `id` names the SVG element.
pub fn draw(
    out: &mut String,
    id: &str,
    signal: &str,
    points: &[(i64, f64)],
    range: (i64, i64),
    height: f64,
    marks: &Marks,
) {
    let (from, to) = (range.0, range.1.max(range.0 + 1));
    let plot = height - BOTTOM - TOP;
    let top = points.iter().map(|(_, v)| *v).fold(0.0_f64, f64::max);
    let top = if signal.ends_with("_percent") && top <= 100.0 { 100.0 } else { nice(top) };
    let x = |at: i64| LEFT + (at.clamp(from, to) - from) as f64 / (to - from) as f64 * (WIDTH - LEFT - 4.0);
    let y = |value: f64| TOP + plot - value.max(0.0) / top * plot;
    write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" id=\"{id}\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"{label}\">",
        id = Esc(id),
        label = Esc(signal),
    )
    .unwrap();
    // The frame and the value axis.
    write!(
        out,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{w}\" height=\"{plot}\" fill=\"#fafafa\" stroke=\"#ddd\"/>\
         <text x=\"{lx}\" y=\"{ty}\" font-size=\"10\" text-anchor=\"end\" fill=\"#666\">{top}</text>\
         <text x=\"{lx}\" y=\"{by}\" font-size=\"10\" text-anchor=\"end\" fill=\"#666\">0</text>",
        w = WIDTH - LEFT - 4.0,
        lx = LEFT - 4.0,
        ty = TOP + 9.0,
        by = TOP + plot,
        top = reading(signal, top),
    )
    .unwrap();
    if let Some((start, end)) = marks.window {
        let (x0, x1) = (x(start), x(end));
        write!(
            out,
            "<rect class=\"window\" x=\"{x0:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{plot}\" fill=\"#e8e0ff\">\
             <title>what the profile covers</title></rect>",
            (x1 - x0).max(2.0)
        )
        .unwrap();
    }
    if points.len() > 1 {
        let line: Vec<String> = points.iter().map(|(at, v)| format!("{:.1},{:.1}", x(*at), y(*v))).collect();
        write!(
            out,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"#0b63c5\" stroke-width=\"1.5\"/>",
            line.join(" ")
        )
        .unwrap();
    }
    for (at, value) in points.iter().filter(|_| points.len() == 1) {
        write!(out, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"#0b63c5\"/>", x(*at), y(*value))
            .unwrap();
    }
    let line = |out: &mut String, class: &str, at: i64, dash: &str, title: &str| {
        let at_x = x(at);
        write!(
            out,
            "<line class=\"{class}\" x1=\"{at_x:.1}\" x2=\"{at_x:.1}\" y1=\"{TOP}\" y2=\"{:.1}\" stroke=\"#b42318\" \
             stroke-width=\"1.5\" stroke-dasharray=\"{dash}\"><title>{title}</title></line>",
            TOP + plot
        )
        .unwrap();
    };
    if let Some(at) = marks.trigger_start.filter(|at| (from..=to).contains(at)) {
        line(out, "trigger", at, "4 3", "the trigger's start");
    }
    if let Some(at) = marks.received.filter(|at| (from..=to).contains(at)) {
        line(out, "received", at, "none", "when alertprof got it");
    }
    for (at, capture) in marks.captures.iter().filter(|(at, _)| (from..=to).contains(at)) {
        let at_x = x(*at);
        write!(
            out,
            "<a href=\"/captures/{id}\"><path class=\"capture\" d=\"M{at_x:.1},{TOP} l-4,-5 l8,0 z\" fill=\"#4b2aa8\">\
             <title>{id}</title></path></a>",
            id = Esc(capture),
        )
        .unwrap();
    }
    // The times at both ends.
    let time = |at: i64| {
        DateTime::<Utc>::from_timestamp_millis(at).map_or(String::new(), |t| t.format("%H:%M:%S").to_string())
    };
    write!(
        out,
        "<text x=\"{LEFT}\" y=\"{h}\" font-size=\"10\" fill=\"#666\">{}</text>\
         <text x=\"{r}\" y=\"{h}\" font-size=\"10\" text-anchor=\"end\" fill=\"#666\">{}</text></svg>",
        time(from),
        time(to),
        h = height - 3.0,
        r = WIDTH - 4.0,
    )
    .unwrap();
}

/// A round number at or above `value`, for the top of the value axis.
fn nice(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let step = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * step).find(|top| *top >= value).unwrap_or(10.0 * step)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line, the marks and the axis are drawn where the times and values say; what lies
    /// outside the range is not marked.
    #[test]
    fn draws_line_and_marks() {
        let mut svg = String::new();
        let points = [(1_000, 10.0), (2_000, 90.0), (3_000, 20.0)];
        let marks = Marks {
            trigger_start: Some(1_500),
            received: Some(2_500),
            window: Some((2_600, 2_900)),
            captures: vec![(2_600, "20261121T100000.000Z-r-cpu"), (9_000, "outside")],
        };
        draw(&mut svg, "chart-cpu_percent", "cpu_percent", &points, (1_000, 3_000), 90.0, &marks);
        assert!(svg.starts_with(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" id=\"chart-cpu_percent\""
        ));
        assert!(svg.contains("<polyline points=\"52.0,"), "{svg}");
        assert!(svg.contains(">100.0</text>"), "percent axes run to 100: {svg}");
        assert!(
            svg.contains("class=\"trigger\"")
                && svg.contains("class=\"received\"")
                && svg.contains("class=\"window\"")
        );
        assert!(svg.contains("href=\"/captures/20261121T100000.000Z-r-cpu\""));
        assert!(!svg.contains("outside"));
        assert!(roxmltree::Document::parse(&svg).is_ok(), "well-formed: {svg}");
        assert_eq!(nice(1234.0), 2000.0);
        assert_eq!(nice(0.3), 0.5);
    }
}
