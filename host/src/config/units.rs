//! Human-written quantities: byte sizes ("256MiB", "1.5GB") and durations ("30s", "5m", "1h30m").

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
}
