//! In-memory fake of the Google Drive v3 REST API and Google's OAuth token endpoint, for tests.
//!
//! Serves `/token`, `/drive/v3/files…` and `/upload/drive/v3/files…` on 127.0.0.1 from its own
//! thread and tokio runtime, so synchronous tests can use it. Shapes follow the Drive v3
//! discovery document and guides: error envelope, field masks, the `q` subset clients use,
//! paging, Range downloads, and the 5 MB limit of `uploadType=media|multipart`.
#![allow(dead_code)] // test crates use different parts of it
#![allow(clippy::result_large_err)] // errors are ready-made HTTP responses, on a cold path

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_RANGE, CONTENT_TYPE, HeaderName, HeaderValue, RANGE};
use hyper::{HeaderMap, Method, Response, StatusCode};
use rand::{Rng, distr::Alphanumeric};
use serde_json::{Map, Value, json};

pub const FOLDER_MIME: &str = "application/vnd.google-apps.folder";
/// Drive's documented ceiling for `uploadType=media|multipart`; bigger files need resumable.
pub const MAX_SIMPLE_UPLOAD: usize = 5 * 1024 * 1024;

/// How injected throttling answers; Drive uses all three.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Throttle {
    /// 403 `rateLimitExceeded` "Rate Limit Exceeded".
    RateLimit,
    /// 403 `userRateLimitExceeded` "User rate limit exceeded." (the per-user quota).
    UserRateLimit,
    /// 429 `rateLimitExceeded` "Too Many Requests".
    TooManyRequests,
}

/// Counters for assertions. `requests` counts Drive API requests (not `/token`);
/// `rejected_expired` counts requests refused because their token had expired;
/// `largest_upload` is the largest media payload received, rejected ones included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub token_grants: u64,
    pub rejected_expired: u64,
    pub rate_limited: u64,
    pub uploads: u64,
    pub largest_upload: u64,
    pub requests: u64,
}

/// A running fake; `stop` or drop shuts the server down.
pub struct DriveFake {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DriveFake {
    pub const CLIENT_ID: &'static str = "fake-client.apps.googleusercontent.com";
    pub const CLIENT_SECRET: &'static str = "fake-client-secret";
    pub const REFRESH_TOKEN: &'static str = "1//fake-refresh-token";

    /// Binds 127.0.0.1 on a free port; returns once the server accepts connections.
    pub fn start() -> DriveFake {
        let state = Arc::new(Mutex::new(State::new()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("drive fake: bind");
        listener
            .set_nonblocking(true)
            .expect("drive fake: nonblocking listener");
        let addr = listener.local_addr().expect("drive fake: local addr");
        let (shutdown, stop) = tokio::sync::oneshot::channel();
        let shared = state.clone();
        let thread = std::thread::Builder::new()
            .name("drive-fake".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                rt.expect("drive fake: runtime")
                    .block_on(accept_loop(listener, shared, stop));
            })
            .expect("drive fake: spawn thread");
        DriveFake {
            state,
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// Lifetime of tokens granted from now on (default 3600 s).
    pub fn set_token_lifetime(&self, secs: u64) {
        self.lock().token_lifetime = secs;
    }
    /// Expires every token granted so far, as if their lifetime had passed.
    pub fn expire_all_tokens(&self) {
        let now = Instant::now();
        self.lock()
            .tokens
            .values_mut()
            .for_each(|expiry| *expiry = now);
    }
    /// The next `n` API requests (not `/token`) get 403 `rateLimitExceeded`.
    pub fn rate_limit_next(&self, n: usize) {
        self.throttle_next(n, Throttle::RateLimit);
    }
    pub fn throttle_next(&self, n: usize, kind: Throttle) {
        self.lock().throttle = (n, kind);
    }
    /// Lets `email` obtain tokens with JWTs signed by the key whose public half is given
    /// (RSAPublicKey, PKCS#1 DER), as a Google service account does.
    pub fn trust_service_account(&self, email: &str, public_key_der: Vec<u8>) {
        self.lock()
            .service_accounts
            .insert(email.to_string(), public_key_der);
    }
    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }
    /// The id behind the `root` alias.
    pub fn root_id(&self) -> String {
        self.lock().root_id.clone()
    }
    /// Untrashed children of the folder at `folder_path` (names from My Drive, "" = root),
    /// sorted; folders show as `"name/"` with size 0. Unknown folder: empty.
    pub fn files_in(&self, folder_path: &str) -> Vec<(String, u64)> {
        let st = self.lock();
        let Some(dir) = st.resolve_path(folder_path, true) else {
            return Vec::new();
        };
        drop(st);
        self.files_in_folder(&dir)
    }
    /// A folder another account owns and shared with this one: reachable by its id, not
    /// from this account's My Drive (its parent is not visible). Returns the id.
    pub fn add_shared_folder(&self, name: &str) -> String {
        let mut st = self.lock();
        let id = format!("1S{}", random_chars(31));
        let now = st.now();
        st.files
            .insert(id.clone(), Entry::parentless_folder(&id, name, now));
        id
    }
    /// Untrashed children of the folder with this id, as [`files_in`](Self::files_in).
    pub fn files_in_folder(&self, folder_id: &str) -> Vec<(String, u64)> {
        let st = self.lock();
        let mut out: Vec<(String, u64)> = st
            .children(folder_id)
            .map(|f| match f.is_folder() {
                true => (format!("{}/", f.name), 0),
                false => (f.name.clone(), f.data.len() as u64),
            })
            .collect();
        out.sort();
        out
    }
    /// Content of the newest untrashed file at `path` (names from My Drive).
    pub fn file_bytes(&self, path: &str) -> Option<Vec<u8>> {
        let st = self.lock();
        st.resolve_path(path, false)
            .map(|id| st.files[&id].data.to_vec())
    }
    pub fn stop(self) {}

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for DriveFake {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            tx.send(()).ok();
        }
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}

type Stop = tokio::sync::oneshot::Receiver<()>;

async fn accept_loop(listener: std::net::TcpListener, state: Arc<Mutex<State>>, mut stop: Stop) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("drive fake: tokio listener");
    loop {
        let stream = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted { Ok((stream, _)) => stream, Err(_) => continue },
        };
        let state = state.clone();
        let service = hyper::service::service_fn(move |req| serve(state.clone(), req));
        let io = hyper_util::rt::TokioIo::new(stream);
        tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, service));
    }
}

