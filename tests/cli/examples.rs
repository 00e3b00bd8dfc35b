//! The example third-party plugins in plugins/examples, built out of tree and round-tripped
//! through the real binary against a small HTTP server started by the test: a WebDAV-style
//! store for the sink, a JSON API for the source.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};

use crate::authors::build_out_of_tree;
use crate::common::tree;
use crate::{stderr, stdout};

const TOKEN: &str = "example-token-5e1f";

/// What the server holds: documents by path, and the WebDAV collections that exist.
#[derive(Default)]
struct State {
    files: BTreeMap<String, Vec<u8>>,
    collections: BTreeSet<String>,
}

type Shared = Arc<Mutex<State>>;

/// Starts the server on a free port in its own thread; it lives as long as the test process.
fn serve(state: Shared) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let state = state.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |request| handle(state.clone(), request));
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
    });
    port
}

fn reply(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// WebDAV's rules for the parts the sink uses: PUT needs the parent collection (409) and
/// honours `If-None-Match: *` (412); GET honours `Range` (206, 416); PROPFIND lists one level.
async fn handle(
    state: Shared,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    if header("authorization") != format!("Bearer {TOKEN}") {
        return Ok(reply(StatusCode::UNAUTHORIZED, Vec::new()));
    }
    let path = parts.uri.path().to_string();
    let parent = |p: &str| {
        p.trim_end_matches('/')
            .rsplit_once('/')
            .map(|(dir, _)| format!("{dir}/"))
            .unwrap_or_default()
    };
    let mut state = state.lock().unwrap();
    let response = match parts.method.as_str() {
        "PUT" if path.starts_with("/dav/") && !state.collections.contains(&parent(&path)) => {
            reply(StatusCode::CONFLICT, Vec::new())
        }
        "PUT" if header("if-none-match") == "*" && state.files.contains_key(&path) => {
            reply(StatusCode::PRECONDITION_FAILED, Vec::new())
        }
        "PUT" => {
            state.files.insert(path, body);
            reply(StatusCode::CREATED, Vec::new())
        }
        "GET" | "HEAD" => match state.files.get(&path) {
            None => reply(StatusCode::NOT_FOUND, Vec::new()),
            Some(bytes) if parts.method == "HEAD" => {
                let mut response = reply(StatusCode::OK, Vec::new());
                response
                    .headers_mut()
                    .insert("content-length", bytes.len().into());
                response
            }
            Some(bytes) => match header("range")
                .strip_prefix("bytes=")
                .and_then(|r| r.split_once('-'))
            {
                None => reply(StatusCode::OK, bytes.clone()),
                Some((start, end)) => {
                    let start: usize = start.parse().unwrap();
                    let end = end
                        .parse::<usize>()
                        .map_or(bytes.len(), |e| (e + 1).min(bytes.len()));
                    if start >= bytes.len() {
                        reply(StatusCode::RANGE_NOT_SATISFIABLE, Vec::new())
                    } else {
                        reply(StatusCode::PARTIAL_CONTENT, bytes[start..end].to_vec())
                    }
                }
            },
        },
        "DELETE" => match state.files.remove(&path) {
            Some(_) => reply(StatusCode::NO_CONTENT, Vec::new()),
            None => reply(StatusCode::NOT_FOUND, Vec::new()),
        },
        "MKCOL" if state.collections.contains(&path) => {
            reply(StatusCode::METHOD_NOT_ALLOWED, Vec::new())
        }
        "MKCOL" if !state.collections.contains(&parent(&path)) => {
            reply(StatusCode::CONFLICT, Vec::new())
        }
        "MKCOL" => {
            state.collections.insert(path);
            reply(StatusCode::CREATED, Vec::new())
        }
        "PROPFIND" if !state.collections.contains(&path) => {
            reply(StatusCode::NOT_FOUND, Vec::new())
        }
        "PROPFIND" => {
            let child = |p: &&String| p.starts_with(&path) && parent(p) == path;
            let mut xml = format!(
                "<?xml version=\"1.0\"?><D:multistatus xmlns:D=\"DAV:\"><D:response><D:href>{path}</D:href><D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype></D:prop></D:propstat></D:response>"
            );
            for dir in state.collections.iter().filter(child) {
                xml += &format!(
                    "<D:response><D:href>{dir}</D:href><D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype></D:prop></D:propstat></D:response>"
                );
            }
            for (file, bytes) in state.files.iter().filter(|(p, _)| child(p)) {
                xml += &format!(
                    "<D:response><D:href>{file}</D:href><D:propstat><D:prop><D:resourcetype/><D:getcontentlength>{}</D:getcontentlength></D:prop></D:propstat></D:response>",
                    bytes.len()
                );
            }
            xml += "</D:multistatus>";
            reply(StatusCode::MULTI_STATUS, xml.into_bytes())
        }
        _ => reply(StatusCode::METHOD_NOT_ALLOWED, Vec::new()),
    };
    Ok(response)
}

fn example(name: &str) -> PathBuf {
    build_out_of_tree(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../plugins/examples")
            .join(name),
    )
}

fn runner(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(args)
        .current_dir(dir)
        .env("RUNNER_CACHE_DIR", crate::common::cache_dir())
        .env("EXAMPLE_TOKEN", TOKEN)
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let output = runner(dir, args);
    let text = format!("{}{}", stdout(&output), stderr(&output));
    assert!(output.status.success(), "runner {args:?} failed:\n{text}");
    assert!(
        !text.contains(TOKEN),
        "the token leaked into the output:\n{text}"
    );
    text
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(runner::plugins::sha256(&std::fs::read(path).unwrap()))
}

#[test]
fn the_webdav_sink_example_backs_up_verifies_restores_and_passes_the_harness() {
    let state = Shared::default();
    state.lock().unwrap().collections.extend([
        "/".to_string(),
        "/dav/".to_string(),
        "/dav/harness/".to_string(),
    ]);
    let port = serve(state.clone());
    let wasm = example("webdav-sink");
    let dir = tempfile::tempdir().unwrap();
    tree::generate(&dir.path().join("data"), 2 << 20, 10);
    let sink = format!(
        "plugin = {:?}\nsha256 = \"{}\"\nurl = \"http://127.0.0.1:{port}/dav/backups\"\ntoken = \"${{env:EXAMPLE_TOKEN}}\"\n",
        wasm.display().to_string(),
        sha256_hex(&wasm)
    );
    let grants = format!("http = [\"http://127.0.0.1:{port}\"]\n");
    std::fs::write(
        dir.path().join("pipeline.toml"),
        format!("[source]\ntype = \"files\"\npaths = [\"data\"]\n\n[[transform]]\ntype = \"zstd\"\n\n[sink]\n{sink}[sink.grants]\n{grants}"),
    )
    .unwrap();
    ok(dir.path(), &["run", "pipeline.toml"]);
    {
        let state = state.lock().unwrap();
        assert!(
            state.collections.contains("/dav/backups/snapshots/"),
            "{:?}",
            state.collections
        );
        assert!(
            state
                .files
                .keys()
                .any(|k| k.starts_with("/dav/backups/data/"))
        );
    }
    ok(dir.path(), &["verify", "pipeline.toml", "--read-data"]);
    ok(
        dir.path(),
        &["restore", "pipeline.toml", "--target", "restored"],
    );
    tree::assert_same(&dir.path().join("data"), &dir.path().join("restored/data"));

    std::fs::write(
        dir.path().join("harness.toml"),
        format!("url = \"http://127.0.0.1:{port}/dav/harness/\"\ntoken = \"${{env:EXAMPLE_TOKEN}}\"\n[grants]\n{grants}"),
    )
    .unwrap();
    let report = ok(
        dir.path(),
        &[
            "plugins",
            "test",
            wasm.to_str().unwrap(),
            "--config",
            "harness.toml",
        ],
    );
    assert!(
        report.contains("put-if-absent") && report.contains("cleanup"),
        "{report}"
    );
    assert!(
        !state
            .lock()
            .unwrap()
            .files
            .keys()
            .any(|k| k.starts_with("/dav/harness/"))
    );

    // Without the grant, the plugin reaches nothing.
    std::fs::write(
        dir.path().join("ungranted.toml"),
        format!("url = \"http://127.0.0.1:{port}/dav/harness/\"\n"),
    )
    .unwrap();
    let output = runner(
        dir.path(),
        &[
            "plugins",
            "test",
            wasm.to_str().unwrap(),
            "--config",
            "ungranted.toml",
        ],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("not granted") || stderr(&output).contains("denied"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn the_http_json_source_example_exports_an_api_and_restores_it() {
    let state = Shared::default();
    let users = br#"[{"id":1,"name":"ada"},{"id":2,"name":"grace"}]"#.to_vec();
    let orders = br#"{"open":3,"closed":[7,8]}"#.to_vec();
    state.lock().unwrap().files.extend([
        ("/api/users".to_string(), users.clone()),
        ("/api/orders".to_string(), orders.clone()),
    ]);
    let port = serve(state.clone());
    let wasm = example("http-json-source");
    let dir = tempfile::tempdir().unwrap();
    let source = format!(
        "plugin = {:?}\nsha256 = \"{}\"\nurl = \"http://127.0.0.1:{port}/api\"\nendpoints = [\"users\", \"orders\"]\ntoken = \"${{env:EXAMPLE_TOKEN}}\"\n[source.grants]\nhttp = [\"http://127.0.0.1:{port}\"]\n",
        wasm.display().to_string(),
        sha256_hex(&wasm)
    );
    std::fs::write(
        dir.path().join("pipeline.toml"),
        format!("[source]\n{source}\n[[transform]]\ntype = \"checksum\"\n\n[sink]\ntype = \"local\"\npath = \"repo\"\n"),
    )
    .unwrap();
    ok(dir.path(), &["run", "pipeline.toml"]);

    // The API loses and changes data; a restore puts back exactly what was exported.
    state
        .lock()
        .unwrap()
        .files
        .insert("/api/users".into(), b"[]".to_vec());
    state.lock().unwrap().files.remove("/api/orders");
    ok(dir.path(), &["restore", "pipeline.toml"]);
    assert_eq!(state.lock().unwrap().files["/api/users"], users);
    assert_eq!(state.lock().unwrap().files["/api/orders"], orders);

    std::fs::write(
        dir.path().join("harness.toml"),
        format!("url = \"http://127.0.0.1:{port}/api\"\nendpoints = [\"users\", \"orders\"]\ntoken = \"${{env:EXAMPLE_TOKEN}}\"\n[grants]\nhttp = [\"http://127.0.0.1:{port}\"]\n"),
    )
    .unwrap();
    let report = ok(
        dir.path(),
        &[
            "plugins",
            "test",
            wasm.to_str().unwrap(),
            "--config",
            "harness.toml",
        ],
    );
    assert!(report.contains("2 artifact(s)"), "{report}");
}
