//! Inline SVG charts: a signal's readings over time, with the moments that matter marked on
//! it. This file works out where everything goes; `templates/chart.html` draws it, with
//! presentation attributes only (the page's Content-Security-Policy allows no inline style).
//! Nothing is loaded from elsewhere.

use std::fmt;

use chrono::{DateTime, Utc};

use super::links;
use crate::model::CaptureId;
use crate::model::text::reading;

const WIDTH: f64 = 640.0;
/// Room on the left for the value axis, and below for the times.
const LEFT: f64 = 52.0;
const BOTTOM: f64 = 16.0;
const TOP: f64 = 6.0;
/// Room on the right of the plot.
const RIGHT: f64 = 4.0;

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
    pub captures: Vec<(i64, &'a CaptureId)>,
}

/// A position on the chart, in pixels, written to a tenth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Px(f64);

impl fmt::Display for Px {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1}", self.0)
    }
}

/// A chart, placed: what `templates/chart.html` draws.
#[derive(Debug)]
pub struct Chart<'a> {
    /// The line above the chart: whose signal, or which signal and its latest reading.
    pub caption: String,
    /// The SVG element's id.
    pub id: String,
    /// The signal, which is also the chart's accessible name.
    pub signal: &'a str,
    pub width: f64,
    pub height: f64,
    pub plot: Plot,
    pub axis: Axis,
    /// What the profile covers: left and width.
    pub window: Option<(Px, Px)>,
    /// The readings' line, `x,y x,y …`, when there are two or more.
    pub line: Option<String>,
    /// The one reading, when there is one.
    pub dot: Option<(Px, Px)>,
    pub moments: Vec<Moment>,
    pub captures: Vec<CaptureMark<'a>>,
    pub times: Times,
}

/// The plot's frame, in pixels: the readings are drawn inside it.
#[derive(Debug)]
pub struct Plot {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

/// The value axis's labels: the value at its top, where they end, and at what heights.
#[derive(Debug)]
pub struct Axis {
    pub top: String,
    pub x: f64,
    pub top_y: f64,
    pub zero_y: f64,
}

/// The times at both ends of the time axis, their baseline, and where the right one ends.
#[derive(Debug)]
pub struct Times {
    pub from: String,
    pub to: String,
    pub y: f64,
    pub right: f64,
}

/// A moment marked across the plot with a vertical line.
#[derive(Debug)]
pub struct Moment {
    pub class: &'static str,
    pub x: Px,
    pub dash: &'static str,
    pub title: &'static str,
}

/// A capture marked above the plot, linked to its page.
#[derive(Debug)]
pub struct CaptureMark<'a> {
    pub x: Px,
    pub id: &'a CaptureId,
    pub href: String,
}

/// Maps times and values to pixels.
struct Scale {
    from: i64,
    to: i64,
    top: f64,
    plot: f64,
}

impl Scale {
    fn x(&self, at: i64) -> Px {
        let share = (at.clamp(self.from, self.to) - self.from) as f64 / (self.to - self.from) as f64;
        Px(LEFT + share * (WIDTH - LEFT - RIGHT))
    }

    fn y(&self, value: f64) -> Px {
        Px(TOP + self.plot - value.max(0.0) / self.top * self.plot)
    }

    fn shows(&self, at: i64) -> bool {
        (self.from..=self.to).contains(&at)
    }
}

