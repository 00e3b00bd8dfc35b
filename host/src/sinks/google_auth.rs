//! Google service-account authentication for the gdrive sink: a JWT signed with the account's
//! key (RS256) exchanged for an access token (the OAuth 2.0 JWT bearer grant), cached and
//! renewed before it expires. OpenDAL's Drive service knows only refresh tokens.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use opendal::Buffer;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde::Deserialize;

use super::OptionError;

const DRIVE_SCOPE: &str = "https://www.googleapis.com/auth/drive";
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// Renew this long before the stated expiry, so no request carries a token about to lapse.
const RENEW_BEFORE: Duration = Duration::from_secs(120);

/// A service account from its JSON key file, as Google's console downloads it.
pub struct ServiceAccount {
    email: String,
    token_uri: String,
    token_host: String,
    key: RsaKeyPair,
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    client_email: String,
    private_key: String,
    token_uri: Option<String>,
}

impl ServiceAccount {
    /// Parses the key file's JSON text; errors never quote the key.
    pub fn from_json(text: &str) -> Result<Self, OptionError> {
        let bad = |message: &str| OptionError::new("service_account_key", message);
        let file: KeyFile = serde_json::from_str(text)
            .map_err(|_| bad("`service_account_key` is not a service-account JSON key file"))?;
        if file.kind != "service_account" {
            return Err(bad(
                "`service_account_key` has \"type\" other than \"service_account\"",
            ));
        }
        let body: String = file
            .private_key
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let der = STANDARD
            .decode(body.trim())
            .map_err(|_| bad("the service account's private_key is not PEM"))?;
        let key = RsaKeyPair::from_pkcs8(&der)
            .map_err(|_| bad("the service account's private_key is not a PKCS#8 RSA key"))?;
        let token_uri = file.token_uri.unwrap_or_else(|| DEFAULT_TOKEN_URI.into());
        let token_host = url::Url::parse(&token_uri)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .ok_or_else(|| bad("the service account's token_uri is not a URL"))?;
        Ok(ServiceAccount {
            email: file.client_email,
            token_uri,
            token_host,
            key,
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// Whether a request goes to the token endpoint's host (it carries no access token).
    pub fn is_token_request(&self, uri: &http::Uri) -> bool {
        uri.host() == Some(self.token_host.as_str())
    }

    /// A valid access token: the cached one, or a new one from `exchange`, which sends the
    /// token request (through the sink's transport, so `endpoint` and retries apply).
    pub async fn access_token<F, Fut>(&self, exchange: F) -> opendal::Result<String>
    where
        F: FnOnce(http::Request<Buffer>) -> Fut,
        Fut: std::future::Future<Output = opendal::Result<http::Response<Buffer>>>,
    {
        let mut cached = self.token.lock().await;
        if let Some((token, renew_at)) = cached.as_ref()
            && Instant::now() < *renew_at
        {
            return Ok(token.clone());
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", &self.assertion()?)
            .finish();
        let request = http::Request::post(&self.token_uri)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Buffer::from(body.into_bytes()))
            .map_err(|e| failure("cannot build the token request").set_source(e))?;
        let response = exchange(request).await?;
        let status = response.status();
        let bytes = response.into_body().to_bytes();
        if !status.is_success() {
            // Google's OAuth errors name the cause ("invalid_grant", "Invalid JWT Signature.").
            return Err(opendal::Error::new(
                opendal::ErrorKind::PermissionDenied,
                format!(
                    "service account {}: token request refused ({status}): {}",
                    self.email,
                    String::from_utf8_lossy(&bytes)
                ),
            ));
        }
        #[derive(Deserialize)]
        struct Granted {
            access_token: String,
            expires_in: u64,
        }
        let granted: Granted = serde_json::from_slice(&bytes)
            .map_err(|e| failure("the token response is not OAuth JSON").set_source(e))?;
        let lifetime = Duration::from_secs(granted.expires_in);
        let renew_at = Instant::now() + lifetime.saturating_sub(RENEW_BEFORE.min(lifetime / 2));
        *cached = Some((granted.access_token.clone(), renew_at));
        Ok(granted.access_token)
    }

    /// The signed JWT: this account asks for Drive access at the token endpoint, for an hour.
    fn assertion(&self) -> opendal::Result<String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(
            serde_json::json!({
                "iss": self.email,
                "scope": DRIVE_SCOPE,
                "aud": self.token_uri,
                "iat": now,
                "exp": now + 3600,
            })
            .to_string(),
        );
        let message = format!("{header}.{claims}");
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                message.as_bytes(),
                &mut signature,
            )
            .map_err(|_| failure("cannot sign the service-account assertion"))?;
        Ok(format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

fn failure(message: &str) -> opendal::Error {
    opendal::Error::new(opendal::ErrorKind::Unexpected, message.to_string())
}
