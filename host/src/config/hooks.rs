//! `[hooks]`: shell commands the host (never a plugin) runs around a backup, their timeout
//! and what a failing one does.

use std::time::Duration;

/// When a hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookPoint {
    /// Before the source is read; a failure with `on_error = "fail"` stops the run.
    Before,
    /// After the snapshot is committed.
    After,
    /// After a failed (or interrupted) run.
    OnFailure,
    /// Always, last.
    Finally,
}

impl HookPoint {
    pub fn name(self) -> &'static str {
        match self {
            HookPoint::Before => "before",
            HookPoint::After => "after",
            HookPoint::OnFailure => "on_failure",
            HookPoint::Finally => "finally",
        }
    }
}

/// What a failing hook (non-zero exit, killed at its timeout) does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnHookError {
    /// The run fails (a failing `before` stops it before the source is read).
    #[default]
    Fail,
    /// Logged as a warning; the run's outcome stands.
    Warn,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HooksConfig {
    pub before: Option<String>,
    pub after: Option<String>,
    pub on_failure: Option<String>,
    pub finally: Option<String>,
    /// Each hook is killed (with its process group) after this long.
    pub timeout: Duration,
    pub on_error: OnHookError,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            before: None,
            after: None,
            on_failure: None,
            finally: None,
            timeout: Duration::from_secs(300),
            on_error: OnHookError::Fail,
        }
    }
}

impl HooksConfig {
    pub fn command(&self, point: HookPoint) -> Option<&str> {
        match point {
            HookPoint::Before => self.before.as_deref(),
            HookPoint::After => self.after.as_deref(),
            HookPoint::OnFailure => self.on_failure.as_deref(),
            HookPoint::Finally => self.finally.as_deref(),
        }
    }
}