impl<'a> Chart<'a> {
    /// A chart of one signal's `points` (epoch ms, value) over `range`, `height` pixels
    /// high, with `marks`; `id` names the SVG element.
    pub fn new(
        caption: String,
        id: String,
        signal: &'a str,
        points: &[(i64, f64)],
        range: (i64, i64),
        height: f64,
        marks: &Marks<'a>,
    ) -> Chart<'a> {
        let top = points.iter().map(|(_, v)| *v).fold(0.0_f64, f64::max);
        let top = if signal.ends_with("_percent") && top <= 100.0 { 100.0 } else { nice(top) };
        let plot = height - BOTTOM - TOP;
        let scale = Scale { from: range.0, to: range.1.max(range.0 + 1), top, plot };
        let line = (points.len() > 1).then(|| {
            let xy: Vec<String> =
                points.iter().map(|(at, v)| format!("{},{}", scale.x(*at), scale.y(*v))).collect();
            xy.join(" ")
        });
        let dot = match points {
            [(at, value)] => Some((scale.x(*at), scale.y(*value))),
            _ => None,
        };
        let window = marks.window.map(|(start, end)| {
            let (x0, x1) = (scale.x(start), scale.x(end));
            (x0, Px((x1.0 - x0.0).max(2.0)))
        });
        Chart {
            caption,
            id,
            signal,
            width: WIDTH,
            height,
            plot: Plot { left: LEFT, top: TOP, width: WIDTH - LEFT - RIGHT, height: plot },
            axis: Axis { top: reading(signal, top), x: LEFT - 4.0, top_y: TOP + 9.0, zero_y: TOP + plot },
            window,
            line,
            dot,
            moments: moments(&scale, marks),
            captures: capture_marks(&scale, marks),
            times: Times {
                from: clock(scale.from),
                to: clock(scale.to),
                y: height - 3.0,
                right: WIDTH - RIGHT,
            },
        }
    }
}

/// The trigger's start and when alertprof got it, where they fall in the range.
fn moments(scale: &Scale, marks: &Marks) -> Vec<Moment> {
    let trigger = marks.trigger_start.filter(|at| scale.shows(*at)).map(|at| Moment {
        class: "trigger",
        x: scale.x(at),
        dash: "4 3",
        title: "the trigger's start",
    });
    let received = marks.received.filter(|at| scale.shows(*at)).map(|at| Moment {
        class: "received",
        x: scale.x(at),
        dash: "none",
        title: "when alertprof got it",
    });
    trigger.into_iter().chain(received).collect()
}

fn capture_marks<'a>(scale: &Scale, marks: &Marks<'a>) -> Vec<CaptureMark<'a>> {
    marks
        .captures
        .iter()
        .filter(|(at, _)| scale.shows(*at))
        .map(|(at, id)| CaptureMark { x: scale.x(*at), id, href: links::page(id) })
        .collect()
}

/// `10:00:10`, for the ends of the time axis.
fn clock(at: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(at).map_or(String::new(), |t| t.format("%H:%M:%S").to_string())
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
    use askama::Template;

    use super::*;

    /// Just the chart, as the pages include it.
    #[derive(Template)]
    #[template(source = "{% include \"chart.html\" %}", ext = "html")]
    struct Alone<'a> {
        chart: Chart<'a>,
    }

    /// The line, the marks and the axis are drawn where the times and values say; what lies
    /// outside the range is not marked.
    #[test]
    fn draws_line_and_marks() {
        let (inside, outside) =
            (CaptureId::parse("20261121T100000.000Z-r-cpu").unwrap(), CaptureId::parse("outside").unwrap());
        let points = [(1_000, 10.0), (2_000, 90.0), (3_000, 20.0)];
        let marks = Marks {
            trigger_start: Some(1_500),
            received: Some(2_500),
            window: Some((2_600, 2_900)),
            captures: vec![(2_600, &inside), (9_000, &outside)],
        };
        let chart = Chart::new(
            String::new(),
            "chart-cpu_percent".into(),
            "cpu_percent",
            &points,
            (1_000, 3_000),
            90.0,
            &marks,
        );
        let svg = Alone { chart }.render().unwrap();
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

    /// One reading is a dot, not a line.
    #[test]
    fn one_reading_is_a_dot() {
        let chart = Chart::new(
            String::new(),
            "c".into(),
            "goroutines",
            &[(1_000, 5.0)],
            (1_000, 1_000),
            56.0,
            &Marks::default(),
        );
        let svg = Alone { chart }.render().unwrap();
        assert!(svg.contains("<circle cx=\"52.0\"") && !svg.contains("polyline"), "{svg}");
        assert!(roxmltree::Document::parse(&svg).is_ok(), "well-formed: {svg}");
    }
}
