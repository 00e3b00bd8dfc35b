//! An in-process Elasticsearch emulator for the tests: the REST endpoints the elasticsearch
//! source uses, with the request and response shapes of the official REST API spec
//! (`rest-api-spec/api/*.json`) and their semantics: near-real-time visibility (documents
//! are searchable after a refresh), point-in-time and scroll snapshot isolation, `_shard_doc`
//! order with `search_after`, bulk partial failures with per-item errors (a value the
//! mapping cannot parse is a 400 `document_parsing_exception`), dynamic mapping, aliases
//! swapped atomically, and 429 `es_rejected_execution_exception` on demand.
//!
//! It serves HTTP/1.1 on a random loopback port (hyper), one request at a time against one
//! locked state, and speaks as Elasticsearch of a chosen version: `hits.total` as a number
//! before 7.0, no point in time before 7.10, `document_parsing_exception` from 8.8.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};

/// How the emulated cluster presents itself.
#[derive(Clone, Debug)]
pub struct EmulatorOptions {
    /// `version.number` of `GET /`, e.g. "8.15.0" or "7.9.3".
    pub version: String,
    /// When set, every request must carry exactly this `Authorization` value (else 401).
    pub authorization: Option<String>,
    /// Answer as OpenSearch (`version.distribution`): no Elasticsearch `_pit` endpoint,
    /// OpenSearch's own point-in-time API from 2.4 (no `_shard_doc` before 3.3),
    /// `hits.total` as an object.
    pub opensearch: bool,
    /// Serve HTTPS with this certificate chain and key (PEM) instead of HTTP.
    pub tls: Option<TlsIdentity>,
}

/// A server certificate (chain, PEM) and its private key (PEM).
#[derive(Clone, Debug)]
pub struct TlsIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions {
            version: "8.15.0".into(),
            authorization: None,
            opensearch: false,
            tls: None,
        }
    }
}

