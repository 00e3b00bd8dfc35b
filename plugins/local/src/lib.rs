//! The `local` sink: objects in a directory on this machine, written through the host's
//! storage service (atomic: a temporary file renamed into place on close).
//!
//! The host opens the storage from this stage's `path`; the plugin never touches the file
//! system itself.

use runner_sdk::storage::HostStorageSink;
use runner_sdk::{Plugin, Result};
use serde::Deserialize;

/// The options the host reads; listed so a misspelt key fails validation here too.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Config {
    path: String,
}

struct Local;

impl Plugin for Local {
    const NAME: &'static str = "local";
    const DESCRIPTION: &'static str = "a directory on this machine (atomic writes)";
    type Config = Config;

    fn new(_: Config) -> Result<Self> {
        Ok(Local)
    }
}

impl HostStorageSink for Local {}

runner_sdk::export_sink!(Local);
