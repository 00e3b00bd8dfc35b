//! `[pipeline] schedule`: when `runner daemon` runs a pipeline — a crontab expression read
//! in a time zone — and what becomes of the runs it missed while it was not running.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// What the daemon does at startup about scheduled times that passed since the last run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissedRuns {
    /// One catch-up run at once when at least one scheduled time passed since the last
    /// recorded run (or no run is recorded at all), however many were missed (anacron's way).
    #[default]
    RunOnce,
    /// Wait for the next scheduled time.
    Skip,
}

impl MissedRuns {
    pub const ALL: [(&'static str, MissedRuns); 2] = [
        ("run-once", MissedRuns::RunOnce),
        ("skip", MissedRuns::Skip),
    ];

    pub fn name(self) -> &'static str {
        match self {
            MissedRuns::RunOnce => "run-once",
            MissedRuns::Skip => "skip",
        }
    }
}

/// A validated schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// As written: "0 2 * * *", "@daily".
    pub expression: String,
    cron: Cron,
    pub time_zone: TimeZone,
    /// The zone's IANA name as written, or the system's.
    pub time_zone_name: String,
    pub missed: MissedRuns,
}

impl Schedule {
    /// A crontab expression: five fields (minute hour day-of-month month day-of-week, names
    /// such as MON and JAN allowed) or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
    /// Day of month and day of week combine as in Vixie cron: either one matching is enough.
    pub fn parse_expression(expression: &str) -> Result<Cron, String> {
        let trimmed = expression.trim();
        let fields = trimmed.split_whitespace().count();
        if !trimmed.starts_with('@') && fields != 5 {
            return Err(format!(
                "schedule \"{expression}\" has {fields} field(s); expected 5 as in a crontab: \
                 minute hour day-of-month month day-of-week (\"0 2 * * *\" is 02:00 daily), \
                 or @hourly, @daily, @weekly, @monthly, @yearly"
            ));
        }
        CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(trimmed)
            .map_err(|e| {
                format!(
                    "invalid schedule \"{expression}\": {e}; expected a crontab expression such as \"0 2 * * *\" or \"@daily\""
                )
            })
    }

    /// The named IANA zone (from the system's time zone database), or the system's own.
    pub fn time_zone(name: Option<&str>) -> Result<(TimeZone, String), String> {
        match name {
            Some(name) => TimeZone::get(name).map(|tz| (tz, name.to_string())).map_err(|e| {
                format!(
                    "unknown time zone \"{name}\" ({e}); expected an IANA name such as \"Europe/Berlin\" or \"UTC\" \
                     (read from /usr/share/zoneinfo: install the tzdata package if it is missing)"
                )
            }),
            None => {
                let tz = TimeZone::system();
                let name = tz.iana_name().unwrap_or("UTC").to_string();
                Ok((tz, name))
            }
        }
    }

    pub fn new(cron: Cron, expression: &str, zone: (TimeZone, String), missed: MissedRuns) -> Self {
        Schedule {
            expression: expression.trim().to_string(),
            cron,
            time_zone: zone.0,
            time_zone_name: zone.1,
            missed,
        }
    }