type Resp = Response<Full<Bytes>>;
/// Uploaded content and the Content-Type it came with.
type Media = (Bytes, Option<String>);

struct Entry {
    id: String,
    name: String,
    mime: String,
    parents: Vec<String>,
    data: Bytes,
    md5: String,
    created: String,
    modified: String,
    /// Explicitly trashed; everything under a trashed folder counts as trashed too.
    trashed: bool,
}

impl Entry {
    /// A folder with no visible parent: My Drive's root, or one shared from another account.
    fn parentless_folder(id: &str, name: &str, now: String) -> Entry {
        Entry {
            id: id.into(),
            name: name.into(),
            mime: FOLDER_MIME.into(),
            parents: vec![],
            data: Bytes::new(),
            md5: String::new(),
            created: now.clone(),
            modified: now,
            trashed: false,
        }
    }

    fn is_folder(&self) -> bool {
        self.mime == FOLDER_MIME
    }
}

struct State {
    files: HashMap<String, Entry>,
    root_id: String,
    tokens: HashMap<String, Instant>,
    token_lifetime: u64,
    throttle: (usize, Throttle),
    stats: Stats,
    last_ms: u64,
    /// Service accounts the token endpoint trusts: email → RSA public key (PKCS#1 DER).
    service_accounts: HashMap<String, Vec<u8>>,
}

impl State {
    fn new() -> State {
        let root_id = format!("0A{}", random_chars(17));
        let mut st = State {
            files: HashMap::new(),
            root_id: root_id.clone(),
            tokens: HashMap::new(),
            token_lifetime: 3600,
            throttle: (0, Throttle::RateLimit),
            stats: Stats::default(),
            last_ms: 0,
            service_accounts: HashMap::new(),
        };
        let now = st.now();
        let root = Entry::parentless_folder(&root_id, "My Drive", now);
        st.files.insert(root_id, root);
        st
    }

    /// Wall-clock RFC 3339 time, strictly increasing so "newest first" orders are deterministic.
    fn now(&mut self) -> String {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        self.last_ms = wall.max(self.last_ms + 1);
        rfc3339(self.last_ms)
    }

    fn resolve_id<'a>(&'a self, id: &'a str) -> &'a str {
        if id == "root" { &self.root_id } else { id }
    }

    fn lookup(&self, id: &str) -> Result<&Entry, Resp> {
        self.files
            .get(self.resolve_id(id))
            .ok_or_else(|| not_found(id))
    }

    /// `id` itself, then its parent, grandparent… up to the root.
    fn lineage<'a>(&'a self, id: &str) -> impl Iterator<Item = &'a Entry> + 'a {
        std::iter::successors(self.files.get(id), |f| self.files.get(f.parents.first()?))
    }

    fn is_under(&self, id: &str, ancestor: &str) -> bool {
        self.lineage(id).any(|f| f.id == ancestor)
    }

    fn is_trashed(&self, id: &str) -> bool {
        self.lineage(id).any(|f| f.trashed)
    }

    fn children<'a>(&'a self, dir: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.files
            .values()
            .filter(move |f| f.parents.iter().any(|p| p == dir) && !self.is_trashed(&f.id))
    }

    /// Walks names from the root, taking the newest of same-named entries as clients do.
    fn resolve_path(&self, path: &str, want_folder: bool) -> Option<String> {
        let names: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut cur = self.root_id.clone();
        for (i, name) in names.iter().enumerate() {
            let folder = want_folder || i + 1 < names.len();
            let hits = self
                .children(&cur)
                .filter(|f| f.name == *name && f.is_folder() == folder);
            cur = hits.max_by(|a, b| a.modified.cmp(&b.modified))?.id.clone();
        }
        Some(cur)
    }

    fn file_json(&self, id: &str) -> Value {
        let f = &self.files[id];
        let mut v = json!({
            "kind": "drive#file", "id": f.id, "name": f.name, "mimeType": f.mime,
            "createdTime": f.created, "modifiedTime": f.modified,
            "trashed": self.is_trashed(&f.id), "explicitlyTrashed": f.trashed,
        });
        if !f.parents.is_empty() {
            v["parents"] = json!(f.parents);
        }
        if !f.mime.starts_with("application/vnd.google-apps.") {
            v["size"] = json!(f.data.len().to_string());
            v["md5Checksum"] = json!(f.md5);
        }
        v
    }

    /// A file has at most one parent (Drive since 2020), an existing folder, and no cycles.
    fn check_parents(&self, parents: &[String], moving: Option<&str>) -> Result<(), Resp> {
        if parents.len() > 1 {
            return Err(fail(
                403,
                "cannotAddParent",
                "Increasing the number of parents is not allowed.",
            ));
        }
        for p in parents {
            if !self.files.get(p).ok_or_else(|| not_found(p))?.is_folder() {
                return Err(fail(
                    400,
                    "badRequest",
                    "The specified parent is not a folder.",
                ));
            }
            if moving.is_some_and(|m| self.is_under(p, m)) {
                return Err(fail(
                    400,
                    "badRequest",
                    "The new parent would create a cycle.",
                ));
            }
        }
        Ok(())
    }
}

