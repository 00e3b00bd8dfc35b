//! The validated `[retention]` table: which snapshots `runner prune` keeps (restic's `forget` rules).

use super::units::CalendarSpan;

/// Keep rules, each as restic's `forget` flag of the same name; a snapshot kept by any rule
/// stays. Counts of zero are rules not given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    pub keep_last: u32,
    pub keep_hourly: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_yearly: u32,
    /// Every snapshot newer than the newest one minus this span.
    pub keep_within: Option<CalendarSpan>,
    /// Every snapshot holding all tags of any one entry (`"a,b"` in the file: both a and b).
    pub keep_tag: Vec<Vec<String>>,
    /// Applied after the keep rules: the oldest kept snapshots go while the kept ones store
    /// more than this many bytes; the newest snapshot always stays.
    pub max_total_size: Option<u64>,
    /// `runner run` prunes right after a committed snapshot.
    pub auto: bool,
}

impl Retention {
    /// Whether any keep rule is given (restic's "empty policy" keeps everything).
    pub fn has_keep_rules(&self) -> bool {
        [
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ]
        .iter()
        .any(|&count| count > 0)
            || self.keep_within.is_some()
            || !self.keep_tag.is_empty()
    }
}
