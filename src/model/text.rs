//! The one way each kind of value is put into text, so the web page, the annotation, the
//! decision and the log say the same thing the same way: HTML escaping, profile values in
//! their units, signal readings, times.

use std::fmt::{self, Display};

use chrono::{DateTime, Utc};

/// The escaper of every `.html` template (askama.toml names it), the pages' and the
/// annotations': no value reaches HTML unescaped, and none is escaped by hand. It writes as
/// `Esc` does.
#[derive(Debug, Clone, Copy)]
pub struct Shown;

impl askama::filters::Escaper for Shown {
    fn write_escaped_str<W: fmt::Write>(&self, mut dest: W, text: &str) -> fmt::Result {
        write!(dest, "{}", Esc(text))
    }
}

/// Text made safe for HTML, attribute values included. Every string from an alert, a target
/// or a profile goes through this: whoever can reach the webhook or serve a profile writes
/// them. Control characters (but line breaks and tabs) and the characters that reorder
/// text (bidi overrides, which can make a label read as something else) are shown as their
/// code, `[U+202E]`.
struct Esc<'a>(&'a str);

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(|c: char| matches!(c, '&' | '<' | '>' | '"' | '\'') || is_hidden(c)) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().expect("found");
            match c {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                '\'' => f.write_str("&#39;")?,
                hidden => write!(f, "[U+{:04X}]", hidden as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// Whether a character changes how text shows without showing itself.
fn is_hidden(c: char) -> bool {
    (c.is_control() && !matches!(c, '\n' | '\t'))
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The steps a unit is scaled by, smallest first.
fn steps(unit: &str) -> Option<&'static [(f64, &'static str)]> {
    match unit {
        "nanoseconds" => Some(&[(1.0, "ns"), (1e3, "us"), (1e6, "ms"), (1e9, "s")]),
        "bytes" => Some(&[
            (1.0, "B"),
            (1024.0, "KiB"),
            (1_048_576.0, "MiB"),
            (1_073_741_824.0, "GiB"),
            (1_099_511_627_776.0, "TiB"),
        ]),
        _ => None,
    }
}

fn scaled(value: i64, unit: &str, sign: &str) -> String {
    let size = value.unsigned_abs() as f64;
    let sign = if value < 0 { "-" } else { sign };
    let Some(steps) = steps(unit) else { return format!("{sign}{}", value.unsigned_abs()) };
    let (div, suffix) = steps.iter().rev().find(|(div, _)| size >= *div).copied().unwrap_or(steps[0]);
    if div == 1.0 {
        format!("{sign}{}{suffix}", value.unsigned_abs())
    } else {
        format!("{sign}{:.2}{suffix}", size / div)
    }
}

/// A profile value in its unit, as pprof scales it: `1.23s`, `850ns`, `5.50MiB`, `340`.
pub fn quantity(value: i64, unit: &str) -> String {
    scaled(value, unit, "")
}

/// A change of a profile value, always signed: `+1.50s`, `-12.00MiB`, `+340`.
pub fn change(value: i64, unit: &str) -> String {
    scaled(value, unit, "+")
}

/// A signal reading: percentages with one decimal, whole numbers whole, others with three.
pub fn reading(signal: &str, value: f64) -> String {
    if signal.ends_with("_percent") {
        format!("{value:.1}")
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
    }
}

/// `2026-11-21 23:25:25Z`.
pub fn time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// `1 problem`, `2 problems`: a count with its noun, singular for one.
pub fn counted(count: usize, noun: &str) -> String {
    match count {
        1 => format!("1 {noun}"),
        _ => format!("{count} {noun}s"),
    }
}

/// At most `max` bytes of `text`, cut at a character boundary, with `…` when cut.
pub fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Markup comes out as text, both quotes included (it may sit in an attribute).
    #[test]
    fn escapes_markup() {
        assert_eq!(
            Esc("<script>alert('x')</script> & \"q\"").to_string(),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(Esc("plain ü").to_string(), "plain ü");
        assert_eq!(Esc("a\0b\u{202E}gpj.exe\nc\td\r").to_string(), "a[U+0000]b[U+202E]gpj.exe\nc\td[U+000D]");
    }

    #[test]
    fn counts_with_their_nouns() {
        assert_eq!(counted(0, "rule"), "0 rules");
        assert_eq!(counted(1, "problem"), "1 problem");
        assert_eq!(counted(12, "target"), "12 targets");
    }

    /// Values read as `go tool pprof` scales them, in binary units for bytes, and a change
    /// always carries its sign.
    #[test]
    fn quantities_in_their_units() {
        assert_eq!(quantity(1_230_000_000, "nanoseconds"), "1.23s");
        assert_eq!(quantity(2_500_000, "nanoseconds"), "2.50ms");
        assert_eq!(quantity(850, "nanoseconds"), "850ns");
        assert_eq!(quantity(0, "nanoseconds"), "0ns");
        assert_eq!(quantity(2048, "bytes"), "2.00KiB");
        assert_eq!(quantity(5_767_168, "bytes"), "5.50MiB");
        assert_eq!(quantity(512, "bytes"), "512B");
        assert_eq!(quantity(340, "count"), "340");
        assert_eq!(change(1_500_000_000, "nanoseconds"), "+1.50s");
        assert_eq!(change(-12_582_912, "bytes"), "-12.00MiB");
        assert_eq!(change(340, "count"), "+340");
        assert_eq!(change(0, "bytes"), "+0B");
        assert_eq!(quantity(i64::MIN, "bytes"), "-8388608.00TiB");
    }

    /// Readings: percentages to a tenth, counts whole.
    #[test]
    fn readings() {
        assert_eq!(reading("cpu_percent", 87.54), "87.5");
        assert_eq!(reading("goroutines", 1200.0), "1200");
        assert_eq!(reading("go_foo", 0.5), "0.500");
    }

    /// Clipping keeps whole characters and says it cut.
    #[test]
    fn clipping() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("äöü", 3), "ä…");
        assert_eq!(clip("abcdef", 3), "abc…");
    }
}
