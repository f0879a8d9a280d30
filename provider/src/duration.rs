//! Durations as Terraform users write them in `timeouts` blocks: a sequence of decimal numbers
//! with a unit, `45s`, `10m`, `1h30m`, `1.5h` (units `ms`, `s`, `m`, `h`).

use std::time::Duration;

/// Parses a positive duration; the error says what is accepted.
pub fn parse(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration; use a number with a unit, e.g. \"30s\", \"10m\", \"1h30m\"");
    let text = s.trim();
    if text.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    if total <= 0.0 || total.is_nan() || !total.is_finite() || total > 366.0 * 86400.0 {
        return Err(format!("`{s}` is not a usable duration; it must be more than zero and at most a year"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// `1h2m3s` style, for messages.
pub fn show(d: Duration) -> String {
    let total = d.as_secs();
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        if out.is_empty() && d.subsec_millis() > 0 && total == 0 {
            return format!("{}ms", d.subsec_millis());
        }
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        assert_eq!(parse("45s").unwrap(), Duration::from_secs(45));
        assert_eq!(parse("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        for bad in ["", "10", "ten minutes", "10x", "-5m", "0s", "m", "1h 30m"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shows_durations() {
        assert_eq!(show(Duration::from_secs(5400)), "1h30m");
        assert_eq!(show(Duration::from_secs(45)), "45s");
        assert_eq!(show(Duration::from_millis(500)), "500ms");
    }
}
