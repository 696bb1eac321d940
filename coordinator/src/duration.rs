//! Humane durations for the command line: `5s`, `500ms`, `1m30s`, `1.5s`;
//! and longer spans for retention policies (`7d`, `2w`) with [`parse_span`].

use std::time::Duration;

/// The longest duration accepted (a day): anything longer is a typo.
pub const MAX: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest span [`parse_span`] accepts (ten years of days).
pub const SPAN_MAX: Duration = Duration::from_secs(3650 * 24 * 60 * 60);

const UNITS: &str = "ms, s, m, h";
const SPAN_UNITS: &str = "ms, s, m, h, d, w";

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration: use e.g. 5s or 500ms")]
    Empty,
    #[error("{input:?} has no unit: use e.g. {input}s or {input}ms (units: ms, s, m, h)")]
    MissingUnit { input: String },
    #[error("{input:?}: unknown unit {unit:?} (units: {units})")]
    UnknownUnit {
        input: String,
        unit: String,
        units: &'static str,
    },
    #[error("{input:?} is not a duration: use e.g. 5s, 500ms or 1m30s")]
    Malformed { input: String },
    #[error("{input:?} is zero: use a positive duration such as 5s")]
    Zero { input: String },
    #[error("{input:?} is longer than {max}")]
    TooLong { input: String, max: &'static str },
}

/// Parses a sequence of `<number><unit>` terms (`1m30s`); the number may
/// have a fraction (`1.5s`). Units: `ms`, `s`, `m`, `h`. Zero is refused.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    parse_with(input, false)
}

/// Like [`parse`], also with days and weeks (`7d`, `2w`, `1d12h`), up to
/// [`SPAN_MAX`]: spans of time such as a retention policy's `keep_within`.
pub fn parse_span(input: &str) -> Result<Duration, DurationError> {
    parse_with(input, true)
}

fn parse_with(input: &str, long: bool) -> Result<Duration, DurationError> {
    let (max, max_text, units) = if long {
        (SPAN_MAX, "ten years", SPAN_UNITS)
    } else {
        (MAX, "a day", UNITS)
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed {
        input: input.to_string(),
    };
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num.matches('.').count() > 1 || num == "." {
            return Err(malformed());
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let scale = match unit {
            "" => {
                return Err(DurationError::MissingUnit {
                    input: input.to_string(),
                });
            }
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" if long => 86_400.0,
            "w" if long => 604_800.0,
            other => {
                return Err(DurationError::UnknownUnit {
                    input: input.to_string(),
                    unit: other.to_string(),
                    units,
                });
            }
        };
        let value: f64 = num.parse().map_err(|_| malformed())?;
        total += value * scale;
        rest = next;
    }
    if total > max.as_secs_f64() {
        return Err(DurationError::TooLong {
            input: input.to_string(),
            max: max_text,
        });
    }
    // Sub-millisecond remainders are noise at this scale.
    let duration = Duration::from_millis((total * 1000.0).round() as u64);
    if duration.is_zero() {
        return Err(DurationError::Zero {
            input: input.to_string(),
        });
    }
    Ok(duration)
}

/// Formats a duration the way [`parse`] reads it back: `5s`, `500ms`, `1m30s`.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    if !ms.is_multiple_of(1000) {
        return if ms < 1000 {
            format!("{ms}ms")
        } else {
            format!("{}s", d.as_secs_f64())
        };
    }
    let secs = ms / 1000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_humane_durations() {
        let cases = [
            ("5s", 5_000),
            ("500ms", 500),
            ("1m", 60_000),
            ("1m30s", 90_000),
            ("1.5s", 1_500),
            ("2h", 7_200_000),
            (" 10s ", 10_000),
            ("0.25s", 250),
        ];
        for (input, ms) in cases {
            assert_eq!(parse(input), Ok(Duration::from_millis(ms)), "{input}");
        }
    }

    #[test]
    fn refuses_nonsense_with_a_useful_error() {
        assert_eq!(parse(""), Err(DurationError::Empty));
        assert!(matches!(parse("5"), Err(DurationError::MissingUnit { .. })));
        assert!(matches!(parse("5d"), Err(DurationError::UnknownUnit { .. })));
        assert!(matches!(parse("5 s"), Err(DurationError::UnknownUnit { .. })));
        assert!(matches!(parse("s"), Err(DurationError::Malformed { .. })));
        assert!(matches!(parse("1..5s"), Err(DurationError::Malformed { .. })));
        assert!(matches!(parse("-5s"), Err(DurationError::Malformed { .. })));
        assert!(matches!(parse("0s"), Err(DurationError::Zero { .. })));
        assert!(matches!(parse("0.0001s"), Err(DurationError::Zero { .. })));
        assert!(matches!(parse("25h"), Err(DurationError::TooLong { .. })));
        assert!(parse("5").expect_err("no unit").to_string().contains("5s"));
    }

    #[test]
    fn spans_take_days_and_weeks() {
        assert_eq!(parse_span("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_span("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_span("1d12h"), Ok(Duration::from_secs(36 * 3_600)));
        assert_eq!(parse_span("90m"), Ok(Duration::from_secs(5_400)));
        let err = parse_span("1y").expect_err("no years");
        assert!(err.to_string().contains("d, w"), "{err}");
        assert!(matches!(parse_span("4000d"), Err(DurationError::TooLong { .. })));
        assert!(matches!(parse_span("0d"), Err(DurationError::Zero { .. })));
        // The command line's durations stay below a day, without days.
        assert!(matches!(parse("1d"), Err(DurationError::UnknownUnit { .. })));
    }

    #[test]
    fn formats_round_trip() {
        for input in ["5s", "500ms", "1m30s", "2h", "1.5s", "1h1m1s"] {
            let d = parse(input).expect(input);
            assert_eq!(format(d), input);
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
