//! The retention policy: which snapshots a `[retention]` table keeps and why — restic's
//! `forget` rules (as restic 0.14, Debian 12's, applies them), then the size budget.
//!
//! Snapshots are walked newest first. `keep_last` keeps the newest n; `keep_hourly`,
//! `keep_daily`, `keep_weekly` (ISO weeks), `keep_monthly` and `keep_yearly` keep the newest
//! snapshot of each of the newest n hours/days/… that have one; `keep_within` keeps every
//! snapshot newer than the newest one (ignoring any in the future) minus the span, the span
//! subtracted field by field as Go's `AddDate` does; `keep_tag` keeps every snapshot holding
//! all tags of one entry. A snapshot kept by any rule stays, with every rule that kept it.
//!
//! Calendar fields (hour, day, week, …) are read in the time zone the caller passes: restic
//! reads them in the zone recorded with each snapshot, which is the backup host's local zone;
//! runner records UTC instants and uses the prune host's local zone (`TZ`), so runs of one
//! host bucket exactly as restic buckets them.
//!
//! `max_total_size` then walks the kept snapshots newest first, adding their stored bytes:
//! from the first snapshot that takes the total over the budget, that one and every older
//! kept snapshot go. The newest kept snapshot always stays, even alone over the budget.

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, civil};

use crate::config::{CalendarSpan, Retention};

/// One snapshot the policy decides on.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub time: Timestamp,
    pub tags: Vec<String>,
    /// Bytes its objects take on the sink (the manifest's stored sizes).
    pub stored_bytes: u64,
}

/// Why a snapshot is kept; displayed in restic's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
    Within(CalendarSpan),
    Tags(Vec<String>),
    /// Only `max_total_size` is set: every snapshot is kept by the rules (restic's "policy
    /// is empty"), the budget alone decides.
    NoKeepRule,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Last => f.write_str("last snapshot"),
            Reason::Hourly => f.write_str("hourly snapshot"),
            Reason::Daily => f.write_str("daily snapshot"),
            Reason::Weekly => f.write_str("weekly snapshot"),
            Reason::Monthly => f.write_str("monthly snapshot"),
            Reason::Yearly => f.write_str("yearly snapshot"),
            Reason::Within(span) => write!(f, "within {span}"),
            Reason::Tags(tags) => write!(f, "has tags [{}]", tags.join(", ")),
            Reason::NoKeepRule => f.write_str("no keep rule"),
        }
    }
}

/// The policy's verdict on one snapshot.
#[derive(Debug, Clone)]
pub struct Decision {
    pub snapshot: Candidate,
    /// The rules that keep it (empty: no rule does).
    pub kept_by: Vec<Reason>,
    /// Kept by a rule, but older than the first snapshot over `max_total_size`.
    pub over_budget: bool,
}

impl Decision {
    pub fn keep(&self) -> bool {
        !self.kept_by.is_empty() && !self.over_budget
    }
}

/// Decides on every snapshot, newest first. `zone` is where hours, days, weeks, months and
/// years are counted; `now` excludes snapshots from the future as the `keep_within` anchor.
pub fn apply(
    policy: &Retention,
    mut snapshots: Vec<Candidate>,
    zone: &TimeZone,
    now: Timestamp,
) -> Vec<Decision> {
    // Newest first; equal times in a fixed order, so the result does not depend on listing order.
    snapshots.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.id.cmp(&b.id)));
    let mut decisions: Vec<Decision> = snapshots
        .into_iter()
        .map(|snapshot| Decision {
            snapshot,
            kept_by: Vec::new(),
            over_budget: false,
        })
        .collect();

    if !policy.has_keep_rules() {
        for decision in &mut decisions {
            decision.kept_by.push(Reason::NoKeepRule);
        }
    } else {
        apply_keep_rules(policy, &mut decisions, zone, now);
    }
    if let Some(budget) = policy.max_total_size {
        apply_budget(budget, &mut decisions);
    }
    decisions
}

/// The calendar bucket a time falls in, for one `keep_*` count rule.
type Bucket = fn(&civil::DateTime, usize) -> i64;

