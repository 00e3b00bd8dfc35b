//! The `s3` sink: objects in an S3 bucket (AWS, MinIO, any S3-compatible server), written
//! through the host's storage service.
//!
//! The host opens the bucket from this stage's table and holds the credentials; the plugin
//! receives the options with secret references as written, never their values.

use runner_sdk::storage::HostStorageSink;
use runner_sdk::{Plugin, Result};

struct S3;

impl Plugin for S3 {
    const NAME: &'static str = "s3";
    const DESCRIPTION: &'static str =
        "an S3 bucket: AWS, MinIO or any S3-compatible server (multipart, retries)";
    // The host parses and checks every option (pipelines/s3.toml documents them).
    type Config = serde::de::IgnoredAny;

    fn new(_: Self::Config) -> Result<Self> {
        Ok(S3)
    }
}

impl HostStorageSink for S3 {}

runner_sdk::export_sink!(S3);
