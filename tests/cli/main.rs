//! Tests of the real `runner` binary.

#[path = "../common/mod.rs"]
mod common;

mod authors;
mod backup;
mod contract;
mod daemon;
mod deploy;
mod elasticsearch;
mod examples;
mod locks;
mod monitoring;
mod operations;
mod plugins;
mod postgres;
mod remote;
mod retention;
mod sandbox;
mod sqlite;
mod validate;

use std::path::Path;
use std::process::{Command, Output};

/// Runs the built binary with a private compile cache and no inherited secrets.
pub fn runner(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(args)
        .current_dir(dir)
        .env("RUNNER_CACHE_DIR", common::cache_dir())
        .env_remove("RUNNER_PASSPHRASE")
        .output()
        .expect("runner binary runs")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asserts that a `runner` command succeeded (showing its output when not); returns stdout.
pub fn succeeded(output: &Output, args: &[&str]) -> String {
    assert!(
        output.status.success(),
        "runner {args:?} failed:\n{}{}",
        stdout(output),
        stderr(output)
    );
    stdout(output)
}
