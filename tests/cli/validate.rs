//! `runner validate` points at the exact line and column of every kind of mistake.

use crate::{stderr, stdout};

/// Writes `text` as `pipeline.toml` in a fresh directory and validates it.
fn validate(text: &str, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.toml"), text).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_runner"));
    cmd.args(["validate", "pipeline.toml"])
        .current_dir(dir.path())
        .env("RUNNER_CACHE_DIR", crate::common::cache_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = cmd.output().unwrap();
    (output.status.code(), stdout(&output), stderr(&output))
}

fn assert_located(text: &str, location: &str, message: &str) {
    let (code, _, err) = validate(text, &[]);
    assert_eq!(code, Some(2), "config errors exit with 2: {err}");
    assert!(
        err.contains(&format!("pipeline.toml:{location}: ")),
        "expected location {location} in:\n{err}"
    );
    assert!(err.contains(message), "expected {message:?} in:\n{err}");
}

#[test]
fn malformed_toml_points_at_the_syntax_error() {
    assert_located(
        "[source]\ntype = \"files\"\npaths = [\"a\", \n\n[sink\ntype = \"local\"\n",
        "6:1",
        "missing comma between array elements",
    );
    assert_located("[source]\ntype = files\n", "2:8", "");
}

#[test]
fn unknown_plugin_type_lists_the_known_ones() {
    let text = "[source]\ntype = \"files\"\n\n[[transform]]\ntype = \"zsdt\"\n\n[sink]\ntype = \"local\"\n";
    assert_located(text, "5:9", "unknown transform type \"zsdt\"");
    let (_, _, err) = validate(text, &[]);
    assert!(err.contains("aes-gcm, checksum, zstd"), "{err}");
}

#[test]
fn missing_field_points_at_its_table() {
    assert_located(
        "[source]\ntype = \"files\"\n\n[sink]\npath = \"x\"\n",
        "4:1",
        "`type`",
    );
    assert_located("[source]\ntype = \"files\"\n", "1:1", "[sink]");
}

#[test]
fn bad_secret_reference_points_at_the_string() {
    let text = "[repository]\npassphrase = \"${vault:x}\"\n\n[source]\ntype = \"files\"\n\n[sink]\ntype = \"local\"\n";
    assert_located(text, "2:15", "unknown secret backend \"vault\"");
}

const VALID_TAIL: &str =
    "[source]\ntype = \"files\"\npaths = [\".\"]\n\n[sink]\ntype = \"local\"\npath = \"repo\"\n";

#[test]
fn unset_secret_variable_is_named_with_its_location() {
    let text =
        format!("[repository]\npassphrase = \"${{env:RUNNER_TEST_UNSET_VAR}}\"\n\n{VALID_TAIL}");
    assert_located(&text, "2:15", "RUNNER_TEST_UNSET_VAR");
}

#[test]
fn a_secret_value_never_appears_in_validate_output() {
    let text = format!(
        "[repository]\npassphrase = \"${{env:RUNNER_TEST_SECRET}}\"\n\n[[transform]]\ntype = \"zstd\"\nlevel = 99\n\n{VALID_TAIL}"
    );
    let (code, out, err) = validate(&text, &[("RUNNER_TEST_SECRET", "hunter2-very-secret")]);
    assert_eq!(code, Some(2));
    assert!(
        !out.contains("hunter2") && !err.contains("hunter2"),
        "secret leaked:\n{out}{err}"
    );
}

#[test]
fn a_plugin_option_error_points_at_the_option() {
    let text = format!("[[transform]]\ntype = \"zstd\"\nlevel = 40\n\n{VALID_TAIL}");
    assert_located(
        &text,
        "3:1",
        "transform #1 (zstd): `level`: must be between 1 and 22, found 40",
    );
    let text = format!("[[transform]]\ntype = \"zstd\"\nlevle = 3\n\n{VALID_TAIL}");
    assert_located(&text, "3:1", "unknown field `levle`, expected `level`");
}

#[test]
fn an_encrypting_transform_without_a_key_is_a_config_error() {
    let text = format!("[[transform]]\ntype = \"aes-gcm\"\n\n{VALID_TAIL}");
    assert_located(&text, "1:1", "set [repository] passphrase or key_file");
}

#[test]
fn the_example_pipeline_is_valid_and_its_grants_are_printed() {
    let pipeline = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/daily.toml");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["validate", pipeline.to_str().unwrap()])
        .env("RUNNER_CACHE_DIR", crate::common::cache_dir())
        .env("RUNNER_PASSPHRASE", "x")
        .output()
        .unwrap();
    let out = stdout(&output);
    assert!(output.status.success(), "{out}{}", stderr(&output));
    assert!(out.contains("is valid"), "{out}");
    assert!(
        out.contains("example-data (read)"),
        "the files source's read grant is not shown:\n{out}"
    );
    assert!(
        out.contains("key data"),
        "the aes-gcm key grant is not shown:\n{out}"
    );
}

#[test]
fn wrong_value_type_says_what_was_expected() {
    let text =
        "[source]\ntype = \"files\"\n[source.limits]\nmemory = true\n\n[sink]\ntype = \"local\"\n";
    assert_located(text, "4:10", "expected");
}
