//! Exit codes: how each way a command can end maps to the process status, stable for
//! scripts and monitoring (the README's table).

/// The process exit codes, stable for scripts and monitoring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitStatus {
    Success = 0,
    /// Anything not covered below.
    Failure = 1,
    /// Bad command line or pipeline file.
    Config = 2,
    /// The snapshot was committed, but the source could not read everything (the
    /// artifacts' `incomplete` metadata says what is missing).
    Partial = 3,
    /// Another command holds a conflicting repository lock (after `--lock-wait`), or this
    /// one lost its lock.
    Locked = 4,
    /// Stored data failed a check: a digest, an authentication tag, a missing object.
    Integrity = 5,
    /// The passphrase or key file does not open the repository.
    WrongKey = 6,
    /// The sink could not be reached (connection refused, DNS, timeouts after retries).
    SinkUnreachable = 7,
    /// `runner check`: the newest snapshot is older than `max_age` (or there is none), or
    /// the repository is bigger than `warn_size`.
    Stale = 8,
    /// Interrupted (SIGINT/SIGTERM): aborted cleanly, no snapshot, lock released.
    Interrupted = 130,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The exit status for a failed run, restore or verify.
    pub fn of(error: &crate::pipeline::RunError) -> Self {
        use crate::engine::PluginError;
        use crate::engine::bindings::PluginErrorKind;
        use crate::pipeline::RunError;
        use crate::pipeline::chain::ChainError;
        use crate::repository::RepoError;
        match error {
            RunError::Config(_) | RunError::Usage(_) => ExitStatus::Config,
            RunError::Interrupted => ExitStatus::Interrupted,
            RunError::Lock(_) => ExitStatus::Locked,
            RunError::SinkUnreachable(_) => ExitStatus::SinkUnreachable,
            RunError::Repository(
                RepoError::WrongKey { .. }
                | RepoError::KeyRequired { .. }
                | RepoError::NotEncrypted { .. },
            ) => ExitStatus::WrongKey,
            RunError::Repository(RepoError::Corrupt { .. } | RepoError::Format { .. }) => {
                ExitStatus::Integrity
            }
            RunError::Repository(RepoError::Missing | RepoError::NoSnapshot(_)) => {
                ExitStatus::Config
            }
            RunError::Chain { source, .. } => match source {
                ChainError::Mismatch { .. }
                | ChainError::Missing { .. }
                | ChainError::ShortWrite { .. }
                | ChainError::NotStored { .. } => ExitStatus::Integrity,
                ChainError::Plugin {
                    source:
                        PluginError::Plugin {
                            error: PluginErrorKind::Corrupt(_),
                            ..
                        },
                    ..
                } => ExitStatus::Integrity,
                _ => ExitStatus::Failure,
            },
            _ => ExitStatus::Failure,
        }
    }
}
