//! The `gdrive` sink: objects in a Google Drive folder, written through the host's storage
//! service.
//!
//! The host opens the folder from this stage's table and holds the OAuth credentials; the
//! plugin receives the options with secret references as written, never their values.

use runner_sdk::storage::HostStorageSink;
use runner_sdk::{Plugin, Result};

struct Gdrive;

impl Plugin for Gdrive {
    const NAME: &'static str = "gdrive";
    const DESCRIPTION: &'static str =
        "a Google Drive folder (OAuth refresh token or service account; objects of at most 5 MiB)";
    // The host parses and checks every option (pipelines/gdrive.toml documents them).
    type Config = serde::de::IgnoredAny;

    fn new(_: Self::Config) -> Result<Self> {
        Ok(Gdrive)
    }
}

impl HostStorageSink for Gdrive {}

runner_sdk::export_sink!(Gdrive);
