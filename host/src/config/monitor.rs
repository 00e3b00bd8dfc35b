//! What watching a pipeline needs from its file: `[monitor]` (staleness, size warning,
//! metrics file) and `[[notify]]` (who hears about failures, successes, staleness).

use std::path::PathBuf;
use std::time::Duration;

use super::secret::SecretValueRef;

/// `[monitor]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MonitorConfig {
    /// The newest snapshot may be at most this old; older is "stale".
    pub max_age: Option<Duration>,
    /// Warn (and `runner check` fails) when the repository stores more than this.
    pub warn_size: Option<u64>,
    /// A node-exporter textfile `runner run` rewrites with this pipeline's metrics.
    pub metrics_file: Option<PathBuf>,
}

/// The events a notification can be sent for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyOn {
    Failure,
    Success,
    Stale,
}

impl NotifyOn {
    pub const ALL: [(&'static str, NotifyOn); 3] = [
        ("failure", NotifyOn::Failure),
        ("success", NotifyOn::Success),
        ("stale", NotifyOn::Stale),
    ];

    pub fn name(self) -> &'static str {
        match self {
            NotifyOn::Failure => "failure",
            NotifyOn::Success => "success",
            NotifyOn::Stale => "stale",
        }
    }
}

/// Where a notification goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotifyTarget {
    /// A JSON POST (Slack-compatible `text` plus the whole event); the URL may hold a
    /// token, so it is a secret reference.
    Webhook { url: SecretValueRef },
    /// `/bin/sh -c COMMAND` with the event JSON on stdin.
    Command { command: String },
}

/// One `[[notify]]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyConfig {
    pub target: NotifyTarget,
    pub on: Vec<NotifyOn>,
    /// Per attempt.
    pub timeout: Duration,
    /// Attempts after the first, with exponential backoff.
    pub retries: u32,
}

impl NotifyConfig {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_RETRIES: u32 = 3;
}