struct Req {
    method: Method,
    path: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
}

impl Req {
    fn param(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }
    fn header(&self, name: HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn serve(
    state: Arc<Mutex<State>>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<Resp, hyper::Error> {
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().unwrap_or("").as_bytes();
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: url::form_urlencoded::parse(query).into_owned().collect(),
        headers: parts.headers,
        body: body.collect().await?.to_bytes(),
    };
    let mut st = state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    Ok(route(&mut st, &req).unwrap_or_else(|error| error))
}

fn route(st: &mut State, r: &Req) -> Result<Resp, Resp> {
    if r.path == "/token" {
        return Ok(token(st, r));
    }
    st.stats.requests += 1;
    authorize(st, r)?;
    if st.throttle.0 > 0 {
        st.throttle.0 -= 1;
        st.stats.rate_limited += 1;
        let (code, reason, message) = match st.throttle.1 {
            Throttle::RateLimit => (403, "rateLimitExceeded", "Rate Limit Exceeded"),
            Throttle::UserRateLimit => (403, "userRateLimitExceeded", "User rate limit exceeded."),
            Throttle::TooManyRequests => (429, "rateLimitExceeded", "Too Many Requests"),
        };
        return Err(api_error(code, "usageLimits", reason, message, None));
    }
    let segs: Vec<&str> = r.path.trim_matches('/').split('/').collect();
    match (&r.method, segs.as_slice()) {
        (&Method::GET, ["drive", "v3", "files"]) => list(st, r),
        (&Method::POST, ["drive", "v3", "files"]) => create(st, r),
        (&Method::GET, ["drive", "v3", "files", id]) => get(st, r, id),
        (&Method::PATCH, ["drive", "v3", "files", id]) => update(st, r, id),
        (&Method::DELETE, ["drive", "v3", "files", id]) => delete(st, id),
        (&Method::POST, ["drive", "v3", "files", id, "copy"]) => copy(st, r, id),
        (&Method::POST, ["upload", "drive", "v3", "files"]) => upload(st, r, None),
        (&Method::PATCH, ["upload", "drive", "v3", "files", id]) => upload(st, r, Some(id)),
        _ => Err(fail(404, "notFound", "Not Found")),
    }
}

/// OAuth 2.0 refresh-token grant; parameters may come in the query or a form (or JSON) body.
fn token(st: &mut State, r: &Req) -> Resp {
    let oauth_error = |code, error: &str, desc: &str| {
        respond(code, json!({"error": error, "error_description": desc}))
    };
    if r.method != Method::POST {
        return oauth_error(405, "invalid_request", "Only POST is supported.");
    }
    let mut p = r.query.clone();
    if r.header(CONTENT_TYPE)
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    {
        p.extend(url::form_urlencoded::parse(&r.body).into_owned());
    } else if let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(&r.body) {
        p.extend(
            o.into_iter()
                .filter_map(|(k, v)| Some((k, v.as_str()?.to_string()))),
        );
    }
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
    match get("grant_type") {
        "refresh_token" => {}
        "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
            if let Err(why) = check_assertion(st, get("assertion")) {
                return oauth_error(400, "invalid_grant", why);
            }
            return grant(st);
        }
        "" => {
            return oauth_error(
                400,
                "invalid_request",
                "Missing required parameter: grant_type",
            );
        }
        other => {
            return oauth_error(
                400,
                "unsupported_grant_type",
                &format!("Invalid grant_type: {other}"),
            );
        }
    }
    if get("client_id") != DriveFake::CLIENT_ID {
        return oauth_error(401, "invalid_client", "The OAuth client was not found.");
    }
    if get("client_secret") != DriveFake::CLIENT_SECRET {
        return oauth_error(401, "invalid_client", "Unauthorized");
    }
    if get("refresh_token") != DriveFake::REFRESH_TOKEN {
        return oauth_error(400, "invalid_grant", "Bad Request");
    }
    grant(st)
}

/// Checks a service account's JWT (RFC 7523) as Google does: RS256 by a trusted key, issued
/// by that account for this token endpoint, not expired, asking for a scope.
fn check_assertion(st: &State, jwt: &str) -> Result<(), &'static str> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err("Invalid JWT: Token must be a short-lived token and in a reasonable timeframe");
    };
    let decode = |part: &str| {
        b64.decode(part)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    };
    let (Some(header), Some(claims)) = (decode(header), decode(claims)) else {
        return Err("Invalid JWT: malformed");
    };
    if header["alg"] != "RS256" {
        return Err("Invalid JWT: unsupported algorithm");
    }
    let email = claims["iss"].as_str().unwrap_or_default();
    let Some(public_key) = st.service_accounts.get(email) else {
        return Err("Invalid grant: account not found");
    };
    let signed = &jwt[..jwt.rfind('.').unwrap_or(0)];
    let signature = b64
        .decode(signature)
        .map_err(|_| "Invalid JWT Signature.")?;
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public_key,
    )
    .verify(signed.as_bytes(), &signature)
    .map_err(|_| "Invalid JWT Signature.")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let exp = claims["exp"].as_u64().unwrap_or(0);
    if exp <= now
        || exp > now + 3600 + 300
        || !claims["aud"]
            .as_str()
            .is_some_and(|a| a.ends_with("/token"))
    {
        return Err(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        );
    }
    if claims["scope"].as_str().is_none_or(str::is_empty) {
        return Err("Invalid JWT: no scope");
    }
    Ok(())
}

