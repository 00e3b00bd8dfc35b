//! Hostile plugins through the real binary: every escape attempt, limit and lie fails the
//! run cleanly (specific message, non-zero exit, no snapshot), granted access works, and no
//! secret shows up anywhere.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

use crate::common::fixtures::hostile;
use crate::{stderr, stdout};

const PASSPHRASE: &str = "sandbox-passphrase-7f3a91";
const TOKEN: &str = "plugin-token-c0ffee-42";

struct Outcome {
    code: Option<i32>,
    text: String,
    snapshots: usize,
}

/// Runs `runner run` (then `--json` output too) on a pipeline whose source is the hostile
/// plugin with `source_options`; returns exit code, all output and snapshot count.
fn run_source(dir: &Path, source_options: &str, sink: &str) -> Outcome {
    let pipeline = format!(
        "[repository]\npassphrase = \"${{env:SANDBOX_PASSPHRASE}}\"\n\n[source]\nplugin = {plugin:?}\ntoken = \"${{env:SANDBOX_TOKEN}}\"\n{source_options}\n\n{sink}\n",
        plugin = hostile("hostile-source").display().to_string(),
    );
    std::fs::write(dir.join("pipeline.toml"), pipeline).unwrap();
    let run = |args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_runner"))
            .args(args)
            .current_dir(dir)
            .env("RUNNER_CACHE_DIR", crate::common::cache_dir())
            .env("SANDBOX_PASSPHRASE", PASSPHRASE)
            .env("SANDBOX_TOKEN", TOKEN)
            .env("RUNNER_LOG", "debug")
            .output()
            .unwrap()
    };
    let output = run(&["run", "pipeline.toml"]);
    let json = run(&["run", "pipeline.toml", "--json"]);
    let text = format!(
        "{}{}{}{}",
        stdout(&output),
        stderr(&output),
        stdout(&json),
        stderr(&json)
    );
    // No secret in any output, or in anything the repository holds.
    assert!(
        !text.contains(PASSPHRASE) && !text.contains(TOKEN),
        "a secret leaked into the output:\n{text}"
    );
    for file in files_under(&dir.join("repo")) {
        let bytes = std::fs::read(&file).unwrap();
        for secret in [PASSPHRASE, TOKEN] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} found in {}",
                file.display()
            );
        }
    }
    assert_eq!(output.status.code(), json.status.code(), "{text}");
    let snapshots = std::fs::read_dir(dir.join("repo/snapshots"))
        .map(|d| d.count())
        .unwrap_or(0);
    Outcome {
        code: output.status.code(),
        text,
        snapshots,
    }
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

const LOCAL_SINK: &str = "[sink]\ntype = \"local\"\npath = \"repo\"";

fn assert_fails(outcome: &Outcome, expected: &[&str]) {
    assert!(
        outcome.code.is_some_and(|c| c != 0),
        "the run should fail:\n{}",
        outcome.text
    );
    assert_eq!(
        outcome.snapshots, 0,
        "a failed run left a snapshot:\n{}",
        outcome.text
    );
    for part in expected {
        assert!(
            outcome.text.contains(part),
            "expected {part:?} in:\n{}",
            outcome.text
        );
    }
}

fn assert_succeeds(outcome: &Outcome) {
    assert_eq!(outcome.code, Some(0), "{}", outcome.text);
    // The plugin was handed the token and tried to log it: the host scrubbed it.
    assert!(
        outcome.text.contains("leaking the token: [redacted]"),
        "{}",
        outcome.text
    );
    assert_eq!(outcome.snapshots, 2, "{}", outcome.text);
}

#[test]
fn reads_outside_the_grant_fail_and_inside_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let granted = dir.path().join("granted");
    std::fs::create_dir(&granted).unwrap();
    std::fs::write(granted.join("inside.txt"), b"allowed").unwrap();
    std::fs::write(dir.path().join("outside.txt"), b"forbidden").unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside.txt"), granted.join("escape-link"))
        .unwrap();
    let grant = format!(
        "[source.grants]\ndirs = [{{ path = {:?}, access = \"read\" }}]",
        granted.display().to_string()
    );
    for target in [
        "/etc/passwd".to_string(),
        format!("{}/../outside.txt", granted.display()),
        format!("{}/escape-link", granted.display()),
    ] {
        let case = tempfile::tempdir().unwrap();
        let outcome = run_source(
            case.path(),
            &format!("behaviour = \"read-file\"\ntarget = {target:?}\n{grant}"),
            LOCAL_SINK,
        );
        assert_fails(&outcome, &["source (hostile_source.wasm)", "access denied"]);
    }
    let case = tempfile::tempdir().unwrap();
    let inside = format!("{}/inside.txt", granted.display());
    assert_succeeds(&run_source(
        case.path(),
        &format!("behaviour = \"read-file\"\ntarget = {inside:?}\n{grant}"),
        LOCAL_SINK,
    ));
}