fn apply_keep_rules(
    policy: &Retention,
    decisions: &mut [Decision],
    zone: &TimeZone,
    now: Timestamp,
) {
    let hour: Bucket = |t, _| ymd(t) * 100 + i64::from(t.hour());
    let day: Bucket = |t, _| ymd(t);
    let week: Bucket = |t, _| {
        let week = t.date().iso_week_date();
        i64::from(week.year()) * 100 + i64::from(week.week())
    };
    let month: Bucket = |t, _| i64::from(t.year()) * 100 + i64::from(t.month());
    let year: Bucket = |t, _| i64::from(t.year());
    // `keep_last` counts snapshots: every one is its own bucket.
    let each: Bucket = |_, index| index as i64;
    let mut counters: [(u32, Bucket, Option<i64>, Reason); 6] = [
        (policy.keep_last, each, None, Reason::Last),
        (policy.keep_hourly, hour, None, Reason::Hourly),
        (policy.keep_daily, day, None, Reason::Daily),
        (policy.keep_weekly, week, None, Reason::Weekly),
        (policy.keep_monthly, month, None, Reason::Monthly),
        (policy.keep_yearly, year, None, Reason::Yearly),
    ];
    let within_after = policy.keep_within.map(|span| {
        let newest_past = decisions
            .iter()
            .map(|d| d.snapshot.time)
            .filter(|t| *t < now)
            .max()
            // restic starts from Go's zero time when every snapshot is in the future.
            .unwrap_or_else(|| {
                civil::date(1, 1, 1)
                    .at(0, 0, 0, 0)
                    .to_zoned(TimeZone::UTC)
                    .expect("year 1 is representable")
                    .timestamp()
            });
        (span, subtract_span(newest_past, span, zone))
    });

    for (index, decision) in decisions.iter_mut().enumerate() {
        let time = decision.snapshot.time;
        let local = time.to_zoned(zone.clone()).datetime();
        for tags in &policy.keep_tag {
            if tags.iter().all(|tag| decision.snapshot.tags.contains(tag)) {
                decision.kept_by.push(Reason::Tags(tags.clone()));
            }
        }
        if let Some((span, after)) = within_after
            && time > after
        {
            decision.kept_by.push(Reason::Within(span));
        }
        for (left, bucket, last, reason) in &mut counters {
            if *left == 0 {
                continue;
            }
            let value = bucket(&local, index);
            if *last != Some(value) {
                *last = Some(value);
                *left -= 1;
                decision.kept_by.push(reason.clone());
            }
        }
    }
}

fn ymd(t: &civil::DateTime) -> i64 {
    i64::from(t.year()) * 10_000 + i64::from(t.month()) * 100 + i64::from(t.day())
}

/// `time` minus `span` as Go computes `t.AddDate(-years, -months, -days).Add(-hours)`:
/// years, months and days subtracted from the civil date in `zone` and the result
/// normalized (31 March minus one month is 3 March, not 28 February), then the hours as
/// elapsed time. Out of the representable range, the earliest instant.
fn subtract_span(time: Timestamp, span: CalendarSpan, zone: &TimeZone) -> Timestamp {
    let compute = || -> Option<Timestamp> {
        let local = time.to_zoned(zone.clone()).datetime();
        let months = i64::from(local.year()) * 12 + i64::from(local.month())
            - 1
            - i64::from(span.years) * 12
            - i64::from(span.months);
        let year = i16::try_from(months.div_euclid(12)).ok()?;
        let month = i8::try_from(months.rem_euclid(12) + 1).ok()?;
        let first = civil::Date::new(year, month, 1).ok()?;
        let days = i64::from(local.day()) - 1 - i64::from(span.days);
        let date = first.checked_add(days.days()).ok()?;
        let shifted = date.to_datetime(local.time());
        let zoned = zone.to_ambiguous_zoned(shifted).compatible().ok()?;
        zoned
            .timestamp()
            .checked_sub(i64::from(span.hours).hours())
            .ok()
    };
    compute().unwrap_or(Timestamp::MIN)
}

