//! An SVG flame graph of a profile's main sample type, drawn by `inferno` from the folded
//! stacks (`root;caller;leaf value`) of one streaming walk.

use std::collections::HashMap;
use std::io::Read;

use inferno::flamegraph::color::{BasicPalette, Palette};
use inferno::flamegraph::{Options, from_lines};

use super::stacks::{Budget, add, walk_stacks};
use crate::model::ProfileKind;
use crate::model::text::clip;
use crate::profile::InvalidBody;

/// Frames of the distinct stacks kept for drawing; samples of stacks past it are drawn as
/// one `[more stacks]` frame. A real profile has a few hundred thousand.
const MAX_KEPT_FRAMES: usize = 1_000_000;
/// Longest frame name drawn, in bytes.
const MAX_FRAME_NAME: usize = 256;
/// The frame drawn for samples whose stacks were not kept.
const MORE: i64 = -1;

/// What the graph is titled with.
pub struct Labels<'a> {
    pub title: &'a str,
    pub subtitle: &'a str,
    /// The capture kind picks the colours: cpu hot, memory green-blue, waiting aqua.
    pub kind: ProfileKind,
}

/// Draws the flame graph of the gzip'd profile that `open` reads (once per pass), within
/// `budget`; what was left out is said in the subtitle.
pub fn render<R: Read>(
    open: impl FnMut() -> std::io::Result<R>,
    budget: &Budget,
    labels: &Labels<'_>,
) -> Result<Vec<u8>, InvalidBody> {
    let mut stacks: HashMap<Vec<i64>, Vec<i64>> = HashMap::new();
    let mut kept_frames = 0;
    let mut left_out = false;
    let walked = walk_stacks(open, budget, |stack, values| {
        let zeros = || vec![0; values.len()];
        match stacks.get_mut(stack) {
            Some(sums) => add(sums, values),
            None if kept_frames + stack.len() <= MAX_KEPT_FRAMES => {
                kept_frames += stack.len();
                add(stacks.entry(stack.to_vec()).or_insert_with(zeros), values);
            }
            None => {
                left_out = true;
                add(stacks.entry(vec![MORE]).or_insert_with(zeros), values);
            }
        }
    })?;
    let main = walked.main;
    // A frame name must not split the line: `;` separates frames, a line ends the stack.
    let frame = |index: &i64| match *index {
        MORE => "[more stacks]".to_string(),
        index => clip(walked.name(index), MAX_FRAME_NAME).replace([';', '\n', '\r'], ":"),
    };
    let mut lines: Vec<String> = stacks
        .iter()
        .filter(|(_, values)| values[main] > 0)
        .map(|(stack, values)| {
            let frames: Vec<String> = stack.iter().rev().map(frame).collect();
            let frames = if frames.is_empty() { "[unknown]".to_string() } else { frames.join(";") };
            format!("{frames} {}", values[main])
        })
        .collect();
    lines.sort_unstable();

    let mut options = Options::default();
    options.title = labels.title.to_string();
    options.subtitle = Some(labels.subtitle.to_string());
    options.count_name = walked.main_unit().to_string();
    options.name_type = "Function:".to_string();
    options.colors = Palette::Basic(match labels.kind {
        ProfileKind::Cpu | ProfileKind::Fgprof => BasicPalette::Hot,
        ProfileKind::Heap | ProfileKind::Allocs => BasicPalette::Mem,
        _ => BasicPalette::Aqua,
    });
    options.hash = true;
    options.deterministic = true;
    let mut cut = walked.cut_short.clone().into_iter().collect::<Vec<_>>();
    if left_out {
        cut.push(format!("stacks past {MAX_KEPT_FRAMES} frames are drawn as [more stacks]"));
    }
    if !cut.is_empty() {
        options.subtitle = Some(format!("{} — cut short: {}", labels.subtitle, cut.join("; ")));
    }
    let mut svg = Vec::new();
    if lines.is_empty() {
        // inferno draws a "no stack counts" message for no input; say why instead.
        options.subtitle = Some(format!("{} — the profile has no samples", labels.subtitle));
        lines.push("[no samples] 1".to_string());
    }
    from_lines(&mut options, lines.iter().map(String::as_str), &mut svg)
        .map_err(|e| InvalidBody::Io(format!("cannot draw the flame graph: {e}")))?;
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::stacks::tests::budget;
    use crate::testing::profiles::profile;

    fn labels() -> Labels<'static> {
        Labels {
            title: "checkout cpu",
            subtitle: "20261121T232525.702Z-cpu-spike-cpu",
            kind: ProfileKind::Cpu,
        }
    }

    /// The SVG parses as XML and has a frame for each function, sized by its share.
    #[test]
    fn frames_for_functions() {
        let bytes = profile(
            &["main.main", "main.spin", "main.(*T).x;y"],
            &[(&[2, 1], [3, 300]), (&[3, 1], [1, 100])],
        );
        let svg = String::from_utf8(render(|| Ok(bytes.as_slice()), &budget(), &labels()).unwrap()).unwrap();
        assert!(svg.starts_with("<?xml"), "{}", &svg[..100]);
        assert!(svg.contains("checkout cpu"));
        assert!(svg.contains("main.spin (300 nanoseconds, 75.00%)"), "{svg}");
        assert!(svg.contains("main.main (400 nanoseconds, 100.00%)"));
        // The `;` inside a name did not make a frame of its own.
        assert!(svg.contains("main.(*T).x:y (100 nanoseconds, 25.00%)"));
    }

    #[test]
    fn no_samples_said() {
        let bytes = profile(&["main.main"], &[]);
        let svg = String::from_utf8(render(|| Ok(bytes.as_slice()), &budget(), &labels()).unwrap()).unwrap();
        assert!(svg.contains("the profile has no samples"));
    }
}
