//! Prometheus-style durations (`500ms`, `1h30m`) and byte sizes (`512MiB`).

use std::time::Duration;

/// A duration or a size that does not read as one; each names the text as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("{0:?} is not a duration like 500ms, 30s, 5m or 1h30m")]
    NotADuration(String),
    /// A duration of more milliseconds than a u64 holds.
    #[error("{0:?} is too long")]
    TooLong(String),
    #[error("{0:?} is not a size like 512MiB, 1GiB or 1048576")]
    NotASize(String),
}

/// Parses a Prometheus duration: one or more `<integer><unit>` parts, largest unit first,
/// units `ms`, `s`, `m`, `h`, `d`, `w`, `y`.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 24 * 3600 * 1000),
        ("w", 7 * 24 * 3600 * 1000),
        ("d", 24 * 3600 * 1000),
        ("h", 3600 * 1000),
        ("m", 60 * 1000),
        ("s", 1000),
        ("ms", 1),
    ];
    let bad = || UnitError::NotADuration(text.to_string());
    if text.is_empty() {
        return Err(bad());
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    let mut last_rank = usize::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let rank = UNITS.iter().position(|(name, _)| *name == unit).ok_or_else(bad)?;
        // Each unit at most once and in decreasing order, as Prometheus requires.
        if last_rank != usize::MAX && rank <= last_rank {
            return Err(bad());
        }
        last_rank = rank;
        total_ms = number
            .checked_mul(UNITS[rank].1)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| UnitError::TooLong(text.to_string()))?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration the way `parse_duration` reads it (`1h30m`, `250ms`, `0s`).
pub fn format_duration(duration: Duration) -> String {
    let mut ms = duration.as_millis() as u64;
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// Parses a byte size: a plain integer (bytes) or a number with `B`, `KB`, `MB`, `GB`, `TB`
/// (powers of 1000) or `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let bad = || UnitError::NotASize(text.to_string());
    let text_trimmed = text.trim();
    let split = text_trimmed.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text_trimmed.len());
    let (number, unit) = text_trimmed.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "MB" => 1000_u64.pow(2),
        "GB" => 1000_u64.pow(3),
        "TB" => 1000_u64.pow(4),
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = number * factor as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations read like Prometheus's, and wrong ones are refused.
    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "5", "s", "5x", "1m1h", "1s1s", "-5s", "1.5s", " 5s"] {
            assert_eq!(parse_duration(bad), Err(UnitError::NotADuration(bad.to_string())));
        }
        let long = parse_duration("99999999999y").unwrap_err();
        assert_eq!(long.to_string(), "\"99999999999y\" is too long");
    }

    /// Formatting and parsing are inverses.
    #[test]
    fn duration_round_trip() {
        for ms in [0, 1, 999, 1000, 61_000, 5_400_000, 90_061_001] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }

    /// Sizes in decimal and binary units.
    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5KB"), Ok(1500));
        assert_eq!(parse_size("2 MB"), Ok(2_000_000));
        for bad in ["", "MiB", "1XB", "-1MiB", "1e3"] {
            assert_eq!(parse_size(bad), Err(UnitError::NotASize(bad.to_string())));
        }
        assert_eq!(
            parse_size("1XB").unwrap_err().to_string(),
            "\"1XB\" is not a size like 512MiB, 1GiB or 1048576"
        );
    }
}
