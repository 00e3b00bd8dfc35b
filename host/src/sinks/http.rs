//! The HTTP transport of the remote sinks: one pooled reqwest client with timeouts, retries of
//! rate-limited requests, an optional endpoint override, and OpenDAL's retry layer on top.

use std::sync::{Arc, Once};
use std::time::Duration;

use opendal::layers::{RetryEvent, RetryInterceptor, RetryLayer, TimeoutLayer};
use opendal::raw::oio::ReadStream;
use opendal::{Buffer, HttpBody, HttpTransport, HttpTransporter, Operator};
use opendal_http_transport_reqwest::ReqwestTransport;

use super::gdrive::FolderById;
use super::google_auth::ServiceAccount;
use crate::capabilities::storage::Reachability;

/// Retry and timeout settings shared by the remote sinks (`retries`, `timeout` options).
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts after the first, for each request.
    pub retries: usize,
    /// First backoff; doubles per attempt up to `max_delay`, with jitter.
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Longest silence on one connection before the request counts as failed (and is retried).
    pub io_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 10,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(20),
            io_timeout: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The defaults, overridden by a sink's `retries` and `timeout` options.
    pub fn from_options(
        retries: Option<usize>,
        timeout: Option<&str>,
    ) -> Result<Self, super::OptionError> {
        let mut policy = RetryPolicy::default();
        if let Some(retries) = retries {
            policy.retries = retries;
        }
        if let Some(timeout) = timeout {
            policy.io_timeout = crate::config::parse_duration(timeout)
                .map_err(|e| super::OptionError::new("timeout", format!("timeout: {e}")))?;
        }
        Ok(policy)
    }

    /// The delay before retry `attempt` (0-based): exponential with full jitter.
    fn backoff(&self, attempt: usize) -> Duration {
        let ceiling = self
            .min_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay);
        ceiling.mul_f64(0.5 + rand::random::<f64>() / 2.0)
    }
}

/// Rewrites the scheme and authority of requests to some hosts onto one base URL (a
/// Drive-compatible proxy standing in for Google's hosts).
#[derive(Clone, Debug)]
pub struct EndpointOverride {
    pub hosts: &'static [&'static str],
    pub base: url::Url,
}

/// Whether a response says "slow down" rather than "no": retried here, because some services
/// (Drive's 403 rateLimitExceeded) are not classified as temporary by OpenDAL.
pub type RateLimitCheck = fn(http::StatusCode, &[u8]) -> bool;

/// What only Google Drive's requests need from the transport.
#[derive(Default)]
pub struct GoogleRequests {
    /// Authenticates API requests (not token requests) as a Google service account.
    pub service_account: Option<Arc<ServiceAccount>>,
    /// Resolves the `folder_id` folder where OpenDAL looks it up by name.
    pub folder_by_id: Option<FolderById>,
}

struct Transport {
    inner: ReqwestTransport,
    endpoint: Option<EndpointOverride>,
    google: GoogleRequests,
    policy: RetryPolicy,
    rate_limited: RateLimitCheck,
    service: &'static str,
    reachability: Arc<Reachability>,
}

/// An operator for `builder` whose HTTP goes through our transport, with retries and timeouts.
pub fn operator(
    builder: impl opendal::Builder,
    service: &'static str,
    policy: &RetryPolicy,
    endpoint: Option<EndpointOverride>,
    rate_limited: RateLimitCheck,
    google: GoogleRequests,
    reachability: Arc<Reachability>,
) -> opendal::Result<Operator> {
    let client = client(policy).map_err(|e| {
        opendal::Error::new(
            opendal::ErrorKind::Unexpected,
            "cannot build the HTTP client",
        )
        .set_source(e)
    })?;
    let transport = HttpTransporter::new(Transport {
        inner: ReqwestTransport::new(client),
        endpoint,
        google,
        policy: policy.clone(),
        rate_limited,
        service,
        reachability,
    });
    let operator = Operator::new(builder)?;
    let context = operator.base_context().with_http_transport(transport);
    Ok(operator
        .with_context(context)
        .layer(TimeoutLayer::new().with_io_timeout(policy.io_timeout))
        .layer(
            RetryLayer::new()
                .with_jitter()
                .with_max_times(policy.retries)
                .with_min_delay(policy.min_delay)
                .with_max_delay(policy.max_delay)
                .with_notify(LogRetry(service)),
        ))
}

