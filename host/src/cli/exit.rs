//! How a failed command is reported — the error chain, one cause a line — and with which
//! exit code ([`ExitStatus`]).

pub use crate::status::ExitStatus;

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
    let mut chain: Vec<String> = error.error.chain().map(|cause| cause.to_string()).collect();
    // An error whose message already ends with its cause's (`snapshot …: {source}`) would
    // print that cause twice.
    chain.dedup_by(|cause, shown| shown.ends_with(cause.as_str()));
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
