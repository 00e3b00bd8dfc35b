//! `runner plugins` lists the embedded components with the digests of the built `.wasm` files.

use std::path::PathBuf;

use crate::{runner, stdout};

/// Where host/build.rs puts the components it embeds.
fn built_plugins_dir() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_runner"));
    bin.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("plugins/wasm32-wasip2/release")
}

#[test]
fn lists_every_built_in_with_the_digest_of_its_wasm_file() {
    let dir = tempfile::tempdir().unwrap();
    let output = runner(&["plugins", "--json"], dir.path());
    assert!(output.status.success(), "{}", crate::stderr(&output));
    let listed: Vec<serde_json::Value> = serde_json::from_str(&stdout(&output)).unwrap();
    let names: Vec<&str> = listed.iter().map(|p| p["name"].as_str().unwrap()).collect();
    for expected in ["checksum", "zstd", "aes-gcm"] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    for plugin in &listed {
        let name = plugin["name"].as_str().unwrap();
        let file =
            built_plugins_dir().join(format!("runner_plugin_{}.wasm", name.replace('-', "_")));
        let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(
            plugin["sha256"].as_str().unwrap(),
            hex::encode(runner::plugins::sha256(&bytes)),
            "{name}"
        );
        assert_eq!(
            plugin["size"].as_u64().unwrap(),
            bytes.len() as u64,
            "{name}"
        );
        assert_eq!(plugin["contract"], "0.2.0");
        assert!(!plugin["version"].as_str().unwrap().is_empty());
    }
}

#[test]
fn inspect_reports_world_contract_imports_and_digest() {
    let file = built_plugins_dir().join("runner_plugin_zstd.wasm");
    let dir = tempfile::tempdir().unwrap();
    let output = runner(
        &["plugins", "inspect", file.to_str().unwrap(), "--json"],
        dir.path(),
    );
    assert!(output.status.success(), "{}", crate::stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["world"], "transform-plugin");
    assert_eq!(report["contract"], "runner:plugin@0.2.0");
    assert_eq!(report["name"], "zstd");
    assert_eq!(
        report["sha256"].as_str().unwrap(),
        hex::encode(runner::plugins::sha256(&std::fs::read(&file).unwrap()))
    );
    let imports: Vec<&str> = report["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    assert!(
        imports.iter().any(|i| i.starts_with("wasi:io/streams")),
        "{imports:?}"
    );
}

#[test]
fn inspect_refuses_a_file_that_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("junk.wasm"), b"\0asm not really").unwrap();
    let output = runner(&["plugins", "inspect", "junk.wasm"], dir.path());
    assert_eq!(output.status.code(), Some(2));
    assert!(
        crate::stderr(&output).contains("cannot load plugin junk.wasm"),
        "{}",
        crate::stderr(&output)
    );
}
