//! An example third-party source: exports the JSON documents of an HTTP API through wasi:http
//! (only to the granted origin), one artifact per endpoint, and restores them with PUT.

use std::{cell::RefCell, rc::Rc};

use runner_sdk::{
    Artifact, ArtifactReader, ArtifactWriter, BackupSession, Error, Metadata, Plugin, RestoreOptions, RestoreReport,
    RestoreSession, Result, Source,
};
use serde::Deserialize;
use waki::{Client, Method};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The API's base URL, e.g. "https://api.example.com/v1".
    url: String,
    /// Paths under `url` to export, e.g. ["users", "orders"]: artifacts "users.json", "orders.json".
    endpoints: Vec<String>,
    /// A bearer token; write it as a secret reference (`token = "${env:API_TOKEN}"`).
    token: Option<String>,
}

#[derive(Clone)]
struct JsonApi { base: String, endpoints: Vec<String>, token: Option<String> }

impl Plugin for JsonApi {
    const NAME: &'static str = "http-json";
    const DESCRIPTION: &'static str = "the JSON documents of an HTTP API (example)";
    type Config = Config;
    fn new(config: Config) -> Result<Self> {
        if !config.url.starts_with("http://") && !config.url.starts_with("https://") {
            return Err(Error::config_field("url", "expected an http:// or https:// URL"));
        }
        if let Some(bad) = config.endpoints.iter().position(|e| e.is_empty() || e.starts_with('/') || e.contains("..")) {
            return Err(Error::config_field(format!("endpoints[{bad}]"), "expected a relative path like \"users\""));
        }
        let base = format!("{}/", config.url.trim_end_matches('/'));
        Ok(JsonApi { base, endpoints: config.endpoints, token: config.token })
    }
}

impl JsonApi {
    /// One request; a status other than 2xx becomes the contract's error.
    fn call(&self, method: Method, base: &str, endpoint: &str, body: Option<Vec<u8>>) -> Result<waki::Response> {
        let what = format!("{method:?} {base}{endpoint}");
        let mut request = Client::new().request(method, &format!("{base}{endpoint}")).header("Accept", "application/json");
        if let Some(token) = &self.token { request = request.header("Authorization", format!("Bearer {token}")) }
        if let Some(body) = body { request = request.header("Content-Type", "application/json").body(body) }
        let response = request.send().map_err(|e| Error::retryable(format!("{what}: {e}")))?;
        match response.status_code() {
            200..=299 => Ok(response),
            401 | 403 => Err(Error::AccessDenied(format!("{what}: HTTP {}", response.status_code()))),
            404 => Err(Error::not_found(what)),
            status @ (408 | 429 | 500..=599) => Err(Error::retryable(format!("{what}: HTTP {status}"))),
            status => Err(Error::permanent(format!("{what}: HTTP {status}"))),
        }
    }
}

/// What a document is, for the manifest: its JSON type and, for an array, how many items.
fn describe(body: &[u8], what: &str) -> Result<Metadata> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| Error::corrupt(format!("{what} is not JSON: {e}")))?;
    let items = value.as_array().map(|a| vec![("items".to_string(), a.len().to_string())]).unwrap_or_default();
    let kind = if value.is_array() { "array" } else if value.is_object() { "object" } else { "scalar" };
    Ok([vec![("json".to_string(), kind.to_string())], items].concat())
}

impl Source for JsonApi {
    type Backup = Export;
    type Restore = Import;
    fn begin_backup(&self, _share_token: Option<String>) -> Result<Export> { Ok(Export(self.clone())) }
    fn begin_restore(&self, options: RestoreOptions) -> Result<Import> {
        // `runner restore --target URL` restores into another API (granted too); else where it came from.
        let base = options.target.filter(|t| t.starts_with("http")).map(|t| format!("{}/", t.trim_end_matches('/')));
        let base = base.unwrap_or_else(|| self.base.clone());
        Ok(Import { api: self.clone(), base, dry_run: options.dry_run, staged: Rc::default() })
    }
}

/// HTTP APIs have no snapshots: each document is read when the host opens it.
struct Export(JsonApi);

impl BackupSession for Export {
    type Reader = Document;
    fn artifacts(&mut self) -> Result<Vec<Artifact>> {
        let artifact = |e: &String| Artifact {
            name: format!("{e}.json"),
            media_type: "application/json".into(),
            size: None,
            schema_version: 1,
            metadata: vec![("endpoint".into(), e.clone())],
        };
        Ok(self.0.endpoints.iter().map(artifact).collect())
    }
    fn open(&mut self, name: &str) -> Result<Document> {
        let endpoint = name.strip_suffix(".json").filter(|e| self.0.endpoints.iter().any(|x| x == e));
        let endpoint = endpoint.ok_or_else(|| Error::not_found(name))?;
        let body = self.0.call(Method::Get, &self.0.base, endpoint, None)?.body().map_err(Error::retryable)?;
        Ok(Document { metadata: describe(&body, name)?, body, at: 0 })
    }
}

struct Document { body: Vec<u8>, at: usize, metadata: Metadata }

impl ArtifactReader for Document {
    fn read(&mut self, max: usize) -> Result<Option<Vec<u8>>> {
        let end = (self.at + max).min(self.body.len());
        let chunk = self.body[self.at..end].to_vec();
        self.at = end;
        Ok((!chunk.is_empty()).then_some(chunk))
    }
    fn finish(&mut self) -> Result<Metadata> { Ok(self.metadata.clone()) }
}

/// Documents are staged in memory and PUT only at commit, when every digest matched.
struct Import { api: JsonApi, base: String, dry_run: bool, staged: Rc<RefCell<Vec<(String, Vec<u8>)>>> }

impl RestoreSession for Import {
    type Writer = Staging;
    fn write_artifact(&mut self, artifact: Artifact) -> Result<Staging> {
        let endpoint = artifact.name.strip_suffix(".json").ok_or_else(|| Error::invalid_input(&artifact.name))?;
        Ok(Staging { endpoint: endpoint.to_string(), body: Vec::new(), into: self.staged.clone() })
    }
    fn commit(&mut self) -> Result<Vec<RestoreReport>> {
        let mut reports = Vec::new();
        for (endpoint, body) in self.staged.take() {
            let metadata = describe(&body, &endpoint)?;
            if !self.dry_run {
                self.api.call(Method::Put, &self.base, &endpoint, Some(body))?;
            }
            reports.push(RestoreReport { artifact: format!("{endpoint}.json"), metadata, warnings: Vec::new() });
        }
        Ok(reports)
    }
    fn abort(&mut self) { self.staged.take(); }
}

struct Staging { endpoint: String, body: Vec<u8>, into: Rc<RefCell<Vec<(String, Vec<u8>)>>> }

impl ArtifactWriter for Staging {
    fn write(&mut self, chunk: &[u8]) -> Result<()> { self.body.extend_from_slice(chunk); Ok(()) }
    fn finish(&mut self) -> Result<()> {
        self.into.borrow_mut().push((std::mem::take(&mut self.endpoint), std::mem::take(&mut self.body)));
        Ok(())
    }
}

runner_sdk::export_source!(JsonApi);
