//! The `gdrive` sink's storage: a Google Drive folder through OpenDAL's Drive v3 service.

use serde::Deserialize;

use super::OptionError;
use super::google_auth::ServiceAccount;
use super::http::{self, EndpointOverride, RetryPolicy};
use crate::capabilities::Storage;
use crate::capabilities::storage::{Reachability, StorageOptions};
use std::sync::Arc;

/// OpenDAL uploads each object in one `uploadType=multipart` request, which Drive takes up to
/// 5 MB; the host cuts artifacts into objects below this.
pub const MAX_OBJECT_SIZE: u64 = 5 << 20;

/// The hosts OpenDAL's Drive service calls; `endpoint` replaces them.
const GOOGLE_HOSTS: &[&str] = &["www.googleapis.com", "oauth2.googleapis.com"];

/// The `[sink]` table of `plugin = "gdrive"`; see pipelines/gdrive.toml for each option.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GdriveOptions {
    /// Folder path from the root of My Drive ("/Backups/runner"); created when missing.
    folder: String,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    access_token: Option<String>,
    /// A service account's JSON key file (its content, by secret reference).
    service_account_key: Option<String>,
    /// Base URL standing in for Google's API hosts (a Drive-compatible proxy).
    endpoint: Option<String>,
    retries: Option<usize>,
    timeout: Option<String>,
}

pub(super) fn open(o: GdriveOptions) -> Result<Storage, OptionError> {
    let folder = o.folder.trim_matches('/');
    let mut b = opendal::services::Gdrive::default().root(&format!("/{folder}"));
    let mut service_account = None;
    match (&o.refresh_token, &o.access_token, &o.service_account_key) {
        (Some(refresh), None, None) => {
            let client_id = o.client_id.as_deref().ok_or_else(|| {
                OptionError::new(
                    "refresh_token",
                    "a refresh token needs `client_id` and `client_secret`",
                )
            })?;
            let client_secret = o.client_secret.as_deref().ok_or_else(|| {
                OptionError::new(
                    "refresh_token",
                    "a refresh token needs `client_id` and `client_secret`",
                )
            })?;
            b = b
                .refresh_token(refresh)
                .client_id(client_id)
                .client_secret(client_secret);
        }
        (None, Some(token), None) => b = b.access_token(token),
        (None, None, Some(key)) => {
            service_account = Some(std::sync::Arc::new(ServiceAccount::from_json(key)?));
            // OpenDAL signs with this placeholder; the transport replaces it with the
            // service account's current token on every API request.
            b = b.access_token("service-account");
        }
        (None, None, None) => {
            return Err(OptionError::new(
                "",
                "the gdrive sink needs credentials: `refresh_token` with `client_id` and `client_secret`, `service_account_key`, or a short-lived `access_token`",
            ));
        }
        _ => {
            return Err(OptionError::new(
                "",
                "set exactly one of `refresh_token` (with client_id, client_secret), `service_account_key` or `access_token`",
            ));
        }
    }
    let endpoint = match &o.endpoint {
        None => None,
        Some(text) => Some(EndpointOverride {
            hosts: GOOGLE_HOSTS,
            base: url::Url::parse(text).map_err(|e| {
                OptionError::new("endpoint", format!("`endpoint` is not a URL: {e}"))
            })?,
        }),
    };
    let policy = RetryPolicy::from_options(o.retries, o.timeout.as_deref())?;
    let reachability = Arc::new(Reachability::default());
    let operator = http::operator(
        b,
        "gdrive",
        &policy,
        endpoint,
        drive_rate_limited,
        service_account,
        reachability.clone(),
    )
    .map_err(|e| OptionError::new("", format!("cannot open Google Drive storage: {e}")))?;
    Ok(Storage::new(
        operator,
        StorageOptions {
            max_object_size: Some(MAX_OBJECT_SIZE),
            // OpenDAL sends a Drive object in one request: buffer it whole (it is small).
            part_size: Some(MAX_OBJECT_SIZE as usize),
            concurrent_parts: 1,
            // Drive has no conditional create; names are not unique there either.
            if_absent_by_stat: true,
            reachability: Some(reachability),
        },
        format!("Google Drive folder /{folder}"),
    ))
}

/// Drive says "slow down" with 429, or 403 with reason rateLimitExceeded/userRateLimitExceeded
/// (https://developers.google.com/drive/api/guides/limits).
fn drive_rate_limited(status: ::http::StatusCode, body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default)]
        errors: Vec<Reason>,
    }
    #[derive(Deserialize)]
    struct Reason {
        #[serde(default)]
        reason: String,
    }
    if status == ::http::StatusCode::TOO_MANY_REQUESTS {
        return true;
    }
    serde_json::from_slice::<Body>(body).is_ok_and(|b| {
        b.error
            .errors
            .iter()
            .any(|r| r.reason == "rateLimitExceeded" || r.reason == "userRateLimitExceeded")
    })
}
