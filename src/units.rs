//! Durations (`500ms`, `1h30m`, `1d`) and byte sizes (`1MiB`), as written in configuration files
//! and on the command line.

use std::time::Duration;

/// Parses a duration: one or more `<integer><unit>` parts, units `ms`, `s`, `m`, `h`, `d`
/// (e.g. `500ms`, `30s`, `1h30m`, `1d`). A bare number is refused: its unit would be a guess.
/// Something a person might write instead (`1.5h`, `30 s`, `5 minutes`) is refused with the
/// spelling to use (`1h30m`, `30s`, `5m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    strict_duration(s).map_err(|e| match suggest_duration(s) {
        Some((why, d)) => format!(
            "`{s}` is not a duration worker reads ({why}): write `{}`",
            format_duration_spec(d)
        ),
        None => e,
    })
}

fn strict_duration(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err("empty duration (write e.g. `30s`, `5m`, `1h30m`)".into());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{s}` has no unit (write e.g. `{s}s` or `{s}m`)"));
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "`{s}` is not a duration (write e.g. `500ms`, `30s`, `5m`, `2h`, `1d`, `1h30m`)"
            ));
        }
        let n: u128 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{s}` is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms: u128 = match &rest[..unit_len] {
            "" => return Err(format!("`{s}`: the number at the end has no unit")),
            u => unit_ms(u)
                .ok_or_else(|| format!("`{s}`: unknown unit `{u}` (use ms, s, m, h or d)"))?,
        };
        rest = &rest[unit_len..];
        total = total.saturating_add(n.saturating_mul(unit_ms));
    }
    // Cap at a century: larger values are typos and would overflow timestamp arithmetic.
    const MAX_MS: u128 = 100 * 365 * 86_400_000;
    if total > MAX_MS {
        return Err(format!("`{s}` is longer than a hundred years"));
    }
    Ok(Duration::from_millis(total as u64))
}

/// Milliseconds in one of our units.
fn unit_ms(unit: &str) -> Option<u128> {
    Some(match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    })
}

/// Reads what a person may have meant — spaces, fractions, spelled-out units — and says what was
/// wrong with it. `None` when it is not a duration at all, or when it is already one.
fn suggest_duration(s: &str) -> Option<(String, Duration)> {
    let mut reasons: Vec<&str> = Vec::new();
    let mut total_ms = 0f64;
    let mut rest = s.trim();
    if rest.contains(char::is_whitespace) {
        reasons.push("no spaces inside a duration");
    }
    while !rest.is_empty() {
        rest = rest.trim_start();
        let num_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        let n: f64 = rest[..num_len].parse().ok()?;
        if rest[..num_len].contains('.') && !reasons.contains(&"no fractions") {
            reasons.push("no fractions");
        }
        rest = rest[num_len..].trim_start();
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = rest[..unit_len].to_ascii_lowercase();
        let canonical = match unit.as_str() {
            "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => "ms",
            "s" | "sec" | "secs" | "second" | "seconds" => "s",
            "m" | "min" | "mins" | "minute" | "minutes" => "m",
            "h" | "hr" | "hrs" | "hour" | "hours" => "h",
            "d" | "day" | "days" => "d",
            _ => return None,
        };
        if unit != canonical && !reasons.contains(&"units are ms, s, m, h and d") {
            reasons.push("units are ms, s, m, h and d");
        }
        total_ms += n * unit_ms(canonical)? as f64;
        rest = rest[unit_len..].trim_start_matches([',', ' ']);
    }
    if reasons.is_empty() || !total_ms.is_finite() || total_ms > 100.0 * 365.0 * 86_400_000.0 {
        return None;
    }
    Some((
        reasons.join("; "),
        Duration::from_millis(total_ms.round() as u64),
    ))
}

/// "1 problem", "2 problems".
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Formats a duration compactly for tables: `850ms`, `12.3s`, `4m05s`, `2h10m`, `3d4h`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1_000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1_000)
    } else if ms < 86_400_000 {
        format!("{}h{:02}m", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    } else {
        format!("{}d{}h", ms / 86_400_000, (ms % 86_400_000) / 3_600_000)
    }
}

/// Formats a duration the way it would be written in a configuration file (`1h30m`, `45s`).
pub fn format_duration_spec(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// Parses a byte size: a number with an optional unit `B`, `KB`/`KiB`, `MB`/`MiB`, `GB`/`GiB`
/// (both spellings are binary multiples: output limits are not a place for decimal surprises).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!(
            "`{s}` is not a size (write e.g. `512KiB`, `1MiB`, `64MiB`)"
        ));
    }
    let n: u64 = s[..digits]
        .parse()
        .map_err(|_| format!("`{s}` is too large"))?;
    let mult: u64 = match s[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        u => {
            return Err(format!(
                "`{s}`: unknown size unit `{u}` (use B, KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// Formats a byte size the way it would be written in a configuration file: the largest binary
/// unit that divides it (`512MiB`, `1536KiB`, `100B`).
pub fn format_size_spec(bytes: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_form() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("1m30s500ms").unwrap(),
            Duration::from_millis(90_500)
        );
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn refuses_ambiguous_or_malformed_input() {
        for bad in [
            "",
            "30",
            "5x",
            "m5",
            "1h 30m",
            "1.5h",
            "-5s",
            "5 s",
            "99999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} should be refused");
        }
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
    }

    /// What people write instead, and what they are told to write.
    #[test]
    fn near_misses_say_what_to_write() {
        for (bad, why, fix) in [
            ("1.5h", "no fractions", "`1h30m`"),
            ("30 s", "no spaces", "`30s`"),
            ("5 minutes", "units are ms, s, m, h and d", "`5m`"),
            ("2 hours 30 minutes", "no spaces", "`2h30m`"),
            ("1h 30m", "no spaces", "`1h30m`"),
            ("0.5s", "no fractions", "`500ms`"),
            ("90secs", "units are", "`1m30s`"),
            ("1 day", "units are", "`1d`"),
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.ends_with(&format!("write {fix}")), "{bad}: {e}");
        }
        assert!(
            parse_duration("5x")
                .unwrap_err()
                .contains("unknown unit `x`")
        );
        assert_eq!(count(1, "problem"), "1 problem");
        assert_eq!(count(2, "problem"), "2 problems");
    }

    #[test]
    fn formats() {
        assert_eq!(format_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(format_duration(Duration::from_millis(12_345)), "12.3s");
        assert_eq!(format_duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(format_duration(Duration::from_secs(7800)), "2h10m");
        assert_eq!(format_duration_spec(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration_spec(Duration::from_millis(1500)), "1s500ms");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("512 KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("1TB").is_err());
        assert!(parse_size("MiB").is_err());
        assert_eq!(format_size_spec(512 << 20), "512MiB");
        assert_eq!(format_size_spec(1536 << 10), "1536KiB");
        assert_eq!(format_size_spec(2 << 30), "2GiB");
        assert_eq!(format_size_spec(100), "100B");
        assert_eq!(format_size_spec(0), "0B");
    }

    proptest::proptest! {
        #[test]
        fn size_format_round_trips(n in 0u64..(1 << 40)) {
            proptest::prop_assert_eq!(parse_size(&format_size_spec(n)).unwrap(), n);
        }
    }

    proptest::proptest! {
        #[test]
        fn spec_format_round_trips(ms in 0u64..10_000_000_000) {
            let d = Duration::from_millis(ms);
            proptest::prop_assert_eq!(parse_duration(&format_duration_spec(d)).unwrap(), d);
        }
    }
}
