//! The `s3` sink's storage: AWS S3, MinIO or any S3-compatible server, through OpenDAL.

use serde::Deserialize;

use super::OptionError;
use super::http::{self, RetryPolicy};
use crate::capabilities::Storage;
use crate::capabilities::storage::{Reachability, StorageOptions};
use crate::config::parse_size;
use std::sync::Arc;

/// Parts of multipart uploads; an object's memory is `part_size * concurrency` at most.
const DEFAULT_PART_SIZE: &str = "5MiB";
/// S3 takes parts of at least 5 MiB (all but the last).
const MIN_PART_SIZE: u64 = 5 << 20;

/// The `[sink]` table of `plugin = "s3"`; see pipelines/s3.toml for each option.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct S3Options {
    bucket: String,
    #[serde(default)]
    prefix: String,
    region: Option<String>,
    endpoint: Option<String>,
    addressing: Option<Addressing>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    profile: Option<String>,
    server_side_encryption: Option<String>,
    sse_kms_key_id: Option<String>,
    storage_class: Option<String>,
    #[serde(default = "yes")]
    conditional_writes: bool,
    part_size: Option<String>,
    concurrency: Option<usize>,
    retries: Option<usize>,
    timeout: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum Addressing {
    /// `https://endpoint/bucket/key` (MinIO and most S3-compatible servers).
    Path,
    /// `https://bucket.endpoint/key` (AWS's default).
    VirtualHost,
}

fn yes() -> bool {
    true
}

pub(super) fn open(o: S3Options) -> Result<Storage, OptionError> {
    if o.bucket.is_empty() {
        return Err(OptionError::new("bucket", "`bucket` must not be empty"));
    }
    let mut b = opendal::services::S3::default()
        .bucket(&o.bucket)
        .root(&format!("/{}", o.prefix.trim_matches('/')))
        .region(o.region.as_deref().unwrap_or("us-east-1"));
    if let Some(endpoint) = &o.endpoint {
        url::Url::parse(endpoint)
            .map_err(|e| OptionError::new("endpoint", format!("`endpoint` is not a URL: {e}")))?;
        b = b.endpoint(endpoint);
    }
    // Custom endpoints (MinIO, Ceph, …) usually want path style; AWS wants virtual hosts.
    let addressing = o.addressing.unwrap_or(if o.endpoint.is_some() {
        Addressing::Path
    } else {
        Addressing::VirtualHost
    });
    if addressing == Addressing::VirtualHost {
        b = b.enable_virtual_host_style();
    }
    match (&o.access_key_id, &o.secret_access_key) {
        (Some(id), Some(secret)) => b = b.access_key_id(id).secret_access_key(secret),
        (None, None) => {} // the AWS environment / profile / instance chain
        (Some(_), None) => {
            return Err(OptionError::new(
                "access_key_id",
                "`access_key_id` needs `secret_access_key` too",
            ));
        }
        (None, Some(_)) => {
            return Err(OptionError::new(
                "secret_access_key",
                "`secret_access_key` needs `access_key_id` too",
            ));
        }
    }
    if let Some(token) = &o.session_token {
        b = b.session_token(token);
    }
    if let Some(profile) = &o.profile {
        b = b.profile(profile);
    }
    match (o.server_side_encryption.as_deref(), &o.sse_kms_key_id) {
        (None, None) => {}
        (Some("AES256"), None) => b = b.server_side_encryption_with_s3_key(),
        (Some("aws:kms"), None) => b = b.server_side_encryption_with_aws_managed_kms_key(),
        (Some("aws:kms"), Some(key)) => {
            b = b.server_side_encryption_with_customer_managed_kms_key(key)
        }
        (_, Some(_)) => {
            return Err(OptionError::new(
                "sse_kms_key_id",
                "`sse_kms_key_id` needs server_side_encryption = \"aws:kms\"",
            ));
        }
        (Some(other), None) => {
            return Err(OptionError::new(
                "server_side_encryption",
                format!("server_side_encryption {other:?}: expected \"AES256\" or \"aws:kms\""),
            ));
        }
    }
    if let Some(class) = &o.storage_class {
        b = b.default_storage_class(class);
    }
    let part_size = parse_size(o.part_size.as_deref().unwrap_or(DEFAULT_PART_SIZE))
        .map_err(|e| OptionError::new("part_size", format!("part_size: {e}")))?;
    if part_size < MIN_PART_SIZE {
        return Err(OptionError::new(
            "part_size",
            "part_size must be at least 5MiB (S3's smallest multipart part)",
        ));
    }
    let policy = RetryPolicy::from_options(o.retries, o.timeout.as_deref())?;
    let reachability = Arc::new(Reachability::default());
    let operator = http::operator(
        b,
        "s3",
        &policy,
        None,
        s3_slow_down,
        http::GoogleRequests::default(),
        reachability.clone(),
    )
    .map_err(|e| OptionError::new("", format!("cannot open S3 storage: {e}")))?;
    Ok(Storage::new(
        operator,
        StorageOptions {
            max_object_size: None,
            part_size: Some(part_size as usize),
            concurrent_parts: o.concurrency.unwrap_or(1).max(1),
            if_absent_by_stat: !o.conditional_writes,
            reachability: Some(reachability),
        },
        format!(
            "s3 bucket {}{}",
            o.bucket,
            if o.prefix.is_empty() {
                String::new()
            } else {
                format!(" prefix {}", o.prefix)
            }
        ),
    ))
}

/// S3 throttles with 503 SlowDown, which OpenDAL already retries; a 429 from a proxy too.
fn s3_slow_down(status: ::http::StatusCode, _body: &[u8]) -> bool {
    status == ::http::StatusCode::TOO_MANY_REQUESTS
}