/// A running emulator; stops when dropped.
pub struct Emulator {
    addr: SocketAddr,
    https: bool,
    state: Arc<Mutex<State>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// An answer: status and JSON (or text) body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Emulator {
    pub fn start(options: EmulatorOptions) -> Emulator {
        let https = options.tls.is_some();
        let acceptor = options.tls.as_ref().map(|identity| {
            use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .expect("emulator certificate PEM");
            let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
                .expect("emulator key PEM");
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("emulator certificate and key");
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let state = Arc::new(Mutex::new(State::new(options)));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (shutdown, mut stop) = tokio::sync::oneshot::channel::<()>();
        let served = state.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("emulator runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stop => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let state = served.clone();
                            let acceptor = acceptor.clone();
                            tokio::spawn(async move {
                                let service = hyper::service::service_fn(move |request| {
                                    let state = state.clone();
                                    async move { Ok::<_, std::convert::Infallible>(serve(&state, request).await) }
                                });
                                let http = hyper::server::conn::http1::Builder::new();
                                match acceptor {
                                    // A client that refuses the certificate ends the handshake here.
                                    Some(acceptor) => {
                                        if let Ok(stream) = acceptor.accept(stream).await {
                                            let _ = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
                                        }
                                    }
                                    None => {
                                        let _ = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
                                    }
                                }
                            });
                        }
                    }
                }
            });
        });
        let addr = addr_rx.recv().expect("emulator started");
        Emulator {
            addr,
            https,
            state,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` when serving TLS).
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// One request handled exactly as over HTTP (authorization aside), without the network.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let (status, bytes, _) =
            self.state
                .lock()
                .unwrap()
                .handle(method, path, "application/json", &body);
        Answer {
            status,
            body: serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into())),
        }
    }

    /// One request with a raw body and content type, handled as over HTTP.
    pub fn call_raw(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Answer {
        let (status, bytes, _) =
            self.state
                .lock()
                .unwrap()
                .handle(method, path, content_type, body);
        Answer {
            status,
            body: serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into())),
        }
    }

    /// Like [`call`](Self::call), but a non-2xx answer fails the test.
    pub fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let answer = self.call(method, path, body);
        assert!(
            (200..300).contains(&answer.status),
            "{method} {path}: {} {}",
            answer.status,
            answer.body
        );
        answer.body
    }

    /// `POST /_bulk?refresh=true` with NDJSON; a whole-request failure fails the test.
    pub fn bulk(&self, ndjson: &str) -> Value {
        let (status, bytes, _) = self.state.lock().unwrap().handle(
            "POST",
            "/_bulk?refresh=true",
            "application/x-ndjson",
            ndjson.as_bytes(),
        );
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(status, 200, "bulk: {body}");
        body
    }

    /// The next `n` bulk requests are refused whole with 429, as an overloaded cluster does.
    pub fn reject_bulk_requests(&self, n: u32) {
        self.state.lock().unwrap().reject_bulk_requests = n;
    }

    /// The next `n` bulk items are refused with a per-item 429.
    pub fn reject_bulk_items(&self, n: u32) {
        self.state.lock().unwrap().reject_bulk_items = n;
    }

    /// Bulk requests refused with 429 so far (whole requests and items).
    pub fn rejections(&self) -> u32 {
        self.state.lock().unwrap().rejected
    }

    /// NDJSON bulk-indexed (and refreshed) right after the next point in time or scroll opens:
    /// a writer racing a backup, deterministically.
    pub fn index_after_next_view(&self, ndjson: &str) {
        self.state.lock().unwrap().after_view = Some(ndjson.as_bytes().to_vec());
    }

    /// Every `Authorization` header value received over HTTP, in order.
    pub fn authorizations(&self) -> Vec<String> {
        self.state.lock().unwrap().authorizations.clone()
    }

    /// "METHOD /path" of every request received over HTTP (queries left out).
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Seconds spent handling requests over HTTP since the last call (then reset).
    pub fn take_busy_seconds(&self) -> f64 {
        std::mem::take(&mut self.state.lock().unwrap().busy).as_secs_f64()
    }

    /// Open points in time and scrolls.
    pub fn open_views(&self) -> usize {
        let state = self.state.lock().unwrap();
        state.pits.len() + state.scrolls.len()
    }

    /// Every visible document of `index` (after a refresh): `_id` → (`_source`, routing).
    pub fn documents(&self, index: &str) -> BTreeMap<String, (Value, Option<String>)> {
        let mut state = self.state.lock().unwrap();
        let names = state.resolve(index, false).unwrap_or_default();
        let mut out = BTreeMap::new();
        for name in names {
            let idx = state.indices.get_mut(&name).unwrap();
            idx.refresh();
            for doc in idx.visible.iter() {
                out.insert(
                    doc.id.clone(),
                    (
                        serde_json::from_str(&doc.source).unwrap(),
                        doc.routing.clone(),
                    ),
                );
            }
        }
        out
    }

    /// Concrete index names, sorted.
    pub fn index_names(&self) -> Vec<String> {
        self.state.lock().unwrap().indices.keys().cloned().collect()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    state: &Mutex<State>,
    request: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<http_body_util::Full<hyper::body::Bytes>> {
    use http_body_util::BodyExt;
    let method = request.method().as_str().to_string();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let (status, bytes, kind) = {
        let mut state = state.lock().unwrap();
        state
            .requests
            .push(format!("{method} {}", path.split('?').next().unwrap_or("")));
        if let Some(value) = &authorization {
            state.authorizations.push(value.clone());
        }
        match &state.options.authorization {
            Some(expected) if authorization.as_deref() != Some(expected.as_str()) => {
                let reason = if authorization.is_some() {
                    "unable to authenticate with provided credentials and anonymous access is not allowed for this request"
                        .to_string()
                } else {
                    format!("missing authentication credentials for REST request [{path}]")
                };
                let (status, body) = error(401, "security_exception", &reason);
                (status, body.to_string().into_bytes(), "application/json")
            }
            _ => {
                let started = std::time::Instant::now();
                let handled = state.handle(&method, &path, &content_type, &body);
                state.busy += started.elapsed();
                handled
            }
        }
    };
    let mut response = hyper::Response::builder()
        .status(status)
        .header("content-type", kind)
        .header("x-elastic-product", "Elasticsearch");
    if status == 401 {
        response = response.header(
            "www-authenticate",
            "Basic realm=\"security\" charset=\"UTF-8\"",
        );
    }
    let bytes = if method == "HEAD" { Vec::new() } else { bytes };
    response
        .body(http_body_util::Full::new(hyper::body::Bytes::from(bytes)))
        .unwrap()
}

/// One document as stored.
#[derive(Debug)]
struct Doc {
    id: String,
    source: String,
    routing: Option<String>,
    version: u64,
    seq_no: u64,
}

/// One index: settings (flat, `index.`-prefixed, string values, as the cluster keeps them),
/// mappings, aliases, and its documents live and as of the last refresh.
struct Index {
    settings: BTreeMap<String, Value>,
    mappings: Value,
    aliases: Map<String, Value>,
    /// Live documents in Lucene order: an update deletes and appends.
    live: BTreeMap<u64, Arc<Doc>>,
    by_id: HashMap<String, u64>,
    /// What searches see: the live documents at the last refresh.
    visible: Arc<Vec<Arc<Doc>>>,
    dirty: bool,
    next_slot: u64,
    seq_no: u64,
}

impl Index {
    fn refresh(&mut self) {
        if self.dirty {
            self.visible = Arc::new(self.live.values().cloned().collect());
            self.dirty = false;
        }
    }

    fn hidden(&self, name: &str) -> bool {
        name.starts_with('.')
            || self.settings.get("index.hidden").and_then(Value::as_str) == Some("true")
    }
}

/// A consistent view: the visible documents of some indices when it was opened.
struct View {
    /// (index name, its documents) in index order; the shard number is the position.
    shards: Vec<(String, Arc<Vec<Arc<Doc>>>)>,
}

struct Scroll {
    hits: Vec<Value>,
    at: usize,
    size: usize,
    total: u64,
}

struct State {
    options: EmulatorOptions,
    major: u32,
    minor: u32,
    indices: BTreeMap<String, Index>,
    pits: HashMap<String, View>,
    /// OpenSearch points in time: creation time and keep-alive, both in milliseconds.
    pit_meta: HashMap<String, (u128, u64)>,
    scrolls: HashMap<String, Scroll>,
    next_id: u64,
    reject_bulk_requests: u32,
    reject_bulk_items: u32,
    rejected: u32,
    after_view: Option<Vec<u8>>,
    authorizations: Vec<String>,
    requests: Vec<String>,
    /// Time spent handling requests received over HTTP: the emulator's own cost in a benchmark.
    busy: std::time::Duration,
}

type Handled = (u16, Vec<u8>, &'static str);

fn error(status: u16, kind: &str, reason: &str) -> (u16, Value) {
    error_with(status, json!({"type": kind, "reason": reason}))
}

fn error_with(status: u16, cause: Value) -> (u16, Value) {
    (
        status,
        json!({"error": {"root_cause": [cause.clone()], "type": cause["type"], "reason": cause["reason"]}, "status": status}),
    )
}

fn index_not_found(name: &str) -> (u16, Value) {
    error_with(
        404,
        json!({"type": "index_not_found_exception", "reason": format!("no such index [{name}]"),
               "resource.type": "index_or_alias", "resource.id": name, "index_uuid": "_na_", "index": name}),
    )
}

fn shards() -> Value {
    json!({"total": 1, "successful": 1, "skipped": 0, "failed": 0})
}

fn query_params(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `*` globs on index names.
fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(at) = rest.find(part) else {
                return false;
            };
            rest = &rest[at + part.len()..];
        }
    }
    true
}

/// Index names as `PUT /{index}` accepts them.
fn invalid_index_name(name: &str) -> Option<String> {
    if name.is_empty() || name == "." || name == ".." {
        return Some("must not be '.' or '..'".into());
    }
    if name.chars().any(|c| c.is_uppercase()) {
        return Some("must be lowercase".into());
    }
    if name.starts_with(['_', '-', '+']) {
        return Some("must not start with '_', '-', or '+'".into());
    }
    if name.contains(['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':']) {
        return Some(
            "must not contain the following characters [ , \", *, \\, <, |, ,, >, /, ?]".into(),
        );
    }
    None
}

impl State {
    fn new(options: EmulatorOptions) -> Self {
        let mut parts = options
            .version
            .split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(8), parts.next().unwrap_or(0));
        State {
            options,
            major,
            minor,
            indices: BTreeMap::new(),
            pits: HashMap::new(),
            pit_meta: HashMap::new(),
            scrolls: HashMap::new(),
            next_id: 1,
            reject_bulk_requests: 0,
            reject_bulk_items: 0,
            rejected: 0,
            after_view: None,
            authorizations: Vec::new(),
            requests: Vec::new(),
            busy: std::time::Duration::ZERO,
        }
    }

    fn has_pit(&self) -> bool {
        !self.options.opensearch && (self.major, self.minor) >= (7, 10)
    }

    /// OpenSearch's own point-in-time API (`create_pit.json`, `delete_pit.json`), from 2.4.
    fn has_opensearch_pit(&self) -> bool {
        self.options.opensearch && (self.major, self.minor) >= (2, 4)
    }

    /// `POST /{index}/_search/point_in_time?keep_alive=`: answers `pit_id`.
    fn create_opensearch_pit(
        &mut self,
        expression: &str,
        params: &HashMap<String, String>,
    ) -> (u16, Value) {
        let Some(keep_alive) = params.get("keep_alive") else {
            return error(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: keep alive not specified;",
            );
        };
        let Some(keep_alive_ms) = time_value_millis(keep_alive) else {
            return error(
                400,
                "illegal_argument_exception",
                &format!(
                    "failed to parse setting [keep_alive] with value [{keep_alive}] as a time value: unit is missing or unrecognized"
                ),
            );
        };
        let view = match self.open_view(expression) {
            Ok(view) => view,
            Err(e) => return e,
        };
        let id = self.fresh_id("pit");
        let total = view.shards.len();
        let created = now_millis();
        self.pits.insert(id.clone(), view);
        self.pit_meta.insert(id.clone(), (created, keep_alive_ms));
        (
            200,
            json!({"pit_id": id, "_shards": {"total": total, "successful": total, "skipped": 0, "failed": 0}, "creation_time": created}),
        )
    }

    /// `DELETE /_search/point_in_time` with `{"pit_id": [..]}`.
    fn delete_opensearch_pits(&mut self, body: &Value) -> (u16, Value) {
        let ids: Vec<String> = match body.get("pit_id") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(Value::String(id)) => vec![id.clone()],
            _ => {
                return error(
                    400,
                    "action_request_validation_exception",
                    "Validation Failed: 1: no pit ids specified;",
                );
            }
        };
        let pits: Vec<Value> = ids
            .iter()
            .map(|id| {
                let found = self.pits.remove(id).is_some();
                self.pit_meta.remove(id);
                json!({"successful": found, "pit_id": id})
            })
            .collect();
        (200, json!({"pits": pits}))
    }

    /// `GET /_search/point_in_time/_all`.
    fn all_opensearch_pits(&self) -> (u16, Value) {
        let mut pits: Vec<(&String, &(u128, u64))> = self.pit_meta.iter().collect();
        pits.sort_by_key(|(_, (created, _))| *created);
        let pits: Vec<Value> = pits
            .into_iter()
            .map(|(id, (created, keep_alive))| json!({"pit_id": id, "creation_time": created, "keep_alive": keep_alive}))
            .collect();
        (200, json!({"pits": pits}))
    }

    fn fresh_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        // Real ids are opaque base64; these are opaque too.
        format!(
            "{prefix}{:016x}{:08x}",
            self.next_id.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            self.next_id
        )
    }

    /// Index names an expression (`a,b*,alias,_all`) resolves to. `wildcards_only_open`
    /// hides hidden indices from wildcards, as `expand_wildcards=open` does.
    fn resolve(&self, expression: &str, strict: bool) -> Result<Vec<String>, (u16, Value)> {
        let mut out: Vec<String> = Vec::new();
        let mut push = |name: &String| {
            if !out.contains(name) {
                out.push(name.clone());
            }
        };
        for part in expression.split(',').filter(|p| !p.is_empty()) {
            if part == "_all" || part.contains('*') {
                let pattern = if part == "_all" { "*" } else { part };
                for (name, index) in &self.indices {
                    let hidden_ok = !index.hidden(name) || pattern.starts_with('.');
                    if hidden_ok && glob_match(pattern, name) {
                        push(name);
                    }
                }
                for (name, index) in &self.indices {
                    if index
                        .aliases
                        .keys()
                        .any(|a| glob_match(pattern, a) && !a.starts_with('.'))
                    {
                        push(name);
                    }
                }
            } else if self.indices.contains_key(part) {
                push(&part.to_string());
            } else {
                let holders: Vec<String> = self
                    .indices
                    .iter()
                    .filter(|(_, i)| i.aliases.contains_key(part))
                    .map(|(n, _)| n.clone())
                    .collect();
                if holders.is_empty() {
                    if strict {
                        return Err(index_not_found(part));
                    }
                } else {
                    for name in &holders {
                        push(name);
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn handle(
        &mut self,
        method: &str,
        path_and_query: &str,
        content_type: &str,
        body: &[u8],
    ) -> Handled {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let params = query_params(query);
        let segments: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect();
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        if method == "POST" || method == "PUT" {
            let json_type = content_type.is_empty()
                || content_type.starts_with("application/json")
                || content_type.starts_with("application/x-ndjson")
                || content_type.starts_with("application/vnd.elasticsearch+");
            if !json_type && !body.is_empty() {
                let (status, body) = error(
                    406,
                    "media_type_header_exception",
                    &format!("Content-Type header [{content_type}] is not supported"),
                );
                return (status, body.to_string().into_bytes(), "application/json");
            }
        }
        if matches!(segs.as_slice(), ["_cat", "indices", ..]) {
            return self.cat_indices(segs.get(2).copied(), &params);
        }
        let is_bulk = segs.last() == Some(&"_bulk");
        let parsed: Value = if is_bulk || body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    let (status, body) =
                        error(400, "x_content_parse_exception", &format!("[1:1] {e}"));
                    return (status, body.to_string().into_bytes(), "application/json");
                }
            }
        };
        let (status, answer) = match (method, segs.as_slice()) {
            ("GET" | "HEAD", []) => (200, self.info()),
            ("POST", ["_bulk"]) | ("PUT", ["_bulk"]) => self.bulk(None, body, &params),
            ("POST", [index, "_bulk"]) | ("PUT", [index, "_bulk"]) => self.bulk(Some(index), body, &params),
            ("POST", ["_refresh"]) | ("GET", ["_refresh"]) => self.refresh("_all"),
            ("POST", [index, "_refresh"]) | ("GET", [index, "_refresh"]) => self.refresh(index),
            ("GET" | "POST", ["_count"]) => self.count("_all", &parsed, &params),
            ("GET" | "POST", [index, "_count"]) => self.count(index, &parsed, &params),
            ("POST", [index, "_pit"]) if self.has_pit() => self.open_pit(index, &params),
            ("DELETE", ["_pit"]) if self.has_pit() => self.close_pit(&parsed),
            ("POST", [index, "_search", "point_in_time"]) if self.has_opensearch_pit() => {
                self.create_opensearch_pit(index, &params)
            }
            ("DELETE", ["_search", "point_in_time"]) if self.has_opensearch_pit() => {
                self.delete_opensearch_pits(&parsed)
            }
            ("GET", ["_search", "point_in_time", "_all"]) if self.has_opensearch_pit() => {
                self.all_opensearch_pits()
            }
            ("DELETE", ["_search", "point_in_time", "_all"]) if self.has_opensearch_pit() => {
                let ids: Vec<String> = self.pit_meta.keys().cloned().collect();
                self.delete_opensearch_pits(&json!({"pit_id": ids}))
            }
            ("GET" | "POST", ["_search", "scroll"]) => {
                let mut request = parsed.clone();
                if request.get("scroll_id").is_none()
                    && let Some(id) = params.get("scroll_id")
                {
                    request["scroll_id"] = json!(id);
                }
                self.scroll_next(&request, &params)
            }
            // The body's scroll id, when there is one, overrides the path's.
            ("GET" | "POST", ["_search", "scroll", id]) => match parsed.get("scroll_id") {
                Some(_) => self.scroll_next(&parsed, &params),
                None => self.scroll_next(&json!({"scroll_id": id}), &params),
            },
            ("PUT" | "POST", [index, "_alias" | "_aliases", name]) => self.update_aliases(
                &json!({"actions": [{"add": {"index": index, "alias": name}}]}),
            ),
            ("DELETE", ["_search", "scroll"]) => self.clear_scroll(&parsed),
            ("DELETE", ["_search", "scroll", ids]) => {
                let ids: Vec<&str> = ids.split(',').collect();
                self.clear_scroll(&json!({"scroll_id": ids}))
            }
            ("GET" | "POST", ["_search"]) => self.search(None, &parsed, &params),
            ("GET" | "POST", [index, "_search"]) => self.search(Some(index), &parsed, &params),
            ("GET", ["_mapping"]) => self.per_index("_all", |_, i| json!({"mappings": i.mappings})),
            ("GET", [index, "_mapping"]) => self.per_index(index, |_, i| json!({"mappings": i.mappings})),
            ("GET", ["_settings"]) => self.per_index("_all", |_, i| json!({"settings": nest(&i.settings)})),
            ("GET", [index, "_settings"]) => self.per_index(index, |_, i| json!({"settings": nest(&i.settings)})),
            ("GET", ["_alias"]) | ("GET", ["_aliases"]) => self.aliases("_all", None),
            ("GET", ["_alias", name]) => self.aliases("_all", Some(name)),
            ("GET", [index, "_alias"]) => self.aliases(index, None),
            ("GET", [index, "_alias", name]) => self.aliases(index, Some(name)),
            ("POST", ["_aliases"]) => self.update_aliases(&parsed),
            ("PUT", [index, "_doc", id]) | ("POST", [index, "_doc", id]) => {
                let line = serde_json::to_string(&json!({"index": {"_index": index, "_id": id}})).unwrap();
                let ndjson = format!("{line}\n{}\n", String::from_utf8_lossy(body));
                let (status, answer) = self.bulk(None, ndjson.as_bytes(), &params);
                match answer["items"][0].as_object().and_then(|o| o.values().next()) {
                    Some(item) if status == 200 => {
                        let item_status = item["status"].as_u64().unwrap_or(500) as u16;
                        if (200..300).contains(&item_status) { (item_status, item.clone()) } else { error_with(item_status, item["error"].clone()) }
                    }
                    _ => (status, answer),
                }
            }
            ("GET", [index, "_doc", id]) => self.get_doc(index, id),
            ("PUT", [index]) => self.create_index(index, &parsed),
            ("GET", [index]) => self.per_index(index, |_, i| {
                json!({"aliases": i.aliases, "mappings": i.mappings, "settings": nest(&i.settings)})
            }),
            ("HEAD", [index]) => match self.resolve(index, true) {
                Ok(names) if !names.is_empty() => (200, json!({})),
                _ => (404, json!({})),
            },
            ("DELETE", [index]) => self.delete_index(index),
            _ => error(
                if segs.is_empty() || method == "GET" { 400 } else { 405 },
                "illegal_argument_exception",
                &format!("no handler found for uri [{path}] and method [{method}]"),
            ),
        };
        let pretty = params.contains_key("pretty");
        let bytes = if pretty {
            serde_json::to_vec_pretty(&answer)
        } else {
            serde_json::to_vec(&answer)
        }
        .unwrap();
        (status, bytes, "application/json")
    }

    fn info(&self) -> Value {
        let mut info = self.elasticsearch_info();
        if self.options.opensearch {
            info["version"]["distribution"] = json!("opensearch");
            info["version"]["lucene_version"] = json!("9.7.0");
            info["tagline"] = json!("The OpenSearch Project: https://opensearch.org/");
        }
        info
    }

    fn elasticsearch_info(&self) -> Value {
        json!({
            "name": "emulator-node-0",
            "cluster_name": "runner-emulator",
            "cluster_uuid": "c2d3aGVybmV0ZXMtZW11bGF0b3I",
            "version": {
                "number": self.options.version,
                "build_flavor": "default",
                "build_type": "tar",
                "build_hash": "0000000000000000000000000000000000000000",
                "build_date": "2024-08-05T10:05:34.233336849Z",
                "build_snapshot": false,
                "lucene_version": "9.11.1",
                "minimum_wire_compatibility_version": "7.17.0",
                "minimum_index_compatibility_version": "7.0.0"
            },
            "tagline": "You Know, for Search"
        })
    }

    fn per_index(&self, expression: &str, each: impl Fn(&str, &Index) -> Value) -> (u16, Value) {
        match self.resolve(expression, true) {
            Ok(names) => {
                let mut out = Map::new();
                for name in names {
                    out.insert(name.clone(), each(&name, &self.indices[&name]));
                }
                (200, Value::Object(out))
            }
            Err(e) => e,
        }
    }

    fn cat_indices(
        &mut self,
        expression: Option<&str>,
        params: &HashMap<String, String>,
    ) -> Handled {
        let names = match self.resolve(expression.unwrap_or("_all"), true) {
            Ok(names) => names,
            Err((status, body)) => {
                return (status, body.to_string().into_bytes(), "application/json");
            }
        };
        let mut rows = Vec::new();
        for name in names {
            let index = &self.indices[&name];
            let bytes: usize = index.visible.iter().map(|d| d.source.len()).sum();
            let mut row = Map::new();
            row.insert("health".into(), json!("yellow"));
            row.insert("status".into(), json!("open"));
            row.insert("index".into(), json!(name));
            row.insert("uuid".into(), index.settings["index.uuid"].clone());
            row.insert(
                "pri".into(),
                index.settings["index.number_of_shards"].clone(),
            );
            row.insert(
                "rep".into(),
                index.settings["index.number_of_replicas"].clone(),
            );
            row.insert("docs.count".into(), json!(index.visible.len().to_string()));
            row.insert("docs.deleted".into(), json!("0"));
            row.insert("store.size".into(), json!(format!("{bytes}b")));
            row.insert("pri.store.size".into(), json!(format!("{bytes}b")));
            rows.push(row);
        }
        if let Some(columns) = params.get("h") {
            let wanted: Vec<&str> = columns.split(',').collect();
            for row in &mut rows {
                row.retain(|k, _| wanted.contains(&k.as_str()));
            }
        }
        if params.get("format").map(String::as_str) == Some("json") {
            let body = serde_json::to_vec(&rows).unwrap();
            return (200, body, "application/json");
        }
        let mut text = String::new();
        for row in rows {
            let cells: Vec<String> = row
                .values()
                .map(|v| v.as_str().unwrap_or("").to_string())
                .collect();
            text.push_str(&cells.join(" "));
            text.push('\n');
        }
        (200, text.into_bytes(), "text/plain; charset=UTF-8")
    }

    fn create_index(&mut self, name: &str, body: &Value) -> (u16, Value) {
        if let Some(why) = invalid_index_name(name) {
            return error_with(
                400,
                json!({"type": "invalid_index_name_exception", "reason": format!("Invalid index name [{name}], {why}"), "index": name}),
            );
        }
        if let Some(existing) = self.indices.get(name) {
            let uuid = existing.settings["index.uuid"]
                .as_str()
                .unwrap_or("")
                .to_string();
            return error_with(
                400,
                json!({"type": "resource_already_exists_exception", "reason": format!("index [{name}/{uuid}] already exists"), "index": name}),
            );
        }
        if self.indices.values().any(|i| i.aliases.contains_key(name)) {
            return error(
                400,
                "invalid_index_name_exception",
                &format!("Invalid index name [{name}], already exists as alias"),
            );
        }
        let mut settings = BTreeMap::new();
        if let Some(given) = body.get("settings") {
            flatten_settings("", given, &mut settings);
        }
        let settings = settings
            .into_iter()
            .map(|(k, v)| {
                (
                    if k.starts_with("index.") {
                        k
                    } else {
                        format!("index.{k}")
                    },
                    v,
                )
            })
            .collect::<BTreeMap<_, _>>();
        for key in [
            "index.uuid",
            "index.creation_date",
            "index.version.created",
            "index.provided_name",
        ] {
            if settings.contains_key(key) {
                return error(
                    400,
                    "illegal_argument_exception",
                    &format!(
                        "unknown setting [{key}] please check that any required plugins are installed, or check the breaking changes documentation for removed settings"
                    ),
                );
            }
        }
        let mut index_settings = settings;
        index_settings
            .entry("index.number_of_shards".into())
            .or_insert(json!("1"));
        index_settings
            .entry("index.number_of_replicas".into())
            .or_insert(json!("1"));
        if self.major >= 8 {
            index_settings
                .entry("index.routing.allocation.include._tier_preference".into())
                .or_insert(json!("data_content"));
        }
        let uuid = self.fresh_id("u");
        index_settings.insert("index.uuid".into(), json!(uuid));
        index_settings.insert(
            "index.creation_date".into(),
            json!(now_millis().to_string()),
        );
        index_settings.insert("index.provided_name".into(), json!(name));
        index_settings.insert(
            "index.version.created".into(),
            json!(format!("{}{:02}0099", self.major, self.minor)),
        );
        let mappings = body.get("mappings").cloned().unwrap_or(json!({}));
        if !mappings.is_object() {
            return error(
                400,
                "mapper_parsing_exception",
                "Failed to parse mapping: mappings must be an object",
            );
        }
        if self.major >= 8
            && !self.options.opensearch
            && index_settings
                .get("index.soft_deletes.enabled")
                .map(scalar_string)
                .as_deref()
                == Some("false")
        {
            return error(
                400,
                "illegal_argument_exception",
                "Creating indices with soft-deletes disabled is no longer supported. Please do not specify a value for setting [index.soft_deletes.enabled].",
            );
        }
        if has_empty_field_name(&mappings) {
            return error(
                400,
                "illegal_argument_exception",
                "field name cannot be an empty string",
            );
        }
        let mut aliases = Map::new();
        if let Some(given) = body.get("aliases").and_then(Value::as_object) {
            for (alias, spec) in given {
                if self.indices.contains_key(alias) {
                    return error(
                        400,
                        "invalid_alias_name_exception",
                        &format!(
                            "Invalid alias name [{alias}]: an index or data stream exists with the same name as the alias"
                        ),
                    );
                }
                aliases.insert(alias.clone(), alias_spec(spec));
            }
        }
        self.indices.insert(
            name.to_string(),
            Index {
                settings: index_settings,
                mappings,
                aliases,
                live: BTreeMap::new(),
                by_id: HashMap::new(),
                visible: Arc::new(Vec::new()),
                dirty: false,
                next_slot: 0,
                seq_no: 0,
            },
        );
        (
            200,
            json!({"acknowledged": true, "shards_acknowledged": true, "index": name}),
        )
    }

    fn delete_index(&mut self, expression: &str) -> (u16, Value) {
        let mut doomed = Vec::new();
        for part in expression.split(',') {
            if part.contains('*') || part == "_all" {
                return error(
                    400,
                    "illegal_argument_exception",
                    "Wildcard expressions or all indices are not allowed",
                );
            }
            if self.indices.contains_key(part) {
                doomed.push(part.to_string());
            } else if self.indices.values().any(|i| i.aliases.contains_key(part)) {
                return error(
                    400,
                    "illegal_argument_exception",
                    &format!(
                        "The provided expression [{part}] matches an alias, specify the corresponding concrete indices instead."
                    ),
                );
            } else {
                return index_not_found(part);
            }
        }
        for name in doomed {
            self.indices.remove(&name);
        }
        (200, json!({"acknowledged": true}))
    }

    fn aliases(&self, expression: &str, name: Option<&str>) -> (u16, Value) {
        let names = match self.resolve(expression, true) {
            Ok(names) => names,
            Err(e) => return e,
        };
        let mut out = Map::new();
        for index in names {
            let aliases: Map<String, Value> = self.indices[&index]
                .aliases
                .iter()
                .filter(|(a, _)| name.is_none_or(|n| n.split(',').any(|p| glob_match(p, a))))
                .map(|(a, s)| (a.clone(), s.clone()))
                .collect();
            if name.is_some() && aliases.is_empty() {
                continue;
            }
            out.insert(index, json!({"aliases": aliases}));
        }
        if let Some(name) = name
            && out.is_empty()
        {
            return (
                404,
                json!({"error": format!("alias [{name}] missing"), "status": 404}),
            );
        }
        (200, Value::Object(out))
    }

    /// `POST /_aliases`: every action checked, then all applied (atomically).
    fn update_aliases(&mut self, body: &Value) -> (u16, Value) {
        let Some(actions) = body.get("actions").and_then(Value::as_array) else {
            return error(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: no aliases actions specified;",
            );
        };
        let mut removed_indices: Vec<String> = Vec::new();
        let mut adds: Vec<(String, String, Value)> = Vec::new();
        let mut removes: Vec<(String, String)> = Vec::new();
        for action in actions {
            let Some((kind, spec)) = action.as_object().and_then(|o| o.iter().next()) else {
                return error(
                    400,
                    "x_content_parse_exception",
                    "[1:1] expected an action object",
                );
            };
            let listed = |one: &str, many: &str| -> Vec<String> {
                match (spec.get(one), spec.get(many)) {
                    (Some(Value::String(s)), _) => vec![s.clone()],
                    (_, Some(Value::Array(items))) => items
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect(),
                    _ => Vec::new(),
                }
            };
            let indices = listed("index", "indices");
            if indices.is_empty() {
                return error(
                    400,
                    "action_request_validation_exception",
                    "Validation Failed: 1: One of [index] or [indices] is required;",
                );
            }
            let mut concrete = Vec::new();
            for expression in &indices {
                match self.resolve(expression, true) {
                    Ok(names) if !names.is_empty() => concrete.extend(names),
                    Ok(_) => return index_not_found(expression),
                    Err(e) => return e,
                }
            }
            match kind.as_str() {
                "add" => {
                    let aliases = listed("alias", "aliases");
                    if aliases.is_empty() {
                        return error(
                            400,
                            "action_request_validation_exception",
                            "Validation Failed: 1: One of [alias] or [aliases] is required;",
                        );
                    }
                    let mut props = spec.as_object().cloned().unwrap_or_default();
                    for key in ["index", "indices", "alias", "aliases"] {
                        props.remove(key);
                    }
                    for alias in aliases {
                        for index in &concrete {
                            adds.push((index.clone(), alias.clone(), Value::Object(props.clone())));
                        }
                    }
                }
                "remove" => {
                    for alias in listed("alias", "aliases") {
                        for index in &concrete {
                            if !self.indices[index].aliases.contains_key(&alias) {
                                return error_with(
                                    404,
                                    json!({"type": "aliases_not_found_exception", "reason": format!("aliases [{alias}] missing"), "resource.type": "aliases", "resource.id": alias}),
                                );
                            }
                            removes.push((index.clone(), alias.clone()));
                        }
                    }
                }
                "remove_index" => {
                    for expression in &indices {
                        if !self.indices.contains_key(expression) {
                            return error(
                                400,
                                "illegal_argument_exception",
                                &format!(
                                    "The provided expression [{expression}] matches an alias, specify the corresponding concrete indices instead."
                                ),
                            );
                        }
                    }
                    removed_indices.extend(concrete);
                }
                other => {
                    return error(
                        400,
                        "x_content_parse_exception",
                        &format!("[1:1] [alias_action] unknown field [{other}]"),
                    );
                }
            }
        }
        for (_, alias, _) in &adds {
            if self.indices.contains_key(alias) && !removed_indices.contains(alias) {
                return error(
                    400,
                    "invalid_alias_name_exception",
                    &format!(
                        "Invalid alias name [{alias}]: an index or data stream exists with the same name as the alias"
                    ),
                );
            }
        }
        for name in &removed_indices {
            self.indices.remove(name);
        }
        for (index, alias) in removes {
            if let Some(i) = self.indices.get_mut(&index) {
                i.aliases.remove(&alias);
            }
        }
        for (index, alias, props) in adds {
            if let Some(i) = self.indices.get_mut(&index) {
                i.aliases.insert(alias, props);
            }
        }
        (200, json!({"acknowledged": true}))
    }

    fn refresh(&mut self, expression: &str) -> (u16, Value) {
        let names = match self.resolve(expression, true) {
            Ok(names) => names,
            Err(e) => return e,
        };
        for name in &names {
            self.indices.get_mut(name).unwrap().refresh();
        }
        (
            200,
            json!({"_shards": {"total": names.len() * 2, "successful": names.len(), "failed": 0}}),
        )
    }

    fn count(
        &mut self,
        expression: &str,
        body: &Value,
        params: &HashMap<String, String>,
    ) -> (u16, Value) {
        if let Some(n) = params.get("terminate_after")
            && n.parse::<i64>().is_ok_and(|n| n <= 0)
        {
            return error(
                400,
                "illegal_argument_exception",
                "terminateAfter must be > 0",
            );
        }
        if let Some(other) = body
            .as_object()
            .and_then(|o| o.keys().find(|k| k.as_str() != "query"))
        {
            return error(
                400,
                "parsing_exception",
                &format!("request does not support [{other}]"),
            );
        }
        let names = match self.resolve(expression, true) {
            Ok(names) => names,
            Err(e) => return e,
        };
        let query = body
            .get("query")
            .cloned()
            .unwrap_or(json!({"match_all": {}}));
        let mut count = 0;
        for name in &names {
            for doc in self.indices[name].visible.iter() {
                match matches(&query, doc) {
                    Ok(true) => count += 1,
                    Ok(false) => {}
                    Err(e) => return e,
                }
            }
        }
        (
            200,
            json!({"count": count, "_shards": {"total": names.len(), "successful": names.len(), "skipped": 0, "failed": 0}}),
        )
    }

    fn get_doc(&self, index: &str, id: &str) -> (u16, Value) {
        let Some(idx) = self.indices.get(index) else {
            return index_not_found(index);
        };
        // GET by id is real-time: it sees live documents, refreshed or not.
        match idx.by_id.get(id).and_then(|slot| idx.live.get(slot)) {
            Some(doc) => {
                let mut hit = json!({"_index": index, "_id": id, "_version": doc.version, "_seq_no": doc.seq_no,
                    "_primary_term": 1, "found": true, "_source": serde_json::from_str::<Value>(&doc.source).unwrap()});
                if let Some(r) = &doc.routing {
                    hit["_routing"] = json!(r);
                }
                (200, hit)
            }
            None => (404, json!({"_index": index, "_id": id, "found": false})),
        }
    }

    fn open_view(&mut self, expression: &str) -> Result<View, (u16, Value)> {
        let names = self.resolve(expression, true)?;
        let view = View {
            shards: names
                .iter()
                .map(|n| (n.clone(), self.indices[n].visible.clone()))
                .collect(),
        };
        if let Some(ndjson) = self.after_view.take() {
            let (status, answer) = self.bulk(None, &ndjson, &query_params("refresh=true"));
            assert_eq!(status, 200, "index_after_next_view: {answer}");
        }
        Ok(view)
    }

    fn open_pit(&mut self, expression: &str, params: &HashMap<String, String>) -> (u16, Value) {
        if !params.contains_key("keep_alive") {
            return error(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: [keep_alive] is not specified;",
            );
        }
        let view = match self.open_view(expression) {
            Ok(view) => view,
            Err(e) => return e,
        };
        let id = self.fresh_id("pit");
        let total = view.shards.len();
        self.pits.insert(id.clone(), view);
        (
            200,
            json!({"id": id, "_shards": {"total": total, "successful": total, "skipped": 0, "failed": 0}}),
        )
    }

    fn close_pit(&mut self, body: &Value) -> (u16, Value) {
        let Some(id) = body.get("id").and_then(Value::as_str) else {
            return error(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: point in time id is missing;",
            );
        };
        if self.pits.remove(id).is_some() {
            (200, json!({"succeeded": true, "num_freed": 1}))
        } else {
            (404, json!({"succeeded": true, "num_freed": 0}))
        }
    }

    fn total(&self, value: u64, track: &Value, as_int: bool) -> Value {
        if (self.major < 7 && !self.options.opensearch) || as_int {
            return json!(value);
        }
        match track {
            Value::Bool(true) => json!({"value": value, "relation": "eq"}),
            Value::Number(n) if value > n.as_u64().unwrap_or(0) => {
                json!({"value": n, "relation": "gte"})
            }
            Value::Null if value > 10_000 => json!({"value": 10_000, "relation": "gte"}),
            _ => json!({"value": value, "relation": "eq"}),
        }
    }

    /// The sort of a search: the body's `sort`, else the `sort` query parameter
    /// (`field[:order],…`), checked as Elasticsearch checks it.
    fn parse_sort(
        &self,
        body: &Value,
        params: &HashMap<String, String>,
        with_pit: bool,
        view: &View,
    ) -> Result<Vec<Sort>, (u16, Value)> {
        let mut specs: Vec<(String, String)> = Vec::new();
        match body.get("sort") {
            Some(sort) => {
                let keys: Vec<&Value> = match sort {
                    Value::Array(items) => items.iter().collect(),
                    other => vec![other],
                };
                for key in keys {
                    match key {
                        Value::String(f) => specs.push((f.clone(), String::new())),
                        Value::Object(o) => {
                            let (f, spec) = o.iter().next().ok_or_else(|| {
                                error(400, "parsing_exception", "[sort] empty sort object")
                            })?;
                            let order = spec
                                .as_str()
                                .or_else(|| spec.get("order").and_then(Value::as_str))
                                .unwrap_or("");
                            specs.push((f.clone(), order.to_string()));
                        }
                        _ => return Err(error(400, "parsing_exception", "[sort] malformed")),
                    }
                }
            }
            None => {
                if let Some(param) = params.get("sort") {
                    for part in param.split(',').filter(|p| !p.is_empty()) {
                        let (f, order) = part.split_once(':').unwrap_or((part, ""));
                        specs.push((f.to_string(), order.to_string()));
                    }
                }
            }
        }
        let mut sorts = Vec::new();
        for (field, order) in specs {
            let desc = match order.as_str() {
                "desc" => true,
                "asc" => false,
                // `_score` sorts descending by default, everything else ascending.
                "" => field == "_score",
                other => {
                    return Err(error(
                        400,
                        "illegal_argument_exception",
                        &format!("Unknown SortOrder [{other}]"),
                    ));
                }
            };
            let key = match field.as_str() {
                "_shard_doc" if self.options.opensearch && (self.major, self.minor) < (3, 3) => {
                    return Err(error(
                        400,
                        "query_shard_exception",
                        "No mapping found for [_shard_doc] in order to sort on",
                    ));
                }
                "_shard_doc" if !with_pit => {
                    return Err(error(
                        400,
                        "illegal_argument_exception",
                        "[_shard_doc] sort field cannot be used without [point in time]",
                    ));
                }
                "_shard_doc" => SortKey::ShardDoc,
                "_doc" => SortKey::Doc,
                "_id" => SortKey::Id,
                "_score" => SortKey::Score,
                _ => {
                    for (name, _) in &view.shards {
                        let mappings = self.indices.get(name).map(|i| &i.mappings);
                        if mapped_type(mappings, &field).as_deref() == Some("text") {
                            return Err(error(
                                400,
                                "illegal_argument_exception",
                                &format!(
                                    "Text fields are not optimised for operations that require per-document field data like aggregations and sorting, so these operations are disabled by default. Please use a keyword field instead. Alternatively, set fielddata=true on [{field}] in order to load field data by uninverting the inverted index. Note that this can use significant memory."
                                ),
                            ));
                        }
                    }
                    SortKey::Field(field)
                }
            };
            sorts.push(Sort { key, desc });
        }
        Ok(sorts)
    }

    fn search(
        &mut self,
        index: Option<&str>,
        body: &Value,
        params: &HashMap<String, String>,
    ) -> (u16, Value) {
        let size = body
            .get("size")
            .and_then(Value::as_u64)
            .or_else(|| params.get("size").and_then(|s| s.parse().ok()))
            .unwrap_or(10) as usize;
        let from = body.get("from").and_then(Value::as_u64).unwrap_or(0) as usize;
        let scroll = params.get("scroll").cloned();
        if scroll.is_some() {
            // Every validation failure is reported, numbered, as SearchRequest#validate does.
            let mut failures = Vec::new();
            if params.get("request_cache").map(String::as_str) == Some("true") {
                failures.push("[request_cache] cannot be used in a scroll context");
            }
            if size == 0 {
                failures.push("[size] cannot be [0] in a scroll context");
            }
            if !failures.is_empty() {
                let listed: String = failures
                    .iter()
                    .enumerate()
                    .map(|(i, f)| format!("{}: {f};", i + 1))
                    .collect();
                return error(
                    400,
                    "action_request_validation_exception",
                    &format!("Validation Failed: {listed}"),
                );
            }
        }
        let pit = body.get("pit");
        let view = match (pit, index) {
            (Some(_), Some(_)) => {
                return error(
                    400,
                    "action_request_validation_exception",
                    "Validation Failed: 1: [indices] cannot be used with point in time. Do not specify any index with point in time.;",
                );
            }
            (Some(pit), None) => {
                if scroll.is_some() {
                    return error(
                        400,
                        "action_request_validation_exception",
                        "Validation Failed: 1: using [point in time] is not allowed in a scroll context;",
                    );
                }
                let id = pit.get("id").and_then(Value::as_str).unwrap_or("");
                match self.pits.get(id) {
                    Some(view) => View {
                        shards: view.shards.clone(),
                    },
                    None => {
                        return error(
                            404,
                            "search_context_missing_exception",
                            &format!("No search context found for id [{id}]"),
                        );
                    }
                }
            }
            (None, index) => {
                if scroll.is_some() {
                    match self.open_view(index.unwrap_or("_all")) {
                        Ok(view) => view,
                        Err(e) => return e,
                    }
                } else {
                    match self.resolve(index.unwrap_or("_all"), true) {
                        Ok(names) => View {
                            shards: names
                                .iter()
                                .map(|n| (n.clone(), self.indices[n].visible.clone()))
                                .collect(),
                        },
                        Err(e) => return e,
                    }
                }
            }
        };
        // Sorting: `_shard_doc` / `_doc` (index order), `_id`, `_score`, or mapped fields.
        let sorts = match self.parse_sort(body, params, pit.is_some(), &view) {
            Ok(sorts) => sorts,
            Err(e) => return e,
        };
        let index_order = sorts.is_empty()
            || (sorts.len() == 1
                && matches!(sorts[0].key, SortKey::ShardDoc | SortKey::Doc)
                && !sorts[0].desc);
        let sorted = !sorts.is_empty();
        let after: Option<Vec<Value>> = match body.get("search_after") {
            None => None,
            Some(Value::Array(values)) if values.len() == sorts.len() => Some(
                values
                    .iter()
                    .zip(&sorts)
                    .map(|(v, s)| s.after_value(v))
                    .collect(),
            ),
            Some(Value::Array(values)) => {
                return error(
                    400,
                    "illegal_argument_exception",
                    &format!(
                        "search_after has {} value(s) but sort has {}.",
                        values.len(),
                        sorts.len()
                    ),
                );
            }
            Some(_) => {
                return error(400, "parsing_exception", "[search_after] must be an array");
            }
        };
        let query = body
            .get("query")
            .cloned()
            .unwrap_or(json!({"match_all": {}}));
        let match_all = query.get("match_all").is_some() && scroll.is_none() && index_order;
        let after_key = match (&after, index_order && sorted) {
            (Some(values), true) => values[0].as_u64(),
            _ => None,
        };
        // (key in index order, index, document, sort values)
        let mut matched: Vec<(u64, &str, &Arc<Doc>, Vec<Value>)> = Vec::new();
        let mut total_matched = 0u64;
        for (shard, (name, docs)) in view.shards.iter().enumerate() {
            if match_all {
                // Every document matches: only the page itself is collected.
                total_matched += docs.len() as u64;
                let first = match after_key {
                    Some(a) if (a >> 32) > shard as u64 => docs.len(),
                    Some(a) if (a >> 32) == shard as u64 => ((a & 0xffff_ffff) + 1) as usize,
                    _ => 0,
                };
                let room = (from + size).saturating_sub(matched.len());
                for (position, doc) in docs.iter().enumerate().skip(first).take(room) {
                    let key = ((shard as u64) << 32) | position as u64;
                    let values = if sorted { vec![json!(key)] } else { Vec::new() };
                    matched.push((key, name, doc, values));
                }
                continue;
            }
            let mappings = self.indices.get(name).map(|i| i.mappings.clone());
            for (position, doc) in docs.iter().enumerate() {
                let key = ((shard as u64) << 32) | position as u64;
                match matches(&query, doc) {
                    Ok(true) => {
                        let values = sorts
                            .iter()
                            .map(|s| s.value(key, doc, mappings.as_ref()))
                            .collect();
                        matched.push((key, name, doc, values));
                    }
                    Ok(false) => {}
                    Err(e) => return e,
                }
            }
        }
        if !match_all {
            total_matched = matched.len() as u64;
            // Ties keep index order (shard, then document), as Lucene's merge does.
            matched.sort_by(|a, b| compare_sorted(&sorts, &a.3, &b.3).then(a.0.cmp(&b.0)));
        }
        let wanted: Vec<&(u64, &str, &Arc<Doc>, Vec<Value>)> = matched
            .iter()
            .filter(|(_, _, _, values)| {
                after.as_ref().is_none_or(|a| {
                    compare_sorted(&sorts, values, a) == std::cmp::Ordering::Greater
                })
            })
            .collect();
        let source_wanted = !matches!(body.get("_source"), Some(Value::Bool(false)));
        let typed = self.major < 8 && !self.options.opensearch;
        let hit = |(_, name, doc, values): &(u64, &str, &Arc<Doc>, Vec<Value>)| {
            let mut hit = json!({"_index": name, "_id": doc.id, "_score": if sorted { Value::Null } else { json!(1.0) }});
            if typed {
                hit["_type"] = json!("_doc");
            }
            if let Some(r) = &doc.routing {
                hit["_routing"] = json!(r);
            }
            if source_wanted {
                hit["_source"] = serde_json::from_str::<Value>(&doc.source).unwrap();
            }
            if sorted {
                hit["sort"] = Value::Array(values.clone());
            }
            hit
        };
        let as_int = params.get("rest_total_hits_as_int").map(String::as_str) == Some("true");
        let track = body.get("track_total_hits").cloned().unwrap_or(Value::Null);
        if let Some(_keep) = scroll {
            let hits: Vec<Value> = wanted.iter().map(|m| hit(m)).collect();
            let first: Vec<Value> = hits.iter().take(size).cloned().collect();
            let id = self.fresh_id("scroll");
            let total = self.total(total_matched, &json!(true), as_int);
            self.scrolls.insert(
                id.clone(),
                Scroll {
                    hits,
                    at: first.len(),
                    size,
                    total: total_matched,
                },
            );
            return (
                200,
                json!({"_scroll_id": id, "took": 1, "timed_out": false, "_shards": shards(),
                "hits": {"total": total, "max_score": Value::Null, "hits": first}}),
            );
        }
        let page: Vec<Value> = wanted
            .iter()
            .skip(from)
            .take(size)
            .map(|m| hit(m))
            .collect();
        let mut answer = json!({"took": 1, "timed_out": false, "_shards": shards(), "hits": {"max_score": Value::Null, "hits": page}});
        if track != Value::Bool(false) {
            answer["hits"]["total"] = self.total(total_matched, &track, as_int);
        }
        if let Some(pit) = pit {
            answer["pit_id"] = pit["id"].clone();
        }
        (200, answer)
    }

    fn scroll_next(&mut self, body: &Value, params: &HashMap<String, String>) -> (u16, Value) {
        let Some(id) = body.get("scroll_id").and_then(Value::as_str) else {
            return error(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: scrollId is missing;",
            );
        };
        let as_int = params.get("rest_total_hits_as_int").map(String::as_str) == Some("true");
        let Some(scroll) = self.scrolls.get_mut(id) else {
            return error(
                404,
                "search_context_missing_exception",
                &format!("No search context found for id [{id}]"),
            );
        };
        let page: Vec<Value> = scroll.hits[scroll.at.min(scroll.hits.len())..]
            .iter()
            .take(scroll.size)
            .cloned()
            .collect();
        scroll.at += page.len();
        let total = scroll.total;
        let total = self.total(total, &json!(true), as_int);
        (
            200,
            json!({"_scroll_id": id, "took": 1, "timed_out": false, "_shards": shards(),
            "hits": {"total": total, "max_score": Value::Null, "hits": page}}),
        )
    }

    fn clear_scroll(&mut self, body: &Value) -> (u16, Value) {
        let ids: Vec<String> = match body.get("scroll_id") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => {
                return error(
                    400,
                    "action_request_validation_exception",
                    "Validation Failed: 1: no scroll ids specified;",
                );
            }
        };
        let mut freed = 0;
        for id in &ids {
            if id == "_all" {
                freed += self.scrolls.len();
                self.scrolls.clear();
            } else if self.scrolls.remove(id).is_some() {
                freed += 1;
            }
        }
        (
            if freed == 0 { 404 } else { 200 },
            json!({"succeeded": true, "num_freed": freed}),
        )
    }

    /// `_bulk`: NDJSON action/source pairs; per-item results, partial failure allowed.
    fn bulk(
        &mut self,
        default_index: Option<&str>,
        body: &[u8],
        params: &HashMap<String, String>,
    ) -> (u16, Value) {
        if self.reject_bulk_requests > 0 {
            self.reject_bulk_requests -= 1;
            self.rejected += 1;
            return error(
                429,
                "es_rejected_execution_exception",
                "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, replica_bytes=0, all_bytes=0, coordinating_operation_bytes=1048576, max_coordinating_and_primary_bytes=0]",
            );
        }
        let text = String::from_utf8_lossy(body);
        let mut lines = text
            .split('\n')
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let mut items = Vec::new();
        let mut errors = false;
        let mut touched = Vec::new();
        while let Some((number, line)) = lines.next() {
            let action: Value = match serde_json::from_str(line) {
                Ok(Value::Object(o)) => Value::Object(o),
                Ok(_) | Err(_) => {
                    return error(
                        400,
                        "illegal_argument_exception",
                        &format!(
                            "Malformed action/metadata line [{}], expected START_OBJECT but found [VALUE_STRING]",
                            number + 1
                        ),
                    );
                }
            };
            let Some((kind, meta)) = action
                .as_object()
                .unwrap()
                .iter()
                .next()
                .map(|(k, v)| (k.clone(), v.clone()))
            else {
                return error(
                    400,
                    "illegal_argument_exception",
                    &format!(
                        "Malformed action/metadata line [{}], expected FIELD_NAME but found [END_OBJECT]",
                        number + 1
                    ),
                );
            };
            if !matches!(kind.as_str(), "index" | "create" | "delete" | "update") {
                return error(
                    400,
                    "illegal_argument_exception",
                    &format!(
                        "Malformed action/metadata line [{}], expected one of [create, delete, index, update] but found [{kind}]",
                        number + 1
                    ),
                );
            }
            let index = meta
                .get("_index")
                .and_then(Value::as_str)
                .or(default_index)
                .map(str::to_string);
            let Some(index) = index else {
                return error(
                    400,
                    "action_request_validation_exception",
                    "Validation Failed: 1: index is missing;",
                );
            };
            let source = if kind == "delete" {
                None
            } else {
                match lines.next() {
                    Some((_, s)) => Some(s.to_string()),
                    None => {
                        return error(
                            400,
                            "illegal_argument_exception",
                            "The bulk request must be terminated by a newline [\\n]",
                        );
                    }
                }
            };
            let id = meta.get("_id").and_then(|v| {
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| v.as_u64().map(|n| n.to_string()))
            });
            let routing = meta
                .get("routing")
                .or(meta.get("_routing"))
                .and_then(Value::as_str)
                .map(str::to_string);
            let (status, item) = if id.as_deref() == Some("") {
                let (status, e) = error(
                    400,
                    "illegal_argument_exception",
                    "if _id is specified it must not be empty",
                );
                (
                    status,
                    json!({"_index": index, "_id": Value::Null, "status": status, "error": e["error"]["root_cause"][0]}),
                )
            } else if self.reject_bulk_items > 0 {
                self.reject_bulk_items -= 1;
                self.rejected += 1;
                let (status, e) = error(
                    429,
                    "es_rejected_execution_exception",
                    "rejected execution of primary operation",
                );
                (
                    status,
                    json!({"_index": index, "_id": id, "status": status, "error": e["error"]["root_cause"][0]}),
                )
            } else {
                self.bulk_item(&kind, &index, id, routing, source.as_deref())
            };
            if !(200..300).contains(&status) {
                errors = true;
            } else if !touched.contains(&index) {
                touched.push(index.clone());
            }
            items.push(json!({ kind: item }));
        }
        if matches!(
            params.get("refresh").map(String::as_str),
            Some("true" | "" | "wait_for")
        ) {
            for name in touched {
                if let Some(i) = self.indices.get_mut(&name) {
                    i.refresh();
                }
            }
        }
        (200, json!({"errors": errors, "took": 1, "items": items}))
    }

    fn bulk_item(
        &mut self,
        kind: &str,
        index: &str,
        id: Option<String>,
        routing: Option<String>,
        source: Option<&str>,
    ) -> (u16, Value) {
        // Writes through an alias go to its one index.
        let index = match self.indices.contains_key(index) {
            true => index.to_string(),
            false => match self.resolve(index, false) {
                Ok(names) if names.len() == 1 => names[0].clone(),
                Ok(names) if names.len() > 1 => {
                    let (status, e) = error(
                        400,
                        "illegal_argument_exception",
                        &format!(
                            "no write index is defined for alias [{index}]. The write index may be explicitly disabled using is_write_index=false or the alias points to multiple indices without one being designated as a write index"
                        ),
                    );
                    return (
                        status,
                        json!({"_index": index, "_id": id, "status": status, "error": e["error"]["root_cause"][0]}),
                    );
                }
                _ => {
                    if kind == "delete" {
                        let (status, e) = index_not_found(index);
                        return (
                            status,
                            json!({"_index": index, "_id": id, "status": status, "error": e["error"]["root_cause"][0]}),
                        );
                    }
                    // action.auto_create_index: created with defaults and dynamic mappings.
                    let (status, e) = self.create_index(index, &json!({}));
                    if status != 200 {
                        return (
                            status,
                            json!({"_index": index, "_id": id, "status": status, "error": e["error"]["root_cause"][0]}),
                        );
                    }
                    index.to_string()
                }
            },
        };
        let id = match (id, kind) {
            (Some(id), _) => id,
            (None, "index" | "create") => self.fresh_id("a"),
            (None, _) => {
                let (status, e) = error(
                    400,
                    "action_request_validation_exception",
                    "Validation Failed: 1: id is missing;",
                );
                return (
                    status,
                    json!({"_index": index, "status": status, "error": e["error"]["root_cause"][0]}),
                );
            }
        };
        let failure = |status: u16, cause: Value| {
            (
                status,
                json!({"_index": index, "_id": id, "status": status, "error": cause}),
            )
        };
        let major_minor = (self.major, self.minor);
        let idx = self.indices.get_mut(&index).unwrap();
        let existing = idx
            .by_id
            .get(&id)
            .and_then(|slot| idx.live.get(slot))
            .cloned();
        let source = match kind {
            "delete" => None,
            "create" if existing.is_some() => {
                return failure(
                    409,
                    json!({"type": "version_conflict_engine_exception",
                    "reason": format!("[{id}]: version conflict, document already exists (current version [{}])", existing.as_ref().unwrap().version),
                    "index_uuid": idx.settings["index.uuid"], "shard": "0", "index": index}),
                );
            }
            "update" => {
                let Some(current) = &existing else {
                    return failure(
                        404,
                        json!({"type": "document_missing_exception", "reason": format!("[{id}]: document missing"),
                        "index_uuid": idx.settings["index.uuid"], "shard": "0", "index": index}),
                    );
                };
                let update: Value =
                    serde_json::from_str(source.unwrap_or("{}")).unwrap_or(Value::Null);
                let mut merged: Value = serde_json::from_str(&current.source).unwrap();
                if let (Some(target), Some(doc)) = (
                    merged.as_object_mut(),
                    update.get("doc").and_then(Value::as_object),
                ) {
                    for (k, v) in doc {
                        target.insert(k.clone(), v.clone());
                    }
                }
                Some(merged.to_string())
            }
            _ => Some(source.unwrap_or("").to_string()),
        };
        let Some(source) = source else {
            // delete
            return match existing {
                Some(doc) => {
                    let slot = idx.by_id.remove(&id).unwrap();
                    idx.live.remove(&slot);
                    idx.dirty = true;
                    idx.seq_no += 1;
                    (
                        200,
                        json!({"_index": index, "_id": id, "_version": doc.version + 1, "result": "deleted",
                        "_shards": {"total": 2, "successful": 1, "failed": 0}, "_seq_no": idx.seq_no, "_primary_term": 1, "status": 200}),
                    )
                }
                None => (
                    404,
                    json!({"_index": index, "_id": id, "_version": 1, "result": "not_found",
                    "_shards": {"total": 2, "successful": 1, "failed": 0}, "_seq_no": idx.seq_no, "_primary_term": 1, "status": 404}),
                ),
            };
        };
        let parsed: Value = match serde_json::from_str(&source) {
            Ok(Value::Object(o)) => Value::Object(o),
            _ => {
                let kind = if major_minor >= (8, 8) {
                    "document_parsing_exception"
                } else {
                    "mapper_parsing_exception"
                };
                return failure(
                    400,
                    json!({"type": kind, "reason": "[1:1] failed to parse: the document is not a JSON object"}),
                );
            }
        };
        if let Err((field, expected, preview)) = check_and_map(&mut idx.mappings, &parsed) {
            let kind = if major_minor >= (8, 8) {
                "document_parsing_exception"
            } else {
                "mapper_parsing_exception"
            };
            let reason = if expected == "strict" {
                format!(
                    "[1:2] mapping set to strict, dynamic introduction of [{field}] within [_doc] is not allowed"
                )
            } else {
                format!(
                    "[1:2] failed to parse field [{field}] of type [{expected}] in document with id '{id}'. Preview of field's value: '{preview}'"
                )
            };
            let kind = if expected == "strict" {
                "strict_dynamic_mapping_exception"
            } else {
                kind
            };
            return failure(
                400,
                json!({"type": kind, "reason": reason,
                "caused_by": {"type": "illegal_argument_exception", "reason": format!("cannot parse [{preview}] as [{expected}]")}}),
            );
        }
        let compact = parsed.to_string();
        let version = existing.as_ref().map(|d| d.version + 1).unwrap_or(1);
        if let Some(slot) = idx.by_id.remove(&id) {
            idx.live.remove(&slot);
        }
        let slot = idx.next_slot;
        idx.next_slot += 1;
        idx.seq_no += 1;
        let doc = Doc {
            id: id.clone(),
            source: compact,
            routing: routing.clone(),
            version,
            seq_no: idx.seq_no,
        };
        idx.live.insert(slot, Arc::new(doc));
        idx.by_id.insert(id.clone(), slot);
        idx.dirty = true;
        let (status, result) = if existing.is_some() {
            (200, "updated")
        } else {
            (201, "created")
        };
        let mut item = json!({"_index": index, "_id": id, "_version": version, "result": result,
            "_shards": {"total": 2, "successful": 1, "failed": 0}, "_seq_no": idx.seq_no, "_primary_term": 1, "status": status});
        if let Some(r) = routing {
            item["_routing"] = json!(r);
        }
        (status, item)
    }
}

/// `{"index": {"number_of_shards": 1}}` → `index.number_of_shards = "1"` (values as strings).
fn flatten_settings(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(o) => {
            for (k, v) in o {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_settings(&key, v, out);
            }
        }
        Value::String(s) => {
            out.insert(prefix.to_string(), json!(s));
        }
        Value::Array(items) => {
            let strings: Vec<Value> = items.iter().map(|v| json!(scalar_string(v))).collect();
            out.insert(prefix.to_string(), Value::Array(strings));
        }
        other => {
            out.insert(prefix.to_string(), json!(scalar_string(other)));
        }
    }
}

fn scalar_string(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Flat settings nested back into objects, as `GET` answers without `flat_settings`.
fn nest(flat: &BTreeMap<String, Value>) -> Value {
    let mut root = Map::new();
    for (key, value) in flat {
        let parts: Vec<&str> = key.split('.').collect();
        let mut node = &mut root;
        for part in &parts[..parts.len() - 1] {
            node = node
                .entry(part.to_string())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .unwrap();
        }
        node.insert(parts[parts.len() - 1].to_string(), value.clone());
    }
    Value::Object(root)
}

/// The queries a backup and the tests use: `match_all`, `ids`, `term` on a top-level field.
fn matches(query: &Value, doc: &Doc) -> Result<bool, (u16, Value)> {
    let Some((kind, spec)) = query.as_object().and_then(|o| o.iter().next()) else {
        return Ok(true);
    };
    match kind.as_str() {
        "match_all" => Ok(true),
        "ids" => Ok(spec
            .get("values")
            .and_then(Value::as_array)
            .is_some_and(|v| v.iter().any(|x| x.as_str() == Some(&doc.id)))),
        "match" => {
            let (field, wanted) = spec
                .as_object()
                .and_then(|o| o.iter().next())
                .ok_or_else(|| error(400, "parsing_exception", "[match] query malformed"))?;
            let wanted = wanted.get("query").unwrap_or(wanted);
            let source: Value = serde_json::from_str(&doc.source).unwrap();
            let Some(value) = source.pointer(&format!("/{}", field.replace('.', "/"))) else {
                return Ok(false);
            };
            Ok(match (value, wanted) {
                (Value::String(have), Value::String(want)) => {
                    let have = words(have);
                    words(want).iter().any(|w| have.contains(w))
                }
                (have, want) => have == want || have.to_string() == scalar_string(want),
            })
        }
        "term" => {
            let (field, wanted) = spec
                .as_object()
                .and_then(|o| o.iter().next())
                .ok_or_else(|| error(400, "parsing_exception", "[term] query malformed"))?;
            let wanted = wanted.get("value").unwrap_or(wanted);
            let source: Value = serde_json::from_str(&doc.source).unwrap();
            Ok(source.pointer(&format!("/{}", field.replace('.', "/"))) == Some(wanted))
        }
        other => Err(error(
            400,
            "parsing_exception",
            &format!("the emulator does not implement the [{other}] query"),
        )),
    }
}

/// Checks a document against the mapping, adding dynamic fields (`dynamic` true) as
/// Elasticsearch does; `Err((field, type, preview))` for a value the mapped type cannot parse.
fn check_and_map(mappings: &mut Value, doc: &Value) -> Result<(), (String, String, String)> {
    let dynamic = mappings
        .get("dynamic")
        .map(scalar_string)
        .unwrap_or_else(|| "true".into());
    let root = mappings.as_object_mut().unwrap();
    let properties = root.entry("properties").or_insert_with(|| json!({}));
    let added = map_object("", properties, doc.as_object().unwrap(), &dynamic)?;
    if !added && properties.as_object().is_some_and(|p| p.is_empty()) {
        root.remove("properties");
    }
    Ok(())
}

fn map_object(
    prefix: &str,
    properties: &mut Value,
    object: &Map<String, Value>,
    dynamic: &str,
) -> Result<bool, (String, String, String)> {
    let mut added = false;
    for (name, value) in object {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let props = properties.as_object_mut().unwrap();
        if !props.contains_key(name) {
            if value.is_null() || dynamic == "false" {
                continue;
            }
            if dynamic == "strict" {
                return Err((path, "strict".into(), String::new()));
            }
            let Some(mapping) = dynamic_mapping(value) else {
                continue;
            };
            props.insert(name.clone(), mapping);
            added = true;
        }
        let field = props.get_mut(name).unwrap();
        added |= check_value(&path, field, value, dynamic)?;
    }
    Ok(added)
}

/// The mapping dynamic mapping gives a new field.
fn dynamic_mapping(value: &Value) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::Bool(_) => Some(json!({"type": "boolean"})),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(json!({"type": "long"})),
        Value::Number(_) => Some(json!({"type": "float"})),
        Value::String(s) if parse_date(s) => Some(json!({"type": "date"})),
        Value::String(_) => Some(
            json!({"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}),
        ),
        Value::Array(items) => items.iter().find_map(dynamic_mapping),
        Value::Object(_) => Some(json!({"properties": {}})),
    }
}

fn check_value(
    path: &str,
    field: &mut Value,
    value: &Value,
    dynamic: &str,
) -> Result<bool, (String, String, String)> {
    if let Value::Array(items) = value {
        let mut added = false;
        for item in items {
            added |= check_value(path, field, item, dynamic)?;
        }
        return Ok(added);
    }
    if value.is_null() {
        return Ok(false);
    }
    let kind = field
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("object")
        .to_string();
    let preview = || {
        let text = scalar_string(value);
        text.chars().take(20).collect::<String>()
    };
    let bad = || Err((path.to_string(), kind.clone(), preview()));
    let numeric =
        |v: &Value| v.is_number() || v.as_str().is_some_and(|s| s.trim().parse::<f64>().is_ok());
    match kind.as_str() {
        "object" | "nested" => match value {
            Value::Object(inner) => {
                let dynamic = field
                    .get("dynamic")
                    .map(scalar_string)
                    .unwrap_or_else(|| dynamic.to_string());
                let properties = field
                    .as_object_mut()
                    .unwrap()
                    .entry("properties")
                    .or_insert_with(|| json!({}));
                map_object(path, properties, inner, &dynamic)
            }
            _ => Err((path.to_string(), kind.clone(), preview())),
        },
        "long" | "integer" | "short" | "byte" | "unsigned_long" => {
            let ok = match value {
                Value::Number(n) => n.as_f64().is_some_and(|f| f.is_finite()),
                Value::String(s) => s.trim().parse::<f64>().is_ok(),
                _ => false,
            };
            if ok { Ok(false) } else { bad() }
        }
        "float" | "double" | "half_float" | "scaled_float" => {
            if numeric(value) {
                Ok(false)
            } else {
                bad()
            }
        }
        "boolean" => match value {
            Value::Bool(_) => Ok(false),
            Value::String(s) if matches!(s.as_str(), "true" | "false" | "") => Ok(false),
            _ => bad(),
        },
        "date" => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(false),
            Value::String(s) if parse_date(s) || s.parse::<i64>().is_ok() => Ok(false),
            _ => bad(),
        },
        "keyword" | "text" | "match_only_text" | "wildcard" | "constant_keyword"
        | "search_as_you_type" => match value {
            Value::Object(_) => bad(),
            _ => Ok(false),
        },
        "ip" => match value {
            Value::String(s) if s.parse::<std::net::IpAddr>().is_ok() => Ok(false),
            _ => bad(),
        },
        "geo_point" => {
            let ok = match value {
                Value::Object(o) => {
                    let lat = o.get("lat").and_then(Value::as_f64);
                    let lon = o.get("lon").and_then(Value::as_f64);
                    matches!((lat, lon), (Some(lat), Some(lon)) if lat.abs() <= 90.0 && lon.abs() <= 180.0)
                }
                Value::String(s) => match s.split_once(',') {
                    Some((lat, lon)) => {
                        lat.trim().parse::<f64>().is_ok() && lon.trim().parse::<f64>().is_ok()
                    }
                    None => !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric()),
                },
                _ => false,
            };
            if ok { Ok(false) } else { bad() }
        }
        // Types the emulator does not check take any value.
        _ => Ok(false),
    }
}

/// `strict_date_optional_time`: `yyyy-MM-dd['T'HH:mm[:ss[.SSS]]][Z|±HH:mm]`.
fn parse_date(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        range
            .clone()
            .all(|i| b.get(i).is_some_and(u8::is_ascii_digit))
    };
    if b.len() < 10
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
    {
        return false;
    }
    let month: u32 = text[5..7].parse().unwrap();
    let day: u32 = text[8..10].parse().unwrap();
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return false;
    }
    if b.len() == 10 {
        return true;
    }
    if b[10] != b'T' || b.len() < 16 || !digits(11..13) || b[13] != b':' || !digits(14..16) {
        return false;
    }
    let mut rest = &text[16..];
    if let Some(r) = rest.strip_prefix(':') {
        if r.len() < 2 || !r[..2].bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
        rest = &r[2..];
        if let Some(r) = rest.strip_prefix('.') {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 {
                return false;
            }
            rest = &r[n..];
        }
    }
    match rest {
        "" | "Z" => true,
        zone => {
            let z = zone.as_bytes();
            z.len() == 6
                && (z[0] == b'+' || z[0] == b'-')
                && z[3] == b':'
                && z[1..3].iter().chain(&z[4..6]).all(u8::is_ascii_digit)
        }
    }
}

/// What a search sorts by.
enum SortKey {
    /// Shard and document position: unique, needs a point in time.
    ShardDoc,
    /// Index order.
    Doc,
    Id,
    Score,
    Field(String),
}

struct Sort {
    key: SortKey,
    desc: bool,
}

impl Sort {
    /// The sort value of one document (`null` when it has no value: sorted last).
    fn value(&self, key: u64, doc: &Doc, mappings: Option<&Value>) -> Value {
        match &self.key {
            SortKey::ShardDoc | SortKey::Doc => json!(key),
            SortKey::Id => json!(doc.id),
            SortKey::Score => json!(1.0),
            SortKey::Field(field) => {
                let source: Value = serde_json::from_str(&doc.source).unwrap_or(Value::Null);
                let value = source
                    .pointer(&format!("/{}", field.replace('.', "/")))
                    .cloned()
                    .unwrap_or(Value::Null);
                match mapped_type(mappings, field).as_deref() {
                    Some("date") => date_millis(&value).map_or(Value::Null, |m| json!(m)),
                    Some("boolean") => match value {
                        Value::Bool(b) => json!(u8::from(b)),
                        other => other,
                    },
                    _ => value,
                }
            }
        }
    }

    /// A `search_after` value as the sort compares it (dates may be given formatted).
    fn after_value(&self, value: &Value) -> Value {
        match (&self.key, value) {
            (SortKey::Field(_), Value::String(text)) => date_millis(value)
                .map(|m| json!(m))
                .unwrap_or_else(|| json!(text)),
            _ => value.clone(),
        }
    }
}

/// Orders two rows of sort values; documents without a value come last in either order.
fn compare_sorted(sorts: &[Sort], a: &[Value], b: &[Value]) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    for (sort, (x, y)) in sorts.iter().zip(a.iter().zip(b)) {
        let ordering = match (x, y) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Null, _) => return Ordering::Greater,
            (_, Value::Null) => return Ordering::Less,
            (Value::Number(m), Value::Number(n)) => match (m.as_i64(), n.as_i64()) {
                (Some(m), Some(n)) => m.cmp(&n),
                _ => m
                    .as_f64()
                    .unwrap_or(0.0)
                    .total_cmp(&n.as_f64().unwrap_or(0.0)),
            },
            (Value::String(m), Value::String(n)) => m.cmp(n),
            (m, n) => m.to_string().cmp(&n.to_string()),
        };
        let ordering = if sort.desc {
            ordering.reverse()
        } else {
            ordering
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    Ordering::Equal
}

/// The mapped `type` of a dotted field path, if mapped.
fn mapped_type(mappings: Option<&Value>, field: &str) -> Option<String> {
    let mut node = mappings?;
    for part in field.split('.') {
        node = node.get("properties")?.get(part)?;
    }
    node.get("type").and_then(Value::as_str).map(str::to_string)
}

/// Milliseconds since the epoch of a date value (a number of millis, or an ISO 8601 text).
fn date_millis(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(text) => {
            if let Ok(t) = text.parse::<jiff::Timestamp>() {
                return Some(t.as_millisecond());
            }
            let civil = text.parse::<jiff::civil::DateTime>().ok().or_else(|| {
                text.parse::<jiff::civil::Date>()
                    .ok()
                    .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
            })?;
            civil
                .to_zoned(jiff::tz::TimeZone::UTC)
                .ok()
                .map(|z| z.timestamp().as_millisecond())
        }
        _ => None,
    }
}

/// Whether some mapped property (at any depth) is named "".
fn has_empty_field_name(mapping: &Value) -> bool {
    mapping
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| {
            p.iter()
                .any(|(k, v)| k.is_empty() || has_empty_field_name(v))
        })
}

/// An alias definition as the cluster keeps it: `routing` split into index and search
/// routing, `is_write_index` as a boolean.
fn alias_spec(given: &Value) -> Value {
    let mut spec = given.as_object().cloned().unwrap_or_default();
    if let Some(routing) = spec.remove("routing") {
        spec.entry("index_routing").or_insert(routing.clone());
        spec.entry("search_routing").or_insert(routing);
    }
    if let Some(Value::String(flag)) = spec.get("is_write_index") {
        let flag = flag == "true";
        spec.insert("is_write_index".into(), json!(flag));
    }
    Value::Object(spec)
}

/// Milliseconds of an Elasticsearch time value ("5m", "23h", "90s", "100ms").
fn time_value_millis(text: &str) -> Option<u64> {
    let digits = text.trim_end_matches(char::is_alphabetic);
    let n: u64 = digits.parse().ok()?;
    let unit = match &text[digits.len()..] {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(n * unit)
}

/// Lowercased words of a text, as the standard analyzer splits them.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}