#[test]
fn writes_outside_a_read_write_grant_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (ro, rw) = (dir.path().join("ro"), dir.path().join("rw"));
    std::fs::create_dir(&ro).unwrap();
    std::fs::create_dir(&rw).unwrap();
    let grant = format!(
        "[source.grants]\ndirs = [{{ path = {:?}, access = \"read\" }}, {{ path = {:?}, access = \"read-write\" }}]",
        ro.display().to_string(),
        rw.display().to_string()
    );
    for target in [
        format!("{}/new.txt", ro.display()),
        "/tmp/runner-sandbox-escape.txt".to_string(),
        format!("{}/../new.txt", rw.display()),
    ] {
        let case = tempfile::tempdir().unwrap();
        let outcome = run_source(
            case.path(),
            &format!("behaviour = \"write-file\"\ntarget = {target:?}\n{grant}"),
            LOCAL_SINK,
        );
        assert_fails(&outcome, &["access denied"]);
        assert!(!Path::new(&target).exists(), "{target} was written");
    }
    let case = tempfile::tempdir().unwrap();
    let allowed = format!("{}/new.txt", rw.display());
    assert_succeeds(&run_source(
        case.path(),
        &format!("behaviour = \"write-file\"\ntarget = {allowed:?}\n{grant}"),
        LOCAL_SINK,
    ));
    assert_eq!(std::fs::read(&allowed).unwrap(), b"written by a plugin");
}

#[test]
fn the_environment_and_arguments_are_empty() {
    let case = tempfile::tempdir().unwrap();
    assert_succeeds(&run_source(case.path(), "behaviour = \"env\"", LOCAL_SINK));
}

/// A TCP server that answers each connection with `reply`, for `count` connections.
fn tcp_server(reply: &'static [u8], count: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(reply);
        }
    });
    address
}

#[test]
fn tcp_reaches_only_granted_addresses_and_cannot_listen() {
    let granted = tcp_server(b"granted reply", 2);
    let other = tcp_server(b"should never be read", 2);
    let grant = format!("[source.grants]\ntcp = [{granted:?}]");
    let case = tempfile::tempdir().unwrap();
    assert_succeeds(&run_source(
        case.path(),
        &format!("behaviour = \"tcp\"\ntarget = {granted:?}\n{grant}"),
        LOCAL_SINK,
    ));
    let case = tempfile::tempdir().unwrap();
    let outcome = run_source(
        case.path(),
        &format!("behaviour = \"tcp\"\ntarget = {other:?}\n{grant}"),
        LOCAL_SINK,
    );
    assert_fails(&outcome, &["access denied", "connect"]);
    let case = tempfile::tempdir().unwrap();
    let outcome = run_source(
        case.path(),
        &format!("behaviour = \"listen\"\ntarget = \"127.0.0.1:0\"\n{grant}"),
        LOCAL_SINK,
    );
    assert_fails(&outcome, &["listen"]);
}

#[test]
fn http_reaches_only_granted_origins() {
    let reply: &'static [u8] =
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
    let granted = tcp_server(reply, 2);
    let other = tcp_server(reply, 2);
    let grant = format!("[source.grants]\nhttp = [\"http://{granted}\"]");
    let case = tempfile::tempdir().unwrap();
    assert_succeeds(&run_source(
        case.path(),
        &format!("behaviour = \"http\"\ntarget = \"http://{granted}/data\"\n{grant}"),
        LOCAL_SINK,
    ));
    let case = tempfile::tempdir().unwrap();
    let outcome = run_source(
        case.path(),
        &format!("behaviour = \"http\"\ntarget = \"http://{other}/data\"\n{grant}"),
        LOCAL_SINK,
    );
    assert_fails(&outcome, &["access denied", "GET"]);
    assert!(
        outcome.text.contains("HTTP request denied"),
        "{}",
        outcome.text
    );
}

#[test]
fn a_plugin_that_loops_or_blocks_is_stopped_by_its_call_timeout() {
    for behaviour in ["loop", "block"] {
        let case = tempfile::tempdir().unwrap();
        let outcome = run_source(
            case.path(),
            &format!("behaviour = {behaviour:?}\n[source.limits]\ncall_timeout = \"2s\""),
            LOCAL_SINK,
        );
        assert_fails(
            &outcome,
            &["source (hostile_source.wasm)", "call_timeout", "2s"],
        );
    }
}

