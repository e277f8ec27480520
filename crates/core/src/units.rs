//! Human durations and sizes as written in the fleet spec. Pure.
//!
//! * Durations: one or more `<integer><unit>` parts, largest unit first, each unit at most once:
//!   `250ms`, `5s`, `2m`, `1h`, `1m30s`, `1h 5m`. Units: `ms`, `s`, `m`, `h`.
//! * Sizes: `<integer>[ ]<unit>`, unit case-insensitive. Decimal units are powers of 1000
//!   (`k`/`kb`, `m`/`mb`, `g`/`gb`, `t`/`tb`), binary units powers of 1024 (`kib`, `mib`, `gib`,
//!   `tib`); `b` or no unit = bytes. So `50MB` = 50 000 000 bytes and `10 MiB` = 10 485 760.

use std::time::Duration;

const DURATION_UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

/// Parses a duration such as `"250ms"`, `"5s"`, `"1m30s"`. The error is a short sentence
/// meant to follow "<key> = <value>: ".
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".to_string());
    }
    let mut rest = s;
    let mut total_ms: u64 = 0;
    // Index into DURATION_UNITS of the last unit seen: the next must be smaller.
    let mut last_unit: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(match rest.chars().next() {
                Some('-') => "a duration cannot be negative".to_string(),
                _ => format!("expected a number at `{rest}`"),
            });
        }
        let (num, after) = rest.split_at(digits);
        if after.starts_with('.') || after.starts_with(',') {
            return Err(
                "fractions are not supported; use a smaller unit (1500ms, not 1.5s)".into(),
            );
        }
        let after = after.trim_start();
        let unit_len = after.len()
            - after
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!("`{num}` has no unit; did you mean \"{num}s\"?"));
        }
        let Some(idx) = DURATION_UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(format!("unknown unit `{unit}`"));
        };
        if last_unit.is_some_and(|last| idx <= last) {
            return Err("units must go from largest to smallest, each once (e.g. 1m30s)".into());
        }
        last_unit = Some(idx);
        let n: u64 = num.parse().map_err(|_| "number too large".to_string())?;
        total_ms = n
            .checked_mul(DURATION_UNITS[idx].1)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| "duration too large".to_string())?;
        rest = after.trim_start();
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration the way [`parse_duration`] reads it, at millisecond precision:
/// `1m30s`, `250ms`, `2h`, `0s`.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in DURATION_UNITS {
        let size = u128::from(size);
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

const SIZE_UNITS: [(&str, u64); 14] = [
    ("", 1),
    ("b", 1),
    ("k", 1_000),
    ("kb", 1_000),
    ("kib", 1 << 10),
    ("m", 1_000_000),
    ("mb", 1_000_000),
    ("mib", 1 << 20),
    ("g", 1_000_000_000),
    ("gb", 1_000_000_000),
    ("gib", 1 << 30),
    ("t", 1_000_000_000_000),
    ("tb", 1_000_000_000_000),
    ("tib", 1 << 40),
];

/// Parses a size in bytes such as `"50MB"` (50·10⁶), `"10 MiB"` (10·2²⁰), `"512k"` (512 000).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty size".to_string());
    }
    let digits = s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return Err(match s.chars().next() {
            Some('-') => "a size cannot be negative".to_string(),
            _ => format!("expected a number at `{s}`"),
        });
    }
    let (num, unit) = s.split_at(digits);
    if unit.starts_with('.') || unit.starts_with(',') {
        return Err("fractions are not supported; use a smaller unit (1536MiB, not 1.5GiB)".into());
    }
    let unit = unit.trim_start().to_ascii_lowercase();
    let Some((_, factor)) = SIZE_UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(format!("unknown unit `{unit}`"));
    };
    let n: u64 = num.parse().map_err(|_| "number too large".to_string())?;
    n.checked_mul(*factor)
        .ok_or_else(|| "size too large".to_string())
}