fn apply_budget(budget: u64, decisions: &mut [Decision]) {
    let mut total = 0u64;
    let mut over = false;
    let mut newest = true;
    for decision in decisions.iter_mut().filter(|d| !d.kept_by.is_empty()) {
        total = total.saturating_add(decision.snapshot.stored_bytes);
        over |= !newest && total > budget;
        decision.over_budget = over;
        newest = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        format!("{text}Z").replace(' ', "T").parse().unwrap()
    }

    fn candidates(times: &[&str]) -> Vec<Candidate> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| Candidate {
                id: format!("{i:02}"),
                time: at(t),
                tags: Vec::new(),
                stored_bytes: 100,
            })
            .collect()
    }

    fn kept(policy: &Retention, snapshots: Vec<Candidate>) -> Vec<String> {
        apply(policy, snapshots, &TimeZone::UTC, at("2030-01-01 00:00:00"))
            .into_iter()
            .filter(Decision::keep)
            .map(|d| d.snapshot.id)
            .collect()
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day_with_its_reasons() {
        let snapshots = candidates(&[
            "2025-01-01 01:00:00",
            "2025-01-01 23:00:00",
            "2025-01-02 12:00:00",
            "2025-01-03 00:30:00",
            "2025-01-03 08:00:00",
        ]);
        let policy = Retention {
            keep_daily: 2,
            keep_last: 1,
            ..Retention::default()
        };
        let decisions = apply(
            &policy,
            snapshots,
            &TimeZone::UTC,
            at("2030-01-01 00:00:00"),
        );
        let reasons: Vec<(String, Vec<String>)> = decisions
            .iter()
            .map(|d| {
                let reasons = d.kept_by.iter().map(ToString::to_string).collect();
                (d.snapshot.id.clone(), reasons)
            })
            .collect();
        assert_eq!(
            reasons,
            [
                (
                    "04".into(),
                    vec!["last snapshot".into(), "daily snapshot".into()]
                ),
                ("03".into(), vec![]),
                ("02".into(), vec!["daily snapshot".to_string()]),
                ("01".into(), vec![]),
                ("00".into(), vec![]),
            ]
        );
    }

    #[test]
    fn days_are_counted_in_the_given_zone() {
        // 23:30 UTC on the 1st and 00:30 UTC on the 2nd are one day in UTC-05:00.
        let snapshots = candidates(&["2025-01-01 23:30:00", "2025-01-02 00:30:00"]);
        let policy = Retention {
            keep_daily: 5,
            ..Retention::default()
        };
        let zone = TimeZone::fixed(jiff::tz::offset(-5));
        let in_zone: Vec<String> =
            apply(&policy, snapshots.clone(), &zone, at("2030-01-01 00:00:00"))
                .into_iter()
                .filter(Decision::keep)
                .map(|d| d.snapshot.id)
                .collect();
        assert_eq!(in_zone, ["01"]);
        assert_eq!(kept(&policy, snapshots), ["01", "00"]);
    }

    #[test]
    fn within_subtracts_calendar_fields_like_go() {
        // 31 March minus one month is "31 February", normalized to 3 March (2025 is not a
        // leap year): a snapshot on 2 March is outside, one on 4 March inside.
        let snapshots = candidates(&[
            "2025-03-02 12:00:00",
            "2025-03-03 12:00:00",
            "2025-03-04 12:00:00",
            "2025-03-31 12:00:00",
        ]);
        let policy = Retention {
            keep_within: Some(crate::config::parse_calendar_span("1m").unwrap()),
            ..Retention::default()
        };
        // Strictly after the limit: 3 March 12:00 itself goes.
        assert_eq!(kept(&policy, snapshots), ["03", "02"]);
    }

    #[test]
    fn within_ignores_snapshots_from_the_future_as_anchor() {
        let snapshots = candidates(&[
            "2029-12-01 00:00:00",
            "2029-12-30 00:00:00",
            "2031-01-01 00:00:00",
        ]);
        let policy = Retention {
            keep_within: Some(crate::config::parse_calendar_span("2d").unwrap()),
            ..Retention::default()
        };
        assert_eq!(kept(&policy, snapshots), ["02", "01"]);
    }

    #[test]
    fn tags_need_every_tag_of_one_entry() {
        let mut snapshots = candidates(&[
            "2025-01-01 00:00:00",
            "2025-01-02 00:00:00",
            "2025-01-03 00:00:00",
        ]);
        snapshots[0].tags = vec!["a".into(), "b".into()];
        snapshots[1].tags = vec!["a".into()];
        snapshots[2].tags = vec!["c".into()];
        let policy = Retention {
            keep_tag: vec![vec!["a".into(), "b".into()], vec!["c".into()]],
            ..Retention::default()
        };
        assert_eq!(kept(&policy, snapshots), ["02", "00"]);
    }

    #[test]
    fn budget_cuts_the_oldest_and_never_the_newest() {
        let mut snapshots = candidates(&[
            "2025-01-01 00:00:00",
            "2025-01-02 00:00:00",
            "2025-01-03 00:00:00",
            "2025-01-04 00:00:00",
        ]);
        snapshots[0].stored_bytes = 10; // would fit, but is older than the first over budget
        let policy = Retention {
            max_total_size: Some(250),
            ..Retention::default()
        };
        assert_eq!(kept(&policy, snapshots.clone()), ["03", "02"]);
        let tiny = Retention {
            max_total_size: Some(1),
            ..Retention::default()
        };
        assert_eq!(kept(&tiny, snapshots.clone()), ["03"]);
        // On top of the keep rules: only kept snapshots count.
        let daily = Retention {
            keep_last: 2,
            keep_tag: vec![vec!["x".into()]],
            max_total_size: Some(150),
            ..Retention::default()
        };
        snapshots[0].tags = vec!["x".into()];
        snapshots[0].stored_bytes = 10;
        assert_eq!(kept(&daily, snapshots), ["03"]);
    }
}
