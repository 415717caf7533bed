//! Durations as people and Kubernetes write them: `30s`, `5m`, `1h30m`, `1.5h`, `500ms` (Go's
//! `time.ParseDuration` without signs, the grammar `spec.ttl` accepts), and ages rendered the way kubectl does.

use std::time::Duration;

/// Parses `1h30m`, `90s`, `1.5h`, `250ms`. Units: ns, us, ms, s, m, h. Refuses an empty string, a missing unit
/// and days (`1d`), like the apiserver does for `spec.ttl`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration: write it like 30s, 5m or 1h30m");
    if text.is_empty() {
        return Err(invalid());
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        if number_len == 0 {
            return Err(invalid());
        }
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        total += number * seconds_per_unit;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

/// An age the way `kubectl get` prints one: two significant units at most, coarser as it grows
/// (`45s`, `3m12s`, `17m`, `5h3m`, `20h`, `3d4h`, `12d`, `2y30d`).
pub fn human(duration: Duration) -> String {
    let s = duration.as_secs();
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        format!("{m}m{}s", s % 60).replace("m0s", "m")
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        format!("{h}h{}m", m % 60).replace("h0m", "h")
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        format!("{d}d{}h", h % 24).replace("d0h", "d")
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y{}d", d / 365, d % 365).replace("y0d", "y")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_spec_ttl_accepts() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn refuses_what_spec_ttl_refuses() {
        for bad in ["", "10", "1d", "h", "-5m", "5 m"] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn human_ages_match_kubectl() {
        let cases = [
            (5, "5s"),
            (119, "119s"),
            (192, "3m12s"),
            (180, "3m"),
            (1020, "17m"),
            (5 * 3600 + 180, "5h3m"),
            (20 * 3600, "20h"),
            (3 * 86_400 + 4 * 3600, "3d4h"),
            (12 * 86_400, "12d"),
        ];
        for (seconds, want) in cases {
            assert_eq!(human(Duration::from_secs(seconds)), want);
        }
    }
}