/// A new access token for the configured lifetime.
fn grant(st: &mut State) -> Resp {
    let access = format!("ya29.{}", random_chars(40));
    st.tokens.insert(
        access.clone(),
        Instant::now() + Duration::from_secs(st.token_lifetime),
    );
    st.stats.token_grants += 1;
    let scope = "https://www.googleapis.com/auth/drive";
    let lifetime = st.token_lifetime;
    respond(
        200,
        json!({"access_token": access, "expires_in": lifetime, "scope": scope, "token_type": "Bearer"}),
    )
}

fn authorize(st: &mut State, r: &Req) -> Result<(), Resp> {
    let bearer = r
        .header(AUTHORIZATION)
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = bearer.or(r.param("access_token")) else {
        return Err(api_error(
            401,
            "global",
            "required",
            "Login Required.",
            Some(("header", "Authorization")),
        ));
    };
    match st.tokens.get(token) {
        Some(expiry) if *expiry > Instant::now() => Ok(()),
        known => {
            st.stats.rejected_expired += known.is_some() as u64;
            Err(api_error(
                401,
                "global",
                "authError",
                "Invalid Credentials",
                Some(("header", "Authorization")),
            ))
        }
    }
}

fn list(st: &mut State, r: &Req) -> Result<Resp, Resp> {
    let page_size = match r.param("pageSize") {
        None => 100,
        Some(s) => s
            .parse()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                invalid_param(
                    "pageSize",
                    &format!("Invalid value '{s}'. Values must be within the range: [1, 1000]"),
                )
            })?,
    };
    let q = match r.param("q").map(str::trim).filter(|q| !q.is_empty()) {
        Some(text) => Some(parse_query(text).ok_or_else(|| invalid_param("q", "Invalid Value"))?),
        None => None,
    };
    let matches = |f: &&Entry| f.id != st.root_id && q.as_ref().is_none_or(|q| q.eval(f, st));
    let mut hits: Vec<&Entry> = st.files.values().filter(matches).collect();
    sort_entries(&mut hits, r.param("orderBy").unwrap_or("createdTime"))?;
    // Page tokens are opaque: the offset plus a fingerprint of the listing they continue.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (r.param("q"), r.param("orderBy")).hash(&mut hasher);
    let fingerprint = format!("{:016x}", hasher.finish());
    let offset = match r.param("pageToken") {
        None | Some("") => 0,
        Some(t) => t
            .strip_prefix(&format!("{fingerprint}."))
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| invalid_param("pageToken", "Invalid Value"))?,
    };
    let end = (offset + page_size).min(hits.len());
    let files: Vec<Value> = hits[offset.min(end)..end]
        .iter()
        .map(|f| st.file_json(&f.id))
        .collect();
    let mut body = json!({"kind": "drive#fileList", "incompleteSearch": false, "files": files});
    if end < hits.len() {
        body["nextPageToken"] = json!(format!("{fingerprint}.{end}"));
    }
    masked(
        body,
        r.param("fields"),
        "kind,incompleteSearch,nextPageToken,files(kind,id,name,mimeType)",
    )
}

fn sort_entries(hits: &mut [&Entry], order_by: &str) -> Result<(), Resp> {
    let mut keys = Vec::new();
    for item in order_by.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (key, dir) = item
            .split_once(' ')
            .map_or((item, ""), |(k, d)| (k, d.trim()));
        let known = [
            "createdTime",
            "folder",
            "modifiedTime",
            "name",
            "name_natural",
            "quotaBytesUsed",
            "recency",
        ];
        if !known.contains(&key) || !["", "asc", "desc"].contains(&dir) {
            return Err(invalid_param(
                "orderBy",
                &format!("Invalid sorting key: {item}"),
            ));
        }
        keys.push((key, dir == "desc"));
    }
    hits.sort_by(|a, b| {
        let by_key = |&(key, desc): &(&str, bool)| {
            let ord = match key {
                "createdTime" => a.created.cmp(&b.created),
                "modifiedTime" | "recency" => a.modified.cmp(&b.modified),
                "folder" => b.is_folder().cmp(&a.is_folder()),
                "quotaBytesUsed" => a.data.len().cmp(&b.data.len()),
                _ => a
                    .name
                    .to_lowercase()
                    .cmp(&b.name.to_lowercase())
                    .then(a.name.cmp(&b.name)),
            };
            if desc { ord.reverse() } else { ord }
        };
        keys.iter()
            .map(by_key)
            .find(|o| o.is_ne())
            .unwrap_or_else(|| a.id.cmp(&b.id))
    });
    Ok(())
}

/// files.get: metadata, or with `alt=media` the content, honouring `Range`.
fn get(st: &mut State, r: &Req, id: &str) -> Result<Resp, Resp> {
    let f = st.lookup(id)?;
    if r.param("alt") != Some("media") {
        return masked(st.file_json(&f.id), r.param("fields"), DEFAULT_FILE_FIELDS);
    }
    if f.mime.starts_with("application/vnd.google-apps.") {
        let msg =
            "Only files with binary content can be downloaded. Use Export with Docs Editors files.";
        return Err(fail(403, "fileNotDownloadable", msg));
    }
    let len = f.data.len() as u64;
    let ok = Response::builder()
        .header(CONTENT_TYPE, &f.mime)
        .header("accept-ranges", "bytes");
    let resp = match r.header(RANGE).and_then(|h| parse_range(h, len)) {
        None => ok.status(200).body(Full::new(f.data.clone())),
        Some(Some((a, b))) => ok
            .status(206)
            .header(CONTENT_RANGE, format!("bytes {a}-{b}/{len}"))
            .body(Full::new(f.data.slice(a as usize..=b as usize))),
        Some(None) => {
            let mut e = fail(
                416,
                "requestedRangeNotSatisfiable",
                "Request range not satisfiable",
            );
            e.headers_mut().insert(
                CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).unwrap(),
            );
            return Err(e);
        }
    };
    Ok(resp.expect("valid download response"))
}

