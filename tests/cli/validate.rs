//! `runner validate` points at the exact line and column of every kind of mistake.

use crate::{stderr, stdout};

/// Writes `text` as `pipeline.toml` in a fresh directory and validates it.
fn validate(text: &str, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.toml"), text).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_runner"));
    cmd.args(["validate", "pipeline.toml"]).current_dir(dir.path()).env("RUNNER_CACHE_DIR", crate::common::cache_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = cmd.output().unwrap();
    (output.status.code(), stdout(&output), stderr(&output))
}

fn assert_located(text: &str, location: &str, message: &str) {
    let (code, _, err) = validate(text, &[]);
    assert_eq!(code, Some(2), "config errors exit with 2: {err}");
    assert!(err.contains(&format!("pipeline.toml:{location}: ")), "expected location {location} in:\n{err}");
    assert!(err.contains(message), "expected {message:?} in:\n{err}");
}

#[test]
fn malformed_toml_points_at_the_syntax_error() {
    assert_located("[source]\ntype = \"files\"\npaths = [\"a\", \n\n[sink\ntype = \"local\"\n", "5:1", "");
    assert_located("[source]\ntype = files\n", "2:8", "");
}

#[test]
fn unknown_plugin_type_lists_the_known_ones() {
    let text = "[source]\ntype = \"files\"\n\n[[transform]]\ntype = \"zsdt\"\n\n[sink]\ntype = \"local\"\n";
    assert_located(text, "5:8", "unknown transform type \"zsdt\"");
    let (_, _, err) = validate(text, &[]);
    assert!(err.contains("aes-gcm, checksum, zstd"), "{err}");
}

#[test]
fn missing_field_points_at_its_table() {
    assert_located("[source]\ntype = \"files\"\n\n[sink]\npath = \"x\"\n", "4:1", "`type`");
    assert_located("[source]\ntype = \"files\"\n", "1:1", "[sink]");
}

#[test]
fn bad_secret_reference_points_at_the_string() {
    let text = "[repository]\npassphrase = \"${vault:x}\"\n\n[source]\ntype = \"files\"\n\n[sink]\ntype = \"local\"\n";
    assert_located(text, "2:14", "vault");
}

#[test]
fn unset_secret_variable_is_named_with_its_location_and_never_its_value() {
    let text = "[repository]\npassphrase = \"${env:RUNNER_TEST_UNSET_VAR}\"\n\n[[transform]]\ntype = \"zstd\"\n\n[source]\ntype = \"nope\"\n\n[sink]\ntype = \"local\"\n";
    let (code, _, err) = validate(text, &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("pipeline.toml:8:8: unknown source type \"nope\""), "{err}");
}

#[test]
fn wrong_value_type_says_what_was_expected() {
    let text = "[source]\ntype = \"files\"\n[source.limits]\nmemory = true\n\n[sink]\ntype = \"local\"\n";
    assert_located(text, "4:10", "expected");
}
