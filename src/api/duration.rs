//! Durations written the Kubernetes/Go way (`500ms`, `10s`, `5m`, `1h30m`).

use std::time::Duration;

/// The CEL rule the API server applies to every duration field; keep in step with [`parse_duration`].
pub const DURATION_RULE: &str =
    "self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) > duration('0s')";

/// The message shown when [`DURATION_RULE`] rejects a value.
pub const DURATION_MESSAGE: &str = "must be a positive duration such as 500ms, 10s, 5m or 1h30m";

/// Why a duration string could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {input:?}: {DURATION_MESSAGE}")]
pub struct DurationError {
    input: String,
}

/// Parses a positive duration made of `<number><unit>` parts, units `ms`, `s`, `m`, `h`.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = || DurationError {
        input: input.to_owned(),
    };
    let mut rest = input;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| err())?;
        rest = &rest[number_len..];
        let (unit_secs, unit_len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else {
            return Err(err());
        };
        total += number * unit_secs;
        rest = &rest[unit_len..];
    }
    if !(total > 0.0 && total.is_finite()) {
        return Err(err());
    }
    Ok(Duration::from_secs_f64(total))
}

/// Writes a duration the way [`parse_duration`] reads it: `500ms`, `3s`, `1m30s`, `2h`.
pub fn format_duration(d: Duration) -> String {
    let total_ms = d.as_millis();
    if total_ms < 1000 {
        return format!("{total_ms}ms");
    }
    let (h, rest) = (total_ms / 3_600_000, total_ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, ms) = (rest / 1000, rest % 1000);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || ms > 0 {
        if ms > 0 {
            out.push_str(&format!("{s}.{ms:03}s"));
        } else {
            out.push_str(&format!("{s}s"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        let cases = [
            ("500ms", 0.5),
            ("10s", 10.0),
            ("5m", 300.0),
            ("1h30m", 5400.0),
            ("1.5s", 1.5),
            ("2m30s", 150.0),
        ];
        for (input, secs) in cases {
            assert_eq!(
                parse_duration(input),
                Ok(Duration::from_secs_f64(secs)),
                "{input}"
            );
        }
    }

    #[test]
    fn formats_what_it_parses() {
        for (secs, text) in [
            (0.5, "500ms"),
            (3.0, "3s"),
            (90.0, "1m30s"),
            (7200.0, "2h"),
            (1.25, "1.250s"),
        ] {
            let d = Duration::from_secs_f64(secs);
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
    }

    #[test]
    fn rejects_what_the_api_server_rejects() {
        for input in ["", "-5s", "5", "s", "10 s", "1d", "0s", "1.2.3s", "5sm"] {
            assert!(
                parse_duration(input).is_err(),
                "{input:?} should be rejected"
            );
        }
    }
}