/// `Range: bytes=a-b | a- | -n`. None: absent or unparsable, so the whole file is served (RFC
/// 9110 allows it); Some(None): unsatisfiable, which includes any range of an empty file.
fn parse_range(header: &str, len: u64) -> Option<Option<(u64, u64)>> {
    let spec = header
        .trim()
        .strip_prefix("bytes=")
        .filter(|s| !s.contains(','))?;
    let (a, b) = spec.split_once('-').map(|(a, b)| (a.trim(), b.trim()))?;
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        return Some((n > 0 && len > 0).then(|| (len.saturating_sub(n), len - 1)));
    }
    let start: u64 = a.parse().ok()?;
    let end: u64 = if b.is_empty() {
        u64::MAX
    } else {
        b.parse().ok().filter(|&e| e >= start)?
    };
    Some((start < len).then(|| (start, end.min(len - 1))))
}

/// files.create without media: folders and empty files.
fn create(st: &mut State, r: &Req) -> Result<Resp, Resp> {
    let id = insert_new(st, &json_body(&r.body)?, Bytes::new(), None)?;
    masked(st.file_json(&id), r.param("fields"), DEFAULT_FILE_FIELDS)
}

fn insert_new(
    st: &mut State,
    meta: &Value,
    data: Bytes,
    media_mime: Option<String>,
) -> Result<String, Resp> {
    let parents = match meta.get("parents") {
        None | Some(Value::Null) => vec![st.root_id.clone()],
        Some(v) => string_list(v, "parents")?
            .iter()
            .map(|p| st.resolve_id(p).to_string())
            .collect(),
    };
    st.check_parents(&parents, None)?;
    let modified = meta.get("modifiedTime").map(parse_time).transpose()?;
    let now = st.now();
    let text = |k: &str| meta.get(k).and_then(Value::as_str).map(str::to_string);
    let entry = Entry {
        id: format!("1{}", random_chars(32)),
        name: text("name").unwrap_or_else(|| "Untitled".into()),
        mime: text("mimeType")
            .or(media_mime)
            .unwrap_or_else(|| "application/octet-stream".into()),
        parents,
        md5: md5_hex(&data),
        data,
        created: now.clone(),
        modified: modified.unwrap_or(now),
        trashed: meta
            .get("trashed")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    let id = entry.id.clone();
    st.files.insert(id.clone(), entry);
    Ok(id)
}

/// files.update (PATCH) of metadata only.
fn update(st: &mut State, r: &Req, id: &str) -> Result<Resp, Resp> {
    let id = modify(st, r, id, &json_body(&r.body)?, None)?;
    masked(st.file_json(&id), r.param("fields"), DEFAULT_FILE_FIELDS)
}

/// Applies an update; parents change only through the addParents/removeParents parameters.
/// Everything is checked before anything changes, so a rejected update leaves no trace.
fn modify(
    st: &mut State,
    r: &Req,
    id: &str,
    meta: &Value,
    content: Option<Media>,
) -> Result<String, Resp> {
    let f = st.lookup(id)?;
    if meta.get("parents").is_some() {
        let msg = "The parents field is not directly writable in update requests. \
                   Use the addParents and removeParents parameters instead.";
        return Err(fail(403, "fieldNotWritable", msg));
    }
    if ["id", "size", "md5Checksum", "createdTime"]
        .iter()
        .any(|k| meta.get(k).is_some())
    {
        return Err(fail(
            403,
            "fieldNotWritable",
            "The resource body includes fields which are not directly writable.",
        ));
    }
    let ids = |k: &str| -> Vec<String> {
        let list = r
            .param(k)
            .unwrap_or("")
            .split(',')
            .filter(|s| !s.is_empty());
        list.map(|s| st.resolve_id(s).to_string()).collect()
    };
    let (add, remove) = (ids("addParents"), ids("removeParents"));
    if add
        .iter()
        .any(|p| f.parents.contains(p) && !remove.contains(p))
    {
        return Err(fail(400, "badRequest", "The file already has this parent."));
    }
    let parents: Vec<String> = f
        .parents
        .iter()
        .filter(|p| !remove.contains(p))
        .chain(&add)
        .cloned()
        .collect();
    if !add.is_empty() {
        st.check_parents(&parents, Some(&f.id))?;
    }
    if content.is_some() && f.is_folder() {
        return Err(fail(400, "badRequest", "A folder cannot have content."));
    }
    let modified = meta.get("modifiedTime").map(parse_time).transpose()?;
    let touched =
        content.is_some() || meta.get("name").is_some() || !add.is_empty() || !remove.is_empty();
    let id = f.id.clone();
    let now = st.now();
    let f = st.files.get_mut(&id).expect("looked up above");
    if let Some(name) = meta.get("name").and_then(Value::as_str) {
        f.name = name.to_string();
    }
    if let Some(mime) = meta.get("mimeType").and_then(Value::as_str) {
        f.mime = mime.to_string();
    }
    if let Some(trashed) = meta.get("trashed").and_then(Value::as_bool) {
        f.trashed = trashed;
    }
    f.parents = parents;
    if let Some((data, mime)) = content {
        f.md5 = md5_hex(&data);
        f.data = data;
        if let (Some(mime), None) = (mime, meta.get("mimeType")) {
            f.mime = mime;
        }
    }
    if modified.is_some() || touched {
        f.modified = modified.unwrap_or(now);
    }
    Ok(id)
}

/// Deletes permanently, skipping the trash; a folder takes everything under it along.
fn delete(st: &mut State, id: &str) -> Result<Resp, Resp> {
    let id = st.lookup(id)?.id.clone();
    if id == st.root_id {
        let msg = "The user does not have sufficient permissions for this file.";
        return Err(fail(403, "insufficientFilePermissions", msg));
    }
    let doomed: Vec<String> = st
        .files
        .keys()
        .filter(|k| st.is_under(k, &id))
        .cloned()
        .collect();
    doomed.iter().for_each(|k| drop(st.files.remove(k)));
    Ok(Response::builder()
        .status(204)
        .body(Full::new(Bytes::new()))
        .expect("valid 204"))
}

/// files.copy: "Copy of <name>" beside the source unless the body says otherwise.
fn copy(st: &mut State, r: &Req, id: &str) -> Result<Resp, Resp> {
    let src = st.lookup(id)?;
    if src.is_folder() {
        return Err(fail(
            403,
            "cannotCopyFile",
            "This file cannot be copied by the user.",
        ));
    }
    let mut meta = json_body(&r.body)?;
    let name = format!("Copy of {}", src.name);
    for (k, v) in [
        ("name", json!(name)),
        ("mimeType", json!(src.mime)),
        ("parents", json!(src.parents)),
    ] {
        meta.as_object_mut()
            .expect("json_body gives objects")
            .entry(k)
            .or_insert(v);
    }
    let data = src.data.clone();
    let id = insert_new(st, &meta, data, None)?;
    masked(st.file_json(&id), r.param("fields"), DEFAULT_FILE_FIELDS)
}

/// `uploadType=media|multipart`: create (POST) or replace the content of `target` (PATCH).
fn upload(st: &mut State, r: &Req, target: Option<&str>) -> Result<Resp, Resp> {
    let ctype = r.header(CONTENT_TYPE).map(str::to_string);
    let (meta, data, media_mime) = match r.param("uploadType") {
        Some("media") => (json!({}), r.body.clone(), ctype),
        Some("multipart") => parse_multipart(ctype.as_deref().unwrap_or(""), &r.body)
            .ok_or_else(|| fail(400, "badContent", "Malformed multipart body."))?,
        Some("resumable") => {
            return Err(invalid_param(
                "uploadType",
                "This fake does not do resumable uploads.",
            ));
        }
        _ => return Err(invalid_param("uploadType", "Invalid Value")),
    };
    st.stats.largest_upload = st.stats.largest_upload.max(data.len() as u64);
    if data.len() > MAX_SIMPLE_UPLOAD {
        let size = data.len();
        let msg = format!(
            "Media of {size} bytes is over the 5 MB limit of simple uploads; use a resumable upload."
        );
        return Err(fail(413, "uploadTooLarge", &msg));
    }
    let id = match target {
        None => insert_new(st, &meta, data, media_mime)?,
        Some(id) => modify(st, r, id, &meta, Some((data, media_mime)))?,
    };
    st.stats.uploads += 1;
    masked(st.file_json(&id), r.param("fields"), DEFAULT_FILE_FIELDS)
}

/// multipart/related, as Drive documents it (multipart/form-data is taken too): a JSON
/// metadata part, then the media part whose Content-Type is the file's default mimeType.
fn parse_multipart(ctype: &str, body: &[u8]) -> Option<(Value, Bytes, Option<String>)> {
    let kind = ctype.split(';').next()?.trim().to_ascii_lowercase();
    if kind != "multipart/related" && kind != "multipart/form-data" {
        return None;
    }
    let boundary = ctype
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))?
        .trim_matches('"');
    let delim = format!("\r\n--{boundary}");
    // A leading CRLF lets the first delimiter match like the others.
    let body = [b"\r\n".as_slice(), body].concat();
    let mut pos = find(&body, delim.as_bytes(), 0)? + delim.len();
    let mut parts = Vec::new();
    while !body[pos..].starts_with(b"--") {
        let start = find(&body, b"\r\n", pos)? + 2;
        let end = find(&body, delim.as_bytes(), start)?;
        let part = &body[start..end];
        let split = if part.starts_with(b"\r\n") {
            0
        } else {
            find(part, b"\r\n\r\n", 0)? + 2
        };
        let mime = std::str::from_utf8(&part[..split])
            .ok()?
            .lines()
            .find_map(|line| {
                let (k, v) = line.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-type")
                    .then(|| v.trim().to_string())
            });
        parts.push((mime, Bytes::copy_from_slice(&part[split + 2..])));
        pos = end + delim.len();
    }
    let [(_, meta), (mime, media)] = <[_; 2]>::try_from(parts).ok()?;
    let meta = if meta.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&meta).ok()?
    };
    Some((meta, media, mime))
}