#[test]
fn a_plugin_that_outlives_its_run_timeout_is_stopped() {
    let case = tempfile::tempdir().unwrap();
    let outcome = run_source(
        case.path(),
        "behaviour = \"loop\"\n[source.limits]\nrun_timeout = \"3s\"",
        LOCAL_SINK,
    );
    assert_fails(
        &outcome,
        &["source (hostile_source.wasm)", "run_timeout", "3s"],
    );
}

#[test]
fn a_plugin_that_grows_without_bound_is_stopped_by_its_memory_limit() {
    let case = tempfile::tempdir().unwrap();
    let outcome = run_source(
        case.path(),
        "behaviour = \"grow\"\n[source.limits]\nmemory = \"64MiB\"",
        LOCAL_SINK,
    );
    assert_fails(
        &outcome,
        &["source (hostile_source.wasm) exceeded its memory limit of 67108864 bytes"],
    );
}

#[test]
fn an_oversized_chunk_is_refused_even_with_memory_to_spare() {
    let case = tempfile::tempdir().unwrap();
    let outcome = run_source(
        case.path(),
        "behaviour = \"oversized\"\n[source.limits]\nmemory = \"1GiB\"",
        LOCAL_SINK,
    );
    assert_fails(
        &outcome,
        &["returned 67108864 bytes, more than the 1048576 allowed in one call"],
    );
}

#[test]
fn a_plugin_that_traps_mid_stream_fails_the_run() {
    let case = tempfile::tempdir().unwrap();
    let outcome = run_source(case.path(), "behaviour = \"trap\"", LOCAL_SINK);
    assert_fails(&outcome, &["source (hostile_source.wasm) crashed"]);
}

#[test]
fn a_sink_that_lies_about_what_it_stored_is_caught_before_commit() {
    for (behaviour, expected) in [
        ("corrupt", "reading it back gives"),
        ("drop", "bytes were written, 0 are there"),
    ] {
        let case = tempfile::tempdir().unwrap();
        let sink = format!(
            "[sink]\nplugin = {:?}\nbehaviour = {behaviour:?}",
            hostile("hostile-sink").display().to_string()
        );
        let outcome = run_source(case.path(), "behaviour = \"plain\"", &sink);
        assert!(
            outcome.code == Some(5),
            "{behaviour}: expected the integrity exit code:\n{}",
            outcome.text
        );
        assert!(
            outcome.text.contains("the sink reported it stored, but"),
            "{}",
            outcome.text
        );
        assert!(
            outcome.text.contains(expected),
            "{behaviour}: {}",
            outcome.text
        );
    }
}

#[test]
fn a_pinned_digest_is_enforced() {
    let case = tempfile::tempdir().unwrap();
    let wrong = "0".repeat(64);
    let outcome = run_source(
        case.path(),
        &format!("behaviour = \"plain\"\nsha256 = {wrong:?}"),
        LOCAL_SINK,
    );
    assert_fails(&outcome, &["refusing to run it"]);
    assert_eq!(outcome.code, Some(2));
}

#[test]
fn a_component_of_the_wrong_world_is_refused_before_it_runs() {
    let case = tempfile::tempdir().unwrap();
    let sink_as_source = format!(
        "[source]\nplugin = {:?}\n\n[sink]\ntype = \"local\"\npath = \"repo\"\n",
        hostile("hostile-sink").display().to_string()
    );
    std::fs::write(case.path().join("pipeline.toml"), sink_as_source).unwrap();
    let output = crate::runner(&["run", "pipeline.toml"], case.path());
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output)
            .contains("hostile_sink.wasm is a sink plugin, but it is used as the source"),
        "{}",
        stderr(&output)
    );
    assert!(!case.path().join("repo/snapshots").exists());
}

#[test]
fn validate_prints_the_effective_network_grants() {
    let case = tempfile::tempdir().unwrap();
    let text = format!(
        "[repository]\npassphrase = \"${{env:SANDBOX_PASSPHRASE}}\"\n\n[source]\nplugin = {:?}\nbehaviour = \"plain\"\n[source.grants]\nhttp = [\"https://*.example.com\"]\ntcp = [\"127.0.0.1:5432\"]\nkeys = [\"data\"]\n\n[sink]\ntype = \"local\"\npath = \"repo\"\n",
        hostile("hostile-source").display().to_string()
    );
    std::fs::write(case.path().join("pipeline.toml"), text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["validate", "pipeline.toml"])
        .current_dir(case.path())
        .env("RUNNER_CACHE_DIR", crate::common::cache_dir())
        .env("SANDBOX_PASSPHRASE", PASSPHRASE)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(out.contains("key data"), "{out}");
    assert!(out.contains("http https://*.example.com"), "{out}");
    assert!(out.contains("tcp 127.0.0.1:5432"), "{out}");
    assert!(out.contains("storage local directory"), "{out}");
}