    /// The first scheduled time strictly after `after`. `None` only for an expression that
    /// never matches again (30 February).
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_next_occurrence(&after.to_zoned(self.time_zone.clone()), false)
            .ok()
            .map(|zoned| zoned.timestamp())
    }

    /// The last scheduled time at or before `at`.
    pub fn previous_at_or_before(&self, at: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_previous_occurrence(&at.to_zoned(self.time_zone.clone()), true)
            .ok()
            .map(|zoned| zoned.timestamp())
    }

    /// Whether a scheduled time passed after `last_run` and up to `now` (any time, when
    /// no run is recorded).
    pub fn missed_since(&self, last_run: Option<Timestamp>, now: Timestamp) -> bool {
        match (self.previous_at_or_before(now), last_run) {
            (Some(_), None) => true,
            (Some(previous), Some(last)) => previous > last,
            (None, _) => false,
        }
    }

    /// "0 2 * * * (Europe/Berlin)".
    pub fn describe(&self) -> String {
        format!("{} ({})", self.expression, self.time_zone_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(expression: &str, zone: &str) -> Schedule {
        let cron = Schedule::parse_expression(expression).unwrap();
        let zone = Schedule::time_zone(Some(zone)).unwrap();
        Schedule::new(cron, expression, zone, MissedRuns::RunOnce)
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn crontab_expressions_and_shortcuts() {
        let daily = schedule("0 2 * * *", "UTC");
        assert_eq!(
            daily.next_after(at("2026-11-22T10:00:00Z")),
            Some(at("2026-11-23T02:00:00Z"))
        );
        // Exactly at a scheduled time, the next one is the following day.
        assert_eq!(
            daily.next_after(at("2026-11-23T02:00:00Z")),
            Some(at("2026-11-24T02:00:00Z"))
        );
        let shortcut = schedule("@daily", "UTC");
        assert_eq!(
            shortcut.next_after(at("2026-11-22T10:00:00Z")),
            Some(at("2026-11-23T00:00:00Z"))
        );
        let weekly = schedule("30 4 * * SUN", "UTC");
        // 2026-11-22 is a Sunday.
        assert_eq!(
            weekly.next_after(at("2026-11-22T10:00:00Z")),
            Some(at("2026-11-29T04:30:00Z"))
        );
        let monthly = schedule("@monthly", "UTC");
        assert_eq!(
            monthly.next_after(at("2026-11-22T10:00:00Z")),
            Some(at("2026-12-01T00:00:00Z"))
        );
        // Vixie cron: day of month OR day of week. The 1st (a Tuesday) or any Friday.
        let either = schedule("0 0 1 * FRI", "UTC");
        assert_eq!(
            either.next_after(at("2026-11-22T10:00:00Z")),
            Some(at("2026-11-27T00:00:00Z"))
        );
        assert_eq!(
            either.next_after(at("2026-11-27T10:00:00Z")),
            Some(at("2026-12-01T00:00:00Z"))
        );
        let stepped = schedule("*/15 9-17 * * 1-5", "UTC");
        assert_eq!(
            stepped.next_after(at("2026-11-23T09:07:00Z")),
            Some(at("2026-11-23T09:15:00Z"))
        );
    }

    #[test]
    fn times_are_read_in_the_time_zone_across_daylight_saving() {
        let berlin = schedule("0 2 * * *", "Europe/Berlin");
        // Winter: 02:00 CET is 01:00 UTC.
        assert_eq!(
            berlin.next_after(at("2026-11-22T10:00:00Z")),
            Some(at("2026-11-23T01:00:00Z"))
        );
        // 2026-03-29: clocks go from 02:00 to 03:00; the 02:00 run happens once, at the
        // first instant after the gap (03:00 CEST, 01:00 UTC), not skipped.
        let spring = berlin.next_after(at("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(spring, at("2026-03-29T01:00:00Z"));
        assert_eq!(berlin.next_after(spring), Some(at("2026-03-30T00:00:00Z")));
        // 2026-10-25: 02:00-03:00 happens twice; the run happens once.
        let autumn = berlin.next_after(at("2026-10-24T12:00:00Z")).unwrap();
        let after = berlin.next_after(autumn).unwrap();
        assert!(after >= at("2026-10-26T00:00:00Z"), "{autumn} then {after}");
    }

    #[test]
    fn missed_runs_are_detected_since_the_last_run() {
        let daily = schedule("0 2 * * *", "UTC");
        let now = at("2026-11-22T10:00:00Z");
        assert!(daily.missed_since(None, now));
        assert!(daily.missed_since(Some(at("2026-11-21T02:00:00Z")), now));
        assert!(!daily.missed_since(Some(at("2026-11-22T02:00:00Z")), now));
        assert!(!daily.missed_since(Some(at("2026-11-22T03:00:00Z")), now));
    }

    #[test]
    fn bad_expressions_say_what_is_expected() {
        let six = Schedule::parse_expression("0 0 2 * * *").unwrap_err();
        assert!(six.contains("6 field(s); expected 5"), "{six}");
        let bad = Schedule::parse_expression("0 25 * * *").unwrap_err();
        assert!(bad.contains("invalid schedule \"0 25 * * *\""), "{bad}");
        let zone = Schedule::time_zone(Some("Mars/Olympus")).unwrap_err();
        assert!(
            zone.contains("unknown time zone \"Mars/Olympus\""),
            "{zone}"
        );
    }
}