const DEFAULT_FILE_FIELDS: &str = "kind,id,name,mimeType";

/// A parsed `fields` selector: `*`, or fields like `nextPageToken,files(id,name)`, `files/id`.
enum Mask {
    All,
    Fields(Vec<(String, Mask)>),
}

fn parse_mask(s: &str) -> Option<Mask> {
    if s.trim() == "*" {
        return Some(Mask::All);
    }
    let (mut items, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        depth += match c {
            '(' => 1,
            ')' => -1,
            _ => 0,
        };
        if depth < 0 {
            return None;
        }
        if c == ',' && depth == 0 {
            items.push(&s[start..i]);
            start = i + 1;
        }
    }
    items.push(&s[start..]);
    let mut fields = Vec::new();
    for item in items.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
        let (path, mut sub) = match item.split_once('(') {
            Some((path, rest)) => (path, parse_mask(rest.strip_suffix(')')?)?),
            None => (item, Mask::All),
        };
        let segs: Vec<&str> = path.trim().split('/').collect();
        for seg in segs[1..].iter().rev() {
            sub = Mask::Fields(vec![(seg.to_string(), sub)]);
        }
        fields.push((segs[0].to_string(), sub));
    }
    (depth == 0).then_some(Mask::Fields(fields))
}

impl Mask {
    fn apply(&self, v: &Value) -> Value {
        match (self, v) {
            (Mask::Fields(_), Value::Array(items)) => {
                Value::Array(items.iter().map(|x| self.apply(x)).collect())
            }
            (Mask::Fields(fields), Value::Object(obj)) => {
                let mut out = Value::Object(Map::new());
                for (k, sub) in fields.iter().filter(|(k, _)| obj.contains_key(k)) {
                    merge(
                        &mut out,
                        Value::Object(Map::from_iter([(k.clone(), sub.apply(&obj[k]))])),
                    );
                }
                out
            }
            _ => v.clone(),
        }
    }
}