/// Makes rustls usable: reqwest is built without a default TLS provider, so every client
/// of the process uses the ring one already in the tree.
pub fn install_tls_provider() {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn client(policy: &RetryPolicy) -> reqwest::Result<reqwest::Client> {
    install_tls_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(policy.io_timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
}

struct LogRetry(&'static str);

impl RetryInterceptor for LogRetry {
    fn intercept(&self, event: RetryEvent<'_>) {
        tracing::warn!(
            sink = self.0,
            attempt = event.attempt,
            retry_in_ms = event.retry_after.as_millis() as u64,
            "retrying after a transient failure: {}",
            event.err
        );
    }
}

impl Transport {
    fn rewrite(&self, req: &mut http::Request<Buffer>) -> opendal::Result<()> {
        let Some(endpoint) = &self.endpoint else {
            return Ok(());
        };
        let uri = req.uri();
        if !uri.host().is_some_and(|h| endpoint.hosts.contains(&h)) {
            return Ok(());
        }
        let base = endpoint.base.as_str().trim_end_matches('/');
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        *req.uri_mut() = format!("{base}{path}").parse().map_err(|e| {
            opendal::Error::new(opendal::ErrorKind::ConfigInvalid, "endpoint override")
                .set_source(e)
        })?;
        Ok(())
    }
}

/// A body already read whole, handed on as a response body.
pub fn buffered_body(bytes: Buffer) -> HttpBody {
    let size = bytes.len() as u64;
    HttpBody::new(
        futures::stream::once(futures::future::ready(Ok(bytes))),
        Some(size),
    )
}

/// A request that never got a response: refused, unresolvable, reset while connecting,
/// or timed out.
fn is_connection_failure(error: &opendal::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(e) = cause {
        if let Some(e) = e.downcast_ref::<reqwest::Error>()
            && (e.is_connect() || e.is_timeout())
        {
            return true;
        }
        if let Some(e) = e.downcast_ref::<std::io::Error>()
            && matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            )
        {
            return true;
        }
        cause = e.source();
    }
    false
}

fn clone_request(req: &http::Request<Buffer>) -> http::Request<Buffer> {
    let mut copy = http::Request::new(req.body().clone());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

impl HttpTransport for Transport {
    async fn fetch(
        &self,
        mut req: http::Request<Buffer>,
    ) -> opendal::Result<http::Response<HttpBody>> {
        if let Some(account) = &self.google.service_account
            && !account.is_token_request(req.uri())
        {
            let token = account
                .access_token(|mut token_request| async move {
                    self.rewrite(&mut token_request)?;
                    let (parts, mut body) = self.inner.fetch(token_request).await?.into_parts();
                    Ok(http::Response::from_parts(parts, body.read_all().await?))
                })
                .await?;
            let value = format!("Bearer {token}").parse().map_err(|e| {
                opendal::Error::new(opendal::ErrorKind::Unexpected, "access token header")
                    .set_source(e)
            })?;
            req.headers_mut().insert(http::header::AUTHORIZATION, value);
        }
        if let Some(folder) = &self.google.folder_by_id
            && let Some(mut get) = folder.lookup(&req)
        {
            self.rewrite(&mut get)?;
            let response = self.inner.fetch(get).await;
            self.reachability.record(
                response
                    .as_ref()
                    .map_or_else(|e| !is_connection_failure(e), |_| true),
            );
            return folder.answer(response?).await;
        }
        self.rewrite(&mut req)?;
        let mut attempt = 0;
        loop {
            let response = match self.inner.fetch(clone_request(&req)).await {
                Ok(response) => {
                    self.reachability.record(true);
                    response
                }
                Err(e) => {
                    self.reachability.record(!is_connection_failure(&e));
                    return Err(e);
                }
            };
            let status = response.status();
            // Only error statuses can be rate limits; their bodies are small JSON/XML.
            if !(status == http::StatusCode::TOO_MANY_REQUESTS
                || status == http::StatusCode::FORBIDDEN)
            {
                return Ok(response);
            }
            let (parts, mut body) = response.into_parts();
            let bytes = body.read_all().await?;
            if attempt < self.policy.retries && (self.rate_limited)(status, &bytes.to_bytes()) {
                let delay = self.policy.backoff(attempt);
                attempt += 1;
                tracing::warn!(
                    sink = self.service,
                    attempt,
                    retry_in_ms = delay.as_millis() as u64,
                    "rate limited ({status}); backing off"
                );
                tokio::time::sleep(delay).await;
                continue;
            }
            return Ok(http::Response::from_parts(parts, buffered_body(bytes)));
        }
    }
}
