//! An SVG flame graph of a profile's main sample type, drawn by `inferno` from the folded
//! stacks (`root;caller;leaf value`) of one streaming walk.

use std::collections::HashMap;
use std::io::Read;

use inferno::flamegraph::color::{BasicPalette, Palette};
use inferno::flamegraph::{Options, from_lines};

use super::stacks::{add, walk_stacks};
use crate::model::ProfileKind;
use crate::profile::InvalidBody;

/// What the graph is titled with.
pub struct Labels<'a> {
    pub title: &'a str,
    pub subtitle: &'a str,
    /// The capture kind picks the colours: cpu hot, memory green-blue, waiting aqua.
    pub kind: ProfileKind,
}

/// Draws the flame graph of the gzip'd profile that `open` reads (once per pass).
pub fn render<R: Read>(
    open: impl FnMut() -> std::io::Result<R>,
    max_unzipped: u64,
    labels: &Labels<'_>,
) -> Result<Vec<u8>, InvalidBody> {
    let mut stacks: HashMap<Vec<i64>, Vec<i64>> = HashMap::new();
    let walked = walk_stacks(open, max_unzipped, |stack, values| {
        add(stacks.entry(stack.to_vec()).or_insert_with(|| vec![0; values.len()]), values);
    })?;
    let main = walked.main;
    // A frame name must not split the line: `;` separates frames, a line ends the stack.
    let frame = |index: &i64| walked.name(*index).replace([';', '\n', '\r'], ":");
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
    use crate::analyze::stacks::tests::profile;

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
        let svg = String::from_utf8(render(|| Ok(bytes.as_slice()), 1 << 20, &labels()).unwrap()).unwrap();
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
        let svg = String::from_utf8(render(|| Ok(bytes.as_slice()), 1 << 20, &labels()).unwrap()).unwrap();
        assert!(svg.contains("the profile has no samples"));
    }
}
