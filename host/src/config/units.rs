//! Human-written quantities: byte sizes ("256MiB", "1.5GB"), durations ("30s", "5m", "1h30m")
//! points in time ("2026-11-20 02:00") and calendar spans ("1y6m", "30d": retention's
//! `keep_within`, restic's format).

use std::time::Duration;

/// Why a size or duration could not be read; the caller adds where it was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(String);

const SIZE_UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KB", 1000),
    ("MB", 1000 * 1000),
    ("GB", 1000 * 1000 * 1000),
    ("TB", 1000 * 1000 * 1000 * 1000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

const DURATION_UNITS: &[(&str, Duration)] = &[
    ("ms", Duration::from_millis(1)),
    ("s", Duration::from_secs(1)),
    ("m", Duration::from_secs(60)),
    ("h", Duration::from_secs(3600)),
    ("d", Duration::from_secs(86400)),
];

/// Parses a byte size: a number (decimals allowed) and a unit, e.g. "256MiB", "1.5 GB", "512B".
/// Units are matched without regard to case; "KB" is 1000 bytes and "KiB" 1024.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let expected = || {
        SIZE_UNITS
            .iter()
            .map(|(u, _)| *u)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(trimmed.len());
    let (number, unit) = (&trimmed[..split], trimmed[split..].trim());
    if number.is_empty() {
        return Err(UnitError(format!(
            "invalid size \"{text}\": expected a number and a unit, like \"256MiB\""
        )));
    }
    if unit.is_empty() {
        return Err(UnitError(format!(
            "size \"{text}\" has no unit; expected one of: {}",
            expected()
        )));
    }
    let Some(&(_, multiplier)) = SIZE_UNITS
        .iter()
        .find(|(u, _)| u.eq_ignore_ascii_case(unit))
    else {
        return Err(UnitError(format!(
            "unknown size unit \"{unit}\" in \"{text}\"; expected one of: {}",
            expected()
        )));
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = format!("{whole}{fraction}");
    let scale = 10u128.checked_pow(fraction.len() as u32);
    let scaled = digits
        .parse::<u128>()
        .ok()
        .zip(scale)
        .and_then(|(n, s)| Some((n.checked_mul(u128::from(multiplier))?, s)));
    let Some((scaled, scale)) = scaled.filter(|_| !whole.is_empty() && !fraction.contains('.'))
    else {
        return Err(UnitError(format!(
            "invalid number \"{number}\" in size \"{text}\""
        )));
    };
    if scaled % scale != 0 {
        return Err(UnitError(format!(
            "size \"{text}\" is not a whole number of bytes"
        )));
    }
    u64::try_from(scaled / scale).map_err(|_| UnitError(format!("size \"{text}\" is too large")))
}

/// Parses a duration: one or more integer-and-unit parts (ms, s, m, h, d), e.g. "30s", "1h30m", "1h 30 m".
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let expected = || {
        DURATION_UNITS
            .iter()
            .map(|(u, _)| *u)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(UnitError(
            "empty duration; expected a number and a unit, like \"30s\" or \"1h30m\"".into(),
        ));
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_start = rest.len() - rest[digits_end..].trim_start().len();
        let unit_end = rest[unit_start..]
            .find(|c: char| !c.is_ascii_alphabetic())
            .map_or(rest.len(), |i| unit_start + i);
        let (number, unit) = (&rest[..digits_end], &rest[unit_start..unit_end]);
        let Ok(number) = number.parse::<u32>() else {
            return Err(UnitError(format!(
                "invalid duration \"{text}\": expected a whole number before each unit, like \"1h30m\""
            )));
        };
        if unit.is_empty() {
            return Err(UnitError(format!(
                "duration \"{text}\" has a number without a unit; expected one of: {}",
                expected()
            )));
        }
        let Some(&(_, per_unit)) = DURATION_UNITS.iter().find(|(u, _)| *u == unit) else {
            return Err(UnitError(format!(
                "unknown duration unit \"{unit}\" in \"{text}\"; expected one of: {}",
                expected()
            )));
        };
        total = per_unit
            .checked_mul(number)
            .and_then(|part| total.checked_add(part))
            .ok_or_else(|| UnitError(format!("duration \"{text}\" is too long")))?;
        rest = rest[unit_end..].trim_start();
    }
    Ok(total)
}

/// Parses a point in time as operators write it on a command line: RFC 3339 with an offset
/// ("2026-11-20T02:00:00Z", "2026-11-20T02:00+01:00"), or a civil time in the system's time
/// zone (`TZ`): "2026-11-20 02:00", "2026-11-20 02:00:30", "2026-11-20T02:00". A date alone
/// means the end of that day, so "as of 2026-11-20" includes that day's snapshots.
pub fn parse_time(text: &str) -> Result<jiff::Timestamp, UnitError> {
    let text = text.trim();
    let invalid = || {
        UnitError(format!(
            "invalid time \"{text}\": expected \"YYYY-MM-DD HH:MM[:SS]\" (local time), \
             \"YYYY-MM-DD\" or RFC 3339 like \"2026-11-20T02:00:00Z\""
        ))
    };
    if let Ok(timestamp) = text.parse::<jiff::Timestamp>() {
        return Ok(timestamp);
    }
    let civil = if let Ok(date) = text.parse::<jiff::civil::Date>()
        && !text.contains([' ', 'T', ':'])
    {
        date.to_datetime(jiff::civil::Time::MAX)
    } else {
        text.replacen(' ', "T", 1)
            .parse::<jiff::civil::DateTime>()
            .map_err(|_| invalid())?
    };
    civil
        .to_zoned(jiff::tz::TimeZone::system())
        .map(|zoned| zoned.timestamp())
        .map_err(|e| UnitError(format!("invalid time \"{text}\": {e}")))
}

