//! Why a plugin call failed: the plugin's own error, or a limit, a trap or a timeout.

use std::time::Duration;

use crate::engine::bindings::PluginErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot load plugin {plugin}: {reason}")]
    Load { plugin: String, reason: String },

    #[error("{plugin}: {call}: {}", crate::engine::bindings::describe(error))]
    Plugin {
        plugin: String,
        call: &'static str,
        error: PluginErrorKind,
    },

    #[error(
        "{plugin} exceeded its memory limit of {limit} bytes (in `{call}`); raise `limits.memory` for this stage if that is expected"
    )]
    MemoryLimit {
        plugin: String,
        call: &'static str,
        limit: u64,
    },

    #[error(
        "{plugin}: `{call}` did not return within the {limit_name} limit of {limit:?}; the plugin was stopped"
    )]
    Timeout {
        plugin: String,
        call: &'static str,
        limit_name: &'static str,
        limit: Duration,
    },

    #[error("{plugin}: `{call}` returned {size} bytes, more than the {limit} allowed in one call")]
    OversizedChunk {
        plugin: String,
        call: &'static str,
        size: u64,
        limit: u64,
    },

    #[error("{plugin} crashed in `{call}`: {trap}")]
    Trap {
        plugin: String,
        call: &'static str,
        trap: String,
    },

    #[error("{plugin} cannot be called after it failed earlier: {reason}")]
    Broken { plugin: String, reason: String },

    #[error("cannot start {plugin}: {reason}")]
    Instantiate { plugin: String, reason: String },
}

impl PluginError {
    /// The contract error a plugin returned, if that is what this is.
    pub fn plugin_error(&self) -> Option<&PluginErrorKind> {
        match self {
            PluginError::Plugin { error, .. } => Some(error),
            _ => None,
        }
    }
}
