//! HTTP to the cluster over wasi:http: JSON and NDJSON requests, Elasticsearch error
//! bodies turned into the contract's error variant, and retries with backoff on 429/503.

use std::time::Duration;

use runner_sdk::{Error, Result};
use serde_json::Value;
use waki::{Client, Method};

/// What the cluster says it is (`GET /`).
#[derive(Debug, Clone)]
pub struct ClusterVersion {
    pub number: String,
    /// "elasticsearch" or "opensearch".
    pub distribution: String,
    pub major: u32,
    pub minor: u32,
}

/// How a consistent view of an index is opened, paged and released on this cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewApi {
    /// Elasticsearch 7.12+: `POST /{index}/_pit` (answer `id`), `DELETE /_pit {"id"}`,
    /// paged in `_shard_doc` order (the tiebreaker appears in 7.12).
    ElasticsearchPit,
    /// OpenSearch 2.4+: `POST /{index}/_search/point_in_time` (answer `pit_id`),
    /// `DELETE /_search/point_in_time {"pit_id": [..]}`. `_shard_doc` exists from 3.3;
    /// before that the pages are sorted by `_id`, unique within one index.
    OpenSearchPit { shard_doc: bool },
    /// Older clusters: one scroll per index.
    Scroll,
}

impl ViewApi {
    /// The sort that pages a point in time with `search_after` exactly once per document.
    pub fn pit_sort(self) -> serde_json::Value {
        match self {
            ViewApi::OpenSearchPit { shard_doc: false } => serde_json::json!([{"_id": "asc"}]),
            _ => serde_json::json!([{"_shard_doc": "asc"}]),
        }
    }
}

impl ClusterVersion {
    /// The view API this distribution and version offer.
    pub fn view_api(&self) -> ViewApi {
        let version = (self.major, self.minor);
        match self.distribution.as_str() {
            "opensearch" if version >= (2, 4) => ViewApi::OpenSearchPit {
                shard_doc: version >= (3, 3),
            },
            "opensearch" => ViewApi::Scroll,
            _ if version >= (7, 12) => ViewApi::ElasticsearchPit,
            _ => ViewApi::Scroll,
        }
    }

    pub fn has_point_in_time(&self) -> bool {
        self.view_api() != ViewApi::Scroll
    }
}

/// A response that is not 2xx, with the cluster's own error type and reason.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: u16,
    pub kind: String,
    pub reason: String,
}

impl Failure {
    fn from_body(status: u16, body: &[u8]) -> Self {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let error = parsed.as_ref().and_then(|v| v.get("error"));
        let (kind, reason) = match error {
            Some(Value::Object(e)) => (
                e.get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("error")
                    .to_string(),
                e.get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            ),
            Some(Value::String(s)) => ("error".to_string(), s.clone()),
            _ => (
                "http".to_string(),
                String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
            ),
        };
        Failure {
            status,
            kind,
            reason,
        }
    }

    pub fn retryable(&self) -> bool {
        matches!(self.status, 429 | 502 | 503 | 504)
    }

    pub fn into_error(self, what: &str) -> Error {
        let message = format!(
            "{what}: HTTP {} {}: {}",
            self.status, self.kind, self.reason
        );
        match self.status {
            401 | 403 => Error::AccessDenied(message),
            404 => Error::not_found(message),
            _ if self.retryable() => Error::retryable(message),
            _ => Error::permanent(message),
        }
    }
}

/// One cluster, addressed by its base URL (which may carry a path prefix behind a proxy).
pub struct Cluster {
    base: String,
    client: Client,
    /// Attempts for a request refused with 429/503 before giving up.
    pub max_retries: u32,
}

impl Cluster {
    pub fn new(url: &str, max_retries: u32) -> Self {
        Cluster {
            base: url.trim_end_matches('/').to_string(),
            client: Client::new(),
            max_retries,
        }
    }