/// A span of calendar time in restic's `--keep-within` format: years, months, days and
/// hours, subtracted field by field from a date (so "1m" is one calendar month, not 30 days).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CalendarSpan {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl CalendarSpan {
    pub fn is_zero(&self) -> bool {
        *self == CalendarSpan::default()
    }
}

/// Written back the way restic prints it: "1y2m3d4h", zero fields left out.
impl std::fmt::Display for CalendarSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (value, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if value != 0 {
                write!(f, "{value}{unit}")?;
            }
        }
        Ok(())
    }
}

/// Parses a calendar span: integer-and-unit parts with y (years), m (months — not minutes),
/// d (days) and h (hours), each unit at most once, e.g. "30d", "1y6m", "2y3m4d5h".
pub fn parse_calendar_span(text: &str) -> Result<CalendarSpan, UnitError> {
    let mut span = CalendarSpan::default();
    let mut seen = String::new();
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(UnitError(
            "empty span; expected numbers with y (years), m (months), d (days) or h (hours), like \"30d\" or \"1y6m\"".into(),
        ));
    }
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let Ok(number) = rest[..digits_end].parse::<u32>() else {
            return Err(UnitError(format!(
                "invalid span \"{text}\": expected a whole number before each unit, like \"1y6m\""
            )));
        };
        let Some(unit) = rest[digits_end..].chars().next() else {
            return Err(UnitError(format!(
                "span \"{text}\" has a number without a unit; expected y (years), m (months), d (days) or h (hours)"
            )));
        };
        let field = match unit {
            'y' => &mut span.years,
            'm' => &mut span.months,
            'd' => &mut span.days,
            'h' => &mut span.hours,
            other => {
                return Err(UnitError(format!(
                    "unknown unit \"{other}\" in span \"{text}\"; expected y (years), m (months), d (days) or h (hours)"
                )));
            }
        };
        if seen.contains(unit) {
            return Err(UnitError(format!("span \"{text}\" gives \"{unit}\" twice")));
        }
        seen.push(unit);
        *field = number;
        rest = &rest[digits_end + unit.len_utf8()..];
    }
    Ok(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("4 MiB"), Ok(4 << 20));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("2kb"), Ok(2000));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("16TiB"), Ok(16 << 40));
        assert!(
            parse_size("256")
                .unwrap_err()
                .to_string()
                .contains("has no unit")
        );
        assert!(
            parse_size("12XB")
                .unwrap_err()
                .to_string()
                .contains("unknown size unit \"XB\"")
        );
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("1.2.3MiB").is_err());
        assert!(parse_size(".5MiB").is_err());
        assert!(
            parse_size("1.5B")
                .unwrap_err()
                .to_string()
                .contains("whole number of bytes")
        );
        assert!(
            parse_size("99999999999TiB")
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h 30m 15s"), Ok(Duration::from_secs(5415)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(
            parse_duration("30")
                .unwrap_err()
                .to_string()
                .contains("without a unit")
        );
        assert!(
            parse_duration("5 minutes")
                .unwrap_err()
                .to_string()
                .contains("unknown duration unit \"minutes\"")
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("1.5h").is_err());
    }

    #[test]
    fn times() {
        let utc = |text: &str| parse_time(text).map(|t| t.to_string());
        assert_eq!(utc("2026-11-20T02:00:00Z").unwrap(), "2026-11-20T02:00:00Z");
        assert_eq!(
            utc("2026-11-20T03:00:00+01:00").unwrap(),
            "2026-11-20T02:00:00Z"
        );
        // Civil times are local: compare against the same civil time in the system zone.
        let local = |text: &str| {
            text.parse::<jiff::civil::DateTime>()
                .unwrap()
                .to_zoned(jiff::tz::TimeZone::system())
                .unwrap()
                .timestamp()
        };
        assert_eq!(
            parse_time("2026-11-20 02:00").unwrap(),
            local("2026-11-20T02:00")
        );
        assert_eq!(
            parse_time("2026-11-20 02:00:30").unwrap(),
            local("2026-11-20T02:00:30")
        );
        assert_eq!(
            parse_time("2026-11-20").unwrap(),
            local("2026-11-20T23:59:59.999999999")
        );
        for bad in ["yesterday", "2026-13-01", "2026-11-20 25:00", ""] {
            assert!(
                parse_time(bad)
                    .unwrap_err()
                    .to_string()
                    .contains("invalid time"),
                "{bad}"
            );
        }
    }

    #[test]
    fn calendar_spans() {
        let span = |y, m, d, h| CalendarSpan {
            years: y,
            months: m,
            days: d,
            hours: h,
        };
        assert_eq!(parse_calendar_span("30d"), Ok(span(0, 0, 30, 0)));
        assert_eq!(parse_calendar_span("1y2m3d4h"), Ok(span(1, 2, 3, 4)));
        assert_eq!(parse_calendar_span(" 6m "), Ok(span(0, 6, 0, 0)));
        assert_eq!(
            parse_calendar_span("1y2m3d4h").unwrap().to_string(),
            "1y2m3d4h"
        );
        assert_eq!(parse_calendar_span("48h").unwrap().to_string(), "48h");
        for (bad, says) in [
            ("", "empty span"),
            ("30", "without a unit"),
            ("30s", "unknown unit \"s\""),
            ("1d2d", "twice"),
            ("-1d", "whole number"),
            ("d", "whole number"),
            ("1.5y", "unknown unit \".\""),
        ] {
            let error = parse_calendar_span(bad).unwrap_err().to_string();
            assert!(error.contains(says), "{bad:?}: {error}");
        }
    }
}