/// Joins selections of one field made twice, e.g. `files/id,files/name`.
fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            b.into_iter().for_each(|(k, v)| match a.get_mut(&k) {
                Some(existing) => merge(existing, v),
                None => drop(a.insert(k, v)),
            })
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            a.iter_mut().zip(b).for_each(|(x, y)| merge(x, y))
        }
        (slot, v) => *slot = v,
    }
}

fn masked(v: Value, fields: Option<&str>, default: &str) -> Result<Resp, Resp> {
    let spec = fields.unwrap_or(default);
    let mask = parse_mask(spec)
        .ok_or_else(|| invalid_param("fields", &format!("Invalid field selection {spec}")))?;
    Ok(respond(200, mask.apply(&v)))
}

/// The `q` subset clients use: `name` (= != contains), `mimeType` (= != contains),
/// `trashed` (= !=), `'<id>' in parents`, joined by and/or/not with parentheses.
enum Query {
    And(Box<Query>, Box<Query>),
    Or(Box<Query>, Box<Query>),
    Not(Box<Query>),
    InParents(String),
    Field {
        field: String,
        op: String,
        value: Value,
    },
}

/// Tokens are words, operators and parentheses; string literals keep their opening quote.
fn tokenize(text: &str) -> Option<Vec<String>> {
    let (mut toks, mut chars) = (Vec::new(), text.chars().peekable());
    while let Some(c) = chars.next() {
        let mut tok = c.to_string();
        match c {
            '(' | ')' => {}
            '\'' => loop {
                match chars.next()? {
                    '\\' => tok.push(chars.next()?),
                    '\'' => break,
                    other => tok.push(other),
                }
            },
            '=' | '<' | '>' | '!' => {
                tok.extend(chars.next_if_eq(&'='));
                if tok == "!" {
                    return None;
                }
            }
            c if c.is_alphanumeric() || c == '_' => {
                while let Some(n) = chars.next_if(|n| n.is_alphanumeric() || *n == '_') {
                    tok.push(n);
                }
            }
            c if c.is_whitespace() => continue,
            _ => return None,
        }
        toks.push(tok);
    }
    Some(toks)
}

fn parse_query(text: &str) -> Option<Query> {
    let toks = tokenize(text)?;
    let mut pos = 0;
    let q = parse_or(&toks, &mut pos)?;
    (pos == toks.len()).then_some(q)
}

/// `and` binds tighter than `or`.
fn parse_or(toks: &[String], pos: &mut usize) -> Option<Query> {
    let mut left = parse_and(toks, pos)?;
    while eat(toks, pos, "or") {
        left = Query::Or(Box::new(left), Box::new(parse_and(toks, pos)?));
    }
    Some(left)
}

fn parse_and(toks: &[String], pos: &mut usize) -> Option<Query> {
    let mut left = parse_term(toks, pos)?;
    while eat(toks, pos, "and") {
        left = Query::And(Box::new(left), Box::new(parse_term(toks, pos)?));
    }
    Some(left)
}

fn eat(toks: &[String], pos: &mut usize, word: &str) -> bool {
    let hit = toks.get(*pos).is_some_and(|t| t == word);
    *pos += hit as usize;
    hit
}

fn parse_term(toks: &[String], pos: &mut usize) -> Option<Query> {
    if eat(toks, pos, "not") {
        return Some(Query::Not(Box::new(parse_term(toks, pos)?)));
    }
    if eat(toks, pos, "(") {
        let q = parse_or(toks, pos)?;
        return eat(toks, pos, ")").then_some(q);
    }
    let [first, op, value] = toks.get(*pos..*pos + 3)? else {
        return None;
    };
    *pos += 3;
    if let Some(id) = first.strip_prefix('\'') {
        return (op == "in" && value == "parents").then(|| Query::InParents(id.to_string()));
    }
    let value = match value.strip_prefix('\'') {
        Some(text) => json!(text),
        None if value == "true" || value == "false" => json!(value == "true"),
        None => return None,
    };
    let ok = match first.as_str() {
        "name" | "mimeType" => ["=", "!=", "contains"].contains(&op.as_str()) && value.is_string(),
        "trashed" => ["=", "!="].contains(&op.as_str()) && value.is_boolean(),
        _ => false,
    };
    ok.then(|| Query::Field {
        field: first.clone(),
        op: op.clone(),
        value,
    })
}

