//! An example third-party sink: objects on a WebDAV-style HTTP server (PUT, GET with Range,
//! HEAD, DELETE, MKCOL, PROPFIND), reached through wasi:http — only the granted origin.

use runner_sdk::{Error, ListPage, ObjectReader, ObjectStat, ObjectWriter, Plugin, Result, Sink};
use serde::Deserialize;
use waki::{Client, Method, RequestBuilder, Response};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The collection objects go into, e.g. "https://dav.example.com/backups/".
    url: String,
    /// A bearer token; write it as a secret reference (`token = "${env:DAV_TOKEN}"`).
    token: Option<String>,
}

#[derive(Clone)]
struct WebDav { base: String, token: Option<String> }

impl Plugin for WebDav {
    const NAME: &'static str = "webdav";
    const DESCRIPTION: &'static str = "objects on a WebDAV-style HTTP server (example)";
    type Config = Config;
    fn new(config: Config) -> Result<Self> {
        if !config.url.starts_with("http://") && !config.url.starts_with("https://") { return Err(Error::config_field("url", "expected an http:// or https:// URL")) }
        Ok(WebDav { base: format!("{}/", config.url.trim_end_matches('/')), token: config.token })
    }
}

impl WebDav {
    fn request(&self, method: Method, key: &str) -> RequestBuilder {
        let request = Client::new().request(method, &format!("{}{key}", self.base));
        if let Some(token) = &self.token { request.header("Authorization", format!("Bearer {token}")) } else { request }
    }
    /// Sends; a failed status becomes the contract's error (404 and 416 are left to the caller).
    fn send(&self, request: RequestBuilder, what: &str) -> Result<Response> {
        let response = request.send().map_err(|e| Error::retryable(format!("{what}: {e}")))?;
        match response.status_code() {
            200..=299 | 404 | 416 => Ok(response),
            401 | 403 => Err(Error::AccessDenied(format!("{what}: HTTP {}", response.status_code()))),
            412 => Err(Error::AlreadyExists(what.to_string())),
            status @ (408 | 429 | 500..=599) => Err(Error::retryable(format!("{what}: HTTP {status}"))),
            status => Err(Error::permanent(format!("{what}: HTTP {status}"))),
        }
    }
    /// Every object under collection `dir` whose key starts with `prefix` (PROPFIND, depth 1).
    fn walk(&self, dir: &str, prefix: &str, found: &mut Vec<ObjectStat>) -> Result<()> {
        let propfind = self.request(Method::Other("PROPFIND".into()), dir).header("Depth", "1");
        let response = self.send(propfind, &format!("PROPFIND {dir}"))?;
        if response.status_code() == 404 { return Ok(()) }
        let body = String::from_utf8_lossy(&response.body().map_err(Error::retryable)?).into_owned();
        let path_of = |url: &str| url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap_or_default();
        let base_path = path_of(&self.base);
        // One piece per <response> element, whatever the namespace prefix.
        for piece in body.split("response>").filter(|p| p.contains("href>")) {
            let between = |tag: &str| piece.split(tag).nth(1).and_then(|s| s.split('<').next());
            let href = between("href>").unwrap_or_default();
            let path = if href.starts_with("http") { path_of(href) } else { href.to_string() };
            let Some(key) = path.strip_prefix(&base_path).filter(|k| *k != dir) else { continue };
            if piece.contains("collection") {
                if key.starts_with(prefix) || prefix.starts_with(key) {
                    self.walk(key, prefix, found)?;
                }
            } else if key.starts_with(prefix) {
                let size = between("getcontentlength>").and_then(|s| s.trim().parse().ok()).unwrap_or(0);
                found.push(ObjectStat { key: key.to_string(), size });
            }
        }
        Ok(())
    }
}

impl Sink for WebDav {
    type Writer = Upload;
    type Reader = Download;
    fn put(&self, key: &str, if_absent: bool) -> Result<Upload> {
        Ok(Upload { dav: self.clone(), key: key.to_string(), body: Vec::new(), if_absent })
    }
    fn stat(&self, key: &str) -> Result<Option<ObjectStat>> {
        let response = self.send(self.request(Method::Head, key), &format!("HEAD {key}"))?;
        let size = response.header("content-length").and_then(|v| v.to_str().ok()?.parse().ok());
        Ok((response.status_code() != 404).then(|| ObjectStat { key: key.to_string(), size: size.unwrap_or(0) }))
    }
    fn get(&self, key: &str, offset: u64, length: Option<u64>) -> Result<Download> {
        let mut request = self.request(Method::Get, key);
        if offset > 0 || length.is_some() {
            let end = length.map(|l| (offset + l).saturating_sub(1).to_string()).unwrap_or_default();
            request = request.header("Range", format!("bytes={offset}-{end}"));
        }
        let response = self.send(request, &format!("GET {key}"))?;
        match response.status_code() {
            404 => Err(Error::not_found(key)),
            416 => Ok(Download(None)), // the range starts at the end: nothing to read
            200 if offset > 0 => Err(Error::unsupported("the server ignores Range requests")),
            _ => Ok(Download(Some(response))),
        }
    }
    fn list(&self, prefix: &str, _page_token: Option<String>) -> Result<ListPage> {
        let mut objects = Vec::new();
        self.walk(&prefix[..prefix.rfind('/').map_or(0, |i| i + 1)], prefix, &mut objects)?;
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(ListPage { objects, next_page: None })
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.send(self.request(Method::Delete, key), &format!("DELETE {key}")).map(drop)
    }
}

/// The object is buffered (the host cuts artifacts into objects of at most 16 MiB) and sent
/// in one PUT; `If-None-Match: *` makes the server refuse a taken key (412).
struct Upload { dav: WebDav, key: String, body: Vec<u8>, if_absent: bool }

impl ObjectWriter for Upload {
    fn write(&mut self, chunk: &[u8]) -> Result<()> { self.body.extend_from_slice(chunk); Ok(()) }
    fn finish(&mut self) -> Result<ObjectStat> {
        let (dav, what) = (&self.dav, format!("PUT {}", self.key));
        let put = || {
            let request = dav.request(Method::Put, &self.key).body(self.body.clone());
            dav.send(if self.if_absent { request.header("If-None-Match", "*") } else { request }, &what)
        };
        match put() {
            Err(Error::Remote(e)) if e.message.ends_with("HTTP 409") => {
                // The collections do not exist yet: create them (MKCOL), the base first, then put again.
                for end in [0].into_iter().chain(self.key.match_indices('/').map(|(i, _)| i + 1)) {
                    dav.send(dav.request(Method::Other("MKCOL".into()), &self.key[..end]), "MKCOL").ok();
                }
                put()?;
            }
            Ok(response) if response.status_code() == 404 => {
                return Err(Error::not_found(format!("{what}: no collection {}", dav.base)));
            }
            other => drop(other?),
        }
        Ok(ObjectStat { key: self.key.clone(), size: self.body.len() as u64 })
    }
    fn abort(&mut self) {}
}

struct Download(Option<Response>);

impl ObjectReader for Download {
    fn read(&mut self, max: usize) -> Result<Option<Vec<u8>>> {
        let Some(response) = &self.0 else { return Ok(None) };
        response.chunk(max as u64).map_err(Error::retryable)
    }
}

runner_sdk::export_sink!(WebDav);