    /// One request; `Err(Failure)` for a non-2xx answer, `Error` when the cluster could not be reached.
    pub fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&[u8], &str)>,
    ) -> Result<std::result::Result<Vec<u8>, Failure>> {
        let url = format!("{}{}", self.base, path);
        let mut request = self
            .client
            .request(method.clone(), &url)
            .connect_timeout(Duration::from_secs(30));
        if let Some((bytes, content_type)) = body {
            request = request
                .header("content-type", content_type)
                .body(bytes.to_vec());
        }
        let what = || {
            format!(
                "{} {}",
                method_name(&method),
                path.split('?').next().unwrap_or(path)
            )
        };
        let response = request.send().map_err(|e| transport_error(&what(), &e))?;
        let status = response.status_code();
        let bytes = response.body().map_err(|e| transport_error(&what(), &e))?;
        if (200..300).contains(&status) {
            Ok(Ok(bytes))
        } else {
            Ok(Err(Failure::from_body(status, &bytes)))
        }
    }

    /// A request retried with exponential backoff while the cluster answers 429/503
    /// (or cannot be reached); any other failure is returned at once.
    pub fn send_retrying(
        &self,
        method: Method,
        path: &str,
        body: Option<(&[u8], &str)>,
    ) -> Result<std::result::Result<Vec<u8>, Failure>> {
        let mut attempt = 0;
        loop {
            let outcome = self.send(method.clone(), path, body);
            let retry = match &outcome {
                Ok(Err(failure)) => failure.retryable(),
                Err(e) => e.is_retryable(),
                Ok(Ok(_)) => false,
            };
            if !retry || attempt >= self.max_retries {
                return outcome;
            }
            backoff(attempt);
            attempt += 1;
        }
    }

    /// A JSON request (retried on 429/503) whose 2xx body is parsed.
    pub fn json(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let what = format!(
            "{} {}",
            method_name(&method),
            path.split('?').next().unwrap_or(path)
        );
        let encoded = body.map(|b| b.to_string());
        let bytes = self
            .send_retrying(
                method,
                path,
                encoded
                    .as_deref()
                    .map(|b| (b.as_bytes(), "application/json")),
            )?
            .map_err(|f| f.into_error(&what))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::permanent(format!("{what}: the answer is not JSON: {e}")))
    }

    /// `GET /`: the version, which decides how the cluster is read.
    pub fn version(&self) -> Result<ClusterVersion> {
        let info = self.json(Method::Get, "/", None)?;
        let version = info
            .get("version")
            .ok_or_else(|| Error::permanent("GET /: no `version` in the answer"))?;
        let number = version
            .get("number")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::permanent("GET /: no `version.number` in the answer"))?
            .to_string();
        let distribution = version
            .get("distribution")
            .and_then(Value::as_str)
            .unwrap_or("elasticsearch")
            .to_string();
        let mut parts = number
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if distribution == "elasticsearch" && major < 5 {
            return Err(Error::unsupported(format!(
                "Elasticsearch {number} is too old (5.0 or later is supported)"
            )));
        }
        Ok(ClusterVersion {
            number,
            distribution,
            major,
            minor,
        })
    }
}

/// 100 ms, 200 ms, 400 ms, … capped at 10 s.
pub fn backoff(attempt: u32) {
    std::thread::sleep(Duration::from_millis(
        (100u64 << attempt.min(7)).min(10_000),
    ));
}

fn transport_error(what: &str, e: &impl std::fmt::Display) -> Error {
    let text = format!("{e:#}");
    if text.contains("TlsCertificateError") {
        // Retrying cannot help: the host's trust store does not vouch for the server.
        Error::permanent(format!(
            "{what}: TLS certificate error: the cluster's certificate is not trusted \
             (a private CA needs `ca_file` = a PEM bundle of it): {text}"
        ))
    } else if text.contains("HttpRequestDenied") {
        Error::AccessDenied(format!(
            "{what}: the host refused the request (the URL is not granted): {text}"
        ))
    } else {
        Error::retryable(format!("{what}: cannot reach the cluster: {text}"))
    }
}

fn method_name(method: &Method) -> &'static str {
    match method {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Head => "HEAD",
        Method::Patch => "PATCH",
        _ => "request",
    }
}