impl Query {
    fn eval(&self, f: &Entry, st: &State) -> bool {
        match self {
            Query::And(a, b) => a.eval(f, st) && b.eval(f, st),
            Query::Or(a, b) => a.eval(f, st) || b.eval(f, st),
            Query::Not(a) => !a.eval(f, st),
            Query::InParents(id) => f.parents.iter().any(|p| p == st.resolve_id(id)),
            Query::Field { field, op, value } => {
                let actual = match field.as_str() {
                    "name" => json!(f.name),
                    "mimeType" => json!(f.mime),
                    _ => json!(st.is_trashed(&f.id)),
                };
                match op.as_str() {
                    "=" => actual == *value,
                    "!=" => actual != *value,
                    // Drive's `name contains` matches word prefixes; for mimeType it is a substring.
                    _ => {
                        let hay = actual.as_str().unwrap_or("").to_lowercase();
                        let needle = value.as_str().unwrap_or("").to_lowercase();
                        match field.as_str() {
                            "name" => hay
                                .split(|c: char| !c.is_alphanumeric())
                                .any(|w| w.starts_with(&needle)),
                            _ => hay.contains(&needle),
                        }
                    }
                }
            }
        }
    }
}

fn respond(code: u16, body: Value) -> Resp {
    Response::builder()
        .status(StatusCode::from_u16(code).expect("valid status"))
        .header(CONTENT_TYPE, "application/json; charset=UTF-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid JSON response")
}

/// Drive's error envelope: `{"error": {"code", "message", "errors": [{domain, reason, message}]}}`.
fn api_error(
    code: u16,
    domain: &str,
    reason: &str,
    message: &str,
    location: Option<(&str, &str)>,
) -> Resp {
    let mut item = json!({"domain": domain, "reason": reason, "message": message});
    if let Some((kind, at)) = location {
        (item["locationType"], item["location"]) = (json!(kind), json!(at));
    }
    let mut resp = respond(
        code,
        json!({"error": {"code": code, "message": message, "errors": [item]}}),
    );
    if code == 401 {
        let challenge = HeaderValue::from_static("Bearer realm=\"https://accounts.google.com/\"");
        resp.headers_mut().insert("www-authenticate", challenge);
    }
    resp
}

/// An error of the `global` domain, where most of Drive's reasons live.
fn fail(code: u16, reason: &str, message: &str) -> Resp {
    api_error(code, "global", reason, message, None)
}

fn not_found(id: &str) -> Resp {
    api_error(
        404,
        "global",
        "notFound",
        &format!("File not found: {id}."),
        Some(("parameter", "fileId")),
    )
}

fn invalid_param(name: &str, message: &str) -> Resp {
    api_error(400, "global", "invalid", message, Some(("parameter", name)))
}

fn json_body(body: &[u8]) -> Result<Value, Resp> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let object = serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object);
    object.ok_or_else(|| fail(400, "parseError", "Parse Error"))
}

fn string_list(v: &Value, field: &str) -> Result<Vec<String>, Resp> {
    let items = v
        .as_array()
        .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_string)).collect());
    items.ok_or_else(|| fail(400, "invalid", &format!("Invalid value for: {field}")))
}

/// Accepts `YYYY-MM-DDTHH:MM:SS[.fff…]Z`, normalised to milliseconds like Drive's own times.
fn parse_time(v: &Value) -> Result<String, Resp> {
    let text = v.as_str().and_then(|s| s.strip_suffix('Z')).unwrap_or("");
    let (base, frac) = text.split_once('.').unwrap_or((text, ""));
    let shape = base
        .bytes()
        .map(|c| if c.is_ascii_digit() { b'0' } else { c })
        .collect::<Vec<u8>>();
    if shape != b"0000-00-00T00:00:00" || !frac.bytes().all(|c| c.is_ascii_digit()) {
        return Err(fail(400, "invalid", "Invalid value for: modifiedTime"));
    }
    Ok(format!("{base}.{:0<3}Z", &frac[..frac.len().min(3)]))
}

fn rfc3339(ms: u64) -> String {
    let (secs, millis) = (ms / 1000, ms % 1000);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian, 400-year eras).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn random_chars(n: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// MD5 (RFC 1321) for `md5Checksum`; the constants come from sin() as the RFC defines them.
fn md5_hex(data: &[u8]) -> String {
    const SHIFTS: [u32; 16] = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32)
        .collect();
    let mut h: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&(data.len() as u64).wrapping_mul(8).to_le_bytes());
    for block in msg.chunks(64) {
        let m: Vec<u32> = block
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let [mut a, mut b, mut c, mut d] = h;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let sum = a.wrapping_add(f).wrapping_add(k[i]).wrapping_add(m[g]);
            (a, d, c) = (d, c, b);
            b = b.wrapping_add(sum.rotate_left(SHIFTS[(i / 16) * 4 + i % 4]));
        }
        for (slot, v) in h.iter_mut().zip([a, b, c, d]) {
            *slot = slot.wrapping_add(v);
        }
    }
    h.iter()
        .flat_map(|x| x.to_le_bytes())
        .map(|b| format!("{b:02x}"))
        .collect()
}
