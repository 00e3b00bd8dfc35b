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
    /// With `folder_id`, a path inside that folder.
    folder: Option<String>,
    /// A folder by its id (from its URL: …/folders/ID), e.g. one shared with a service
    /// account, which lives outside the account's My Drive.
    folder_id: Option<String>,
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
    let folder = o.folder.as_deref().unwrap_or("").trim_matches('/');
    let folder_by_id = match &o.folder_id {
        Some(id) => Some(FolderById::new(id)?),
        None if folder.is_empty() => {
            return Err(OptionError::new(
                "",
                "the gdrive sink needs `folder` (a path from the root of My Drive, such as \"/Backups/runner\") or `folder_id` (the id in the folder's URL)",
            ));
        }
        None => None,
    };
    let (root, description) = match &folder_by_id {
        Some(by_id) if folder.is_empty() => (
            format!("/{}", by_id.marker),
            format!("Google Drive folder id {}", by_id.id),
        ),
        Some(by_id) => (
            format!("/{}/{folder}", by_id.marker),
            format!("Google Drive folder id {}, /{folder}", by_id.id),
        ),
        None => (
            format!("/{folder}"),
            format!("Google Drive folder /{folder}"),
        ),
    };
    let mut b = opendal::services::Gdrive::default().root(&root);
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
        http::GoogleRequests {
            service_account,
            folder_by_id,
        },
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
        description,
    ))
}

/// `folder_id`. OpenDAL's Drive service walks paths by name from My Drive's root, which a
/// folder shared with the account is not under. So the path OpenDAL is given starts with
/// a marker name, and the one request that looks the marker up in the root — a files.list
/// by name — is answered with a files.get of the folder's id: OpenDAL then addresses
/// everything inside by that id, and the folder is checked (exists, visible, a folder, not
/// in the trash) on first use.
pub struct FolderById {
    pub id: String,
    /// The path component standing for the folder.
    marker: String,
}

impl FolderById {
    fn new(id: &str) -> Result<Self, OptionError> {
        let id = id.trim();
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(OptionError::new(
                "folder_id",
                "`folder_id` is a Drive folder id: letters, digits, `-` and `_`, the part of the folder's URL after /folders/",
            ));
        }
        Ok(FolderById {
            id: id.to_string(),
            marker: format!("runner-folder-id-{id}"),
        })
    }

    /// The files.get request standing in for `req` when `req` looks the marker up.
    pub fn lookup(
        &self,
        req: &::http::Request<opendal::Buffer>,
    ) -> Option<::http::Request<opendal::Buffer>> {
        if req.method() != ::http::Method::GET || !req.uri().path().ends_with("/drive/v3/files") {
            return None;
        }
        let query = req.uri().query()?;
        let q = url::form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "q")?
            .1;
        if !(q.contains(&format!("name = '{}'", self.marker)) && q.contains("'root' in parents")) {
            return None;
        }
        let uri = format!(
            "{}://{}/drive/v3/files/{}?fields=id,name,mimeType,trashed",
            req.uri().scheme_str().unwrap_or("https"),
            req.uri().authority()?,
            self.id
        );
        let mut get = ::http::Request::new(opendal::Buffer::new());
        *get.uri_mut() = uri.parse().ok()?;
        *get.headers_mut() = req.headers().clone();
        Some(get)
    }

    /// The files.list answer OpenDAL expects, made from the files.get `response`.
    pub async fn answer(
        &self,
        response: ::http::Response<opendal::HttpBody>,
    ) -> opendal::Result<::http::Response<opendal::HttpBody>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct File {
            mime_type: String,
            #[serde(default)]
            trashed: bool,
        }
        let (parts, mut body) = response.into_parts();
        let body = opendal::raw::oio::ReadStream::read_all(&mut body).await?;
        let error = |kind, message: String| Err(opendal::Error::new(kind, message));
        match parts.status {
            ::http::StatusCode::OK => {}
            ::http::StatusCode::NOT_FOUND => {
                return error(
                    opendal::ErrorKind::NotFound,
                    format!(
                        "folder_id {}: no such folder, or this account cannot see it (share the folder with the account)",
                        self.id
                    ),
                );
            }
            // Anything else (401, 403, 5xx) is OpenDAL's to read and retry.
            _ => {
                return Ok(::http::Response::from_parts(
                    parts,
                    http::buffered_body(body),
                ));
            }
        }
        let file: File = serde_json::from_slice(&body.to_bytes()).map_err(|e| {
            opendal::Error::new(opendal::ErrorKind::Unexpected, "files.get answer").set_source(e)
        })?;
        if file.mime_type != "application/vnd.google-apps.folder" {
            return error(
                opendal::ErrorKind::ConfigInvalid,
                format!(
                    "folder_id {} is a file ({}), not a folder",
                    self.id, file.mime_type
                ),
            );
        }
        if file.trashed {
            return error(
                opendal::ErrorKind::NotFound,
                format!("folder_id {}: the folder is in the trash", self.id),
            );
        }
        let list = serde_json::json!({"files": [{
            "id": self.id,
            "name": self.marker,
            "mimeType": file.mime_type,
        }]})
        .to_string();
        Ok(::http::Response::builder()
            .status(::http::StatusCode::OK)
            .header(::http::header::CONTENT_TYPE, "application/json")
            .body(http::buffered_body(opendal::Buffer::from(list)))
            .expect("a valid response"))
    }
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
