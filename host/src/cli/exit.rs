//! Exit codes and how a failed command is reported: the error chain, one cause a line.

/// The process exit codes, stable for scripts and monitoring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitStatus {
    Success = 0,
    /// Anything not covered below.
    Failure = 1,
    /// Bad command line or pipeline file.
    Config = 2,
    /// Stored data failed a check: a digest, an authentication tag, a missing object.
    Integrity = 5,
    /// The passphrase or key file does not open the repository.
    WrongKey = 6,
}

impl ExitStatus {
    /// The exit status for a failed run, restore or verify.
    pub fn of(error: &crate::pipeline::RunError) -> Self {
        use crate::engine::PluginError;
        use crate::engine::bindings::PluginErrorKind;
        use crate::pipeline::RunError;
        use crate::pipeline::chain::ChainError;
        use crate::repository::RepoError;
        match error {
            RunError::Config(_) | RunError::Usage(_) => ExitStatus::Config,
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

impl From<crate::repository::RepoError> for CliError {
    fn from(error: crate::repository::RepoError) -> Self {
        crate::pipeline::RunError::from(error).into()
    }
}

impl From<crate::pipeline::RunError> for CliError {
    fn from(error: crate::pipeline::RunError) -> Self {
        CliError::new(ExitStatus::of(&error), error)
    }
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(status: ExitStatus) -> Self {
        std::process::ExitCode::from(status as u8)
    }
}

/// A failed command: what to print and which code to exit with.
#[derive(Debug)]
pub struct CliError {
    pub status: ExitStatus,
    pub error: anyhow::Error,
}

impl CliError {
    pub fn new(status: ExitStatus, error: impl Into<anyhow::Error>) -> Self {
        CliError {
            status,
            error: error.into(),
        }
    }

    pub fn config(error: impl Into<anyhow::Error>) -> Self {
        Self::new(ExitStatus::Config, error)
    }

    pub fn failure(error: impl Into<anyhow::Error>) -> Self {
        Self::new(ExitStatus::Failure, error)
    }
}

impl From<anyhow::Error> for CliError {
    fn from(error: anyhow::Error) -> Self {
        CliError::failure(error)
    }
}

impl From<crate::engine::PluginError> for CliError {
    fn from(error: crate::engine::PluginError) -> Self {
        CliError::failure(error)
    }
}

/// Prints the error (a JSON object with `--json`) and returns the exit code.
pub fn report(error: &CliError, globals: super::Globals) -> std::process::ExitCode {
    let chain: Vec<String> = error.error.chain().map(|cause| cause.to_string()).collect();
    if globals.json {
        let event = serde_json::json!({
            "event": "error",
            "exit_code": error.status as u8,
            "message": chain.first(),
            "causes": &chain[1.min(chain.len())..],
        });
        println!("{event}");
    } else {
        let mut lines = chain.iter();
        if let Some(first) = lines.next() {
            eprintln!("error: {first}");
        }
        for cause in lines {
            eprintln!("  caused by: {cause}");
        }
    }
    error.status.into()
}