/// Formats a byte count with the largest unit that divides it exactly: `50MB`, `10MiB`, `512B`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 8] = [
        ("TiB", 1 << 40),
        ("TB", 1_000_000_000_000),
        ("GiB", 1 << 30),
        ("GB", 1_000_000_000),
        ("MiB", 1 << 20),
        ("MB", 1_000_000),
        ("KiB", 1 << 10),
        ("kB", 1_000),
    ];
    if bytes == 0 {
        return "0B".to_string();
    }
    for (unit, size) in UNITS {
        if bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok: &[(&str, u64)] = &[
            ("250ms", 250),
            ("5s", 5_000),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("1m30s", 90_000),
            ("1h 5m", 3_900_000),
            (" 5 s ", 5_000),
            ("0s", 0),
            ("1h1m1s1ms", 3_661_001),
            ("0ms", 0),
        ];
        for (text, ms) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(*ms)),
                "{text}"
            );
        }
        let bad: &[(&str, &str)] = &[
            ("", "empty duration"),
            ("5", "`5` has no unit; did you mean \"5s\"?"),
            ("5x", "unknown unit `x`"),
            ("5sec", "unknown unit `sec`"),
            (
                "1.5s",
                "fractions are not supported; use a smaller unit (1500ms, not 1.5s)",
            ),
            ("-1s", "a duration cannot be negative"),
            (
                "30s1m",
                "units must go from largest to smallest, each once (e.g. 1m30s)",
            ),
            (
                "1s1s",
                "units must go from largest to smallest, each once (e.g. 1m30s)",
            ),
            ("s", "expected a number at `s`"),
            ("99999999999999999999s", "number too large"),
            ("9999999999999999h", "duration too large"),
        ];
        for (text, err) in bad {
            assert_eq!(parse_duration(text), Err(err.to_string()), "{text}");
        }
    }

    #[test]
    fn duration_format_round_trips() {
        let cases: &[(u64, &str)] = &[
            (0, "0s"),
            (250, "250ms"),
            (5_000, "5s"),
            (90_000, "1m30s"),
            (3_600_000, "1h"),
            (3_661_001, "1h1m1s1ms"),
            (300_000, "5m"),
        ];
        for (ms, text) in cases {
            let d = Duration::from_millis(*ms);
            assert_eq!(format_duration(d), *text);
            assert_eq!(parse_duration(text), Ok(d));
        }
    }

    #[test]
    fn sizes() {
        let ok: &[(&str, u64)] = &[
            ("50MB", 50_000_000),
            ("10 MiB", 10 * 1024 * 1024),
            ("512k", 512_000),
            ("512KiB", 512 * 1024),
            ("1gb", 1_000_000_000),
            ("2GiB", 2 << 30),
            ("100", 100),
            ("100B", 100),
            ("1TB", 1_000_000_000_000),
            ("0", 0),
        ];
        for (text, n) in ok {
            assert_eq!(parse_size(text), Ok(*n), "{text}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "empty size"),
            ("MB", "expected a number at `MB`"),
            ("-5MB", "a size cannot be negative"),
            (
                "1.5GB",
                "fractions are not supported; use a smaller unit (1536MiB, not 1.5GiB)",
            ),
            ("5 megs", "unknown unit `megs`"),
            ("99999999999 TB", "size too large"),
        ];
        for (text, err) in bad {
            assert_eq!(parse_size(text), Err(err.to_string()), "{text}");
        }
    }

    #[test]
    fn size_format_round_trips() {
        let cases: &[(u64, &str)] = &[
            (0, "0B"),
            (50_000_000, "50MB"),
            (10 << 20, "10MiB"),
            (1_000, "1kB"),
            (1_500, "1500B"),
        ];
        for (n, text) in cases {
            assert_eq!(format_size(*n), *text);
            assert_eq!(parse_size(text), Ok(*n));
        }
    }
}
