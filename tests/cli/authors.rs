//! Third-party plugin authoring through the real binary: `runner plugins new` crates build
//! out of tree with the one documented command and run in pipelines pinned by sha256;
//! `runner plugins test` passes good plugins and fails a lying one; `precompile` warms the cache.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use crate::common::{fixtures, tree};
use crate::{runner, stderr, stdout};

/// One target directory for every out-of-tree plugin build of the test run, so the wasm
/// dependencies (wit-bindgen, serde, …) compile once; builds take turns on it.
pub fn build_out_of_tree(crate_dir: &Path) -> PathBuf {
    static BUILDS: Mutex<()> = Mutex::new(());
    let _turn = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("third-party-plugins");
    // Exactly the documented command; only the shared target directory is added.
    let output = Command::new(env!("CARGO"))
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "building {} failed:\n{}",
        crate_dir.display(),
        stderr(&output)
    );
    let manifest: toml::Table = std::fs::read_to_string(crate_dir.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let name = manifest["package"]["name"]
        .as_str()
        .unwrap()
        .replace('-', "_");
    target.join(format!("wasm32-wasip2/release/{name}.wasm"))
}

fn ok(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(runner::plugins::sha256(&std::fs::read(path).unwrap()))
}

/// `runner plugins new --kind KIND NAME` in `dir`; returns the crate directory.
fn scaffold(dir: &Path, kind: &str, name: &str) -> PathBuf {
    ok(
        runner(&["plugins", "new", "--kind", kind, name], dir),
        "plugins new",
    );
    let crate_dir = dir.join(name);
    let readme = std::fs::read_to_string(crate_dir.join("README.md")).unwrap();
    assert!(
        readme.contains("cargo build --release --target wasm32-wasip2"),
        "{readme}"
    );
    crate_dir
}

#[test]
fn a_scaffolded_sink_builds_out_of_tree_and_backs_up_verifies_and_restores() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = scaffold(dir.path(), "sink", "my-sink");
    let wasm = build_out_of_tree(&crate_dir);

    let work = dir.path().join("work");
    let (data, repo) = (work.join("data"), work.join("repo"));
    tree::generate(&data, 3 << 20, 20);
    std::fs::create_dir_all(&repo).unwrap();
    let pipeline = format!(
        "[source]\ntype = \"files\"\npaths = [\"data\"]\n\n[[transform]]\ntype = \"checksum\"\n\n[[transform]]\ntype = \"zstd\"\n\n\
         [sink]\nplugin = {plugin:?}\nsha256 = \"{sha}\"\npath = {repo:?}\n[sink.grants]\ndirs = [{{ path = \"repo\", access = \"read-write\" }}]\n",
        plugin = wasm.display().to_string(),
        sha = sha256_hex(&wasm),
        repo = repo.display().to_string(),
    );
    std::fs::write(work.join("pipeline.toml"), pipeline).unwrap();
    ok(runner(&["run", "pipeline.toml"], &work), "run");
    let verified = ok(
        runner(&["verify", "pipeline.toml", "--read-data"], &work),
        "verify",
    );
    assert!(!verified.is_empty());
    ok(
        runner(&["restore", "pipeline.toml", "--target", "restored"], &work),
        "restore",
    );
    tree::assert_same(&data, &work.join("restored/data"));
    // The objects really are files the plugin wrote under its granted directory.
    assert!(std::fs::read_dir(repo.join("snapshots")).unwrap().count() == 1);

    // The harness passes it too, and leaves no object behind.
    let test_dir = tempfile::tempdir().unwrap();
    let config = format!(
        "path = {p:?}\n[grants]\ndirs = [{{ path = {p:?}, access = \"read-write\" }}]\n",
        p = test_dir.path().display().to_string()
    );
    std::fs::write(crate_dir.join("local-test.toml"), config).unwrap();
    let passed = ok(
        runner(
            &[
                "plugins",
                "test",
                wasm.to_str().unwrap(),
                "--config",
                "local-test.toml",
            ],
            &crate_dir,
        ),
        "plugins test",
    );
    for step in [
        "put-if-absent",
        "get with offset and length",
        "restore: ",
        "cleanup",
    ] {
        assert!(passed.contains(step), "{step} missing from:\n{passed}");
    }
    assert!(
        tree::describe(test_dir.path())
            .values()
            .all(|kind| kind.starts_with("dir")),
        "{:?}",
        tree::describe(test_dir.path())
    );
}

#[test]
fn scaffolded_sources_and_transforms_pass_the_harness() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, name) in [("transform", "my-transform"), ("source", "my-source")] {
        let crate_dir = scaffold(dir.path(), kind, name);
        let wasm = build_out_of_tree(&crate_dir);
        let data = dir.path().join(format!("{name}-data"));
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("one.txt"), b"one").unwrap();
        std::fs::write(data.join("two.bin"), vec![7u8; 3 << 20]).unwrap();
        let config = match kind {
            "source" => format!(
                "path = {p:?}\n[grants]\ndirs = [{{ path = {p:?}, access = \"read\" }}]\n",
                p = data.display().to_string()
            ),
            _ => String::new(),
        };
        std::fs::write(crate_dir.join("local-test.toml"), config).unwrap();
        let output = runner(
            &[
                "plugins",
                "test",
                wasm.to_str().unwrap(),
                "--config",
                "local-test.toml",
                "--json",
            ],
            &crate_dir,
        );
        let text = ok(output, &format!("plugins test of the {kind}"));
        let report: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(report["kind"], kind);
        assert_eq!(report["ok"], true);
        let checks = report["checks"].to_string();
        assert!(checks.contains("verify --read-data"), "{checks}");
        match kind {
            "source" => assert!(checks.contains("2 artifact(s), 3145731 bytes"), "{checks}"),
            _ => assert!(
                checks.contains("files identical to the originals"),
                "{checks}"
            ),
        }
    }
}

#[test]
fn the_harness_fails_a_sink_that_breaks_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("liar.toml"), "behaviour = \"corrupt\"\n").unwrap();
    let sink = fixtures::hostile("hostile-sink");
    let output = runner(
        &[
            "plugins",
            "test",
            sink.to_str().unwrap(),
            "--config",
            "liar.toml",
        ],
        dir.path(),
    );
    // It claims success but ignores the length of a ranged read: the harness names the call.
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("offset 1 length Some(10)")
            && stderr(&output).contains("expected 10"),
        "{}",
        stderr(&output)
    );
    // A bad option is reported at its line in the config file, not in the generated pipeline.
    std::fs::write(dir.path().join("typo.toml"), "# a comment\nbehaviour = 5\n").unwrap();
    let output = runner(
        &[
            "plugins",
            "test",
            sink.to_str().unwrap(),
            "--config",
            "typo.toml",
        ],
        dir.path(),
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("typo.toml:2:1"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn plugins_new_refuses_bad_names_and_busy_directories() {
    let dir = tempfile::tempdir().unwrap();
    let output = runner(&["plugins", "new", "--kind", "sink", "My_Sink"], dir.path());
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("invalid plugin name"),
        "{}",
        stderr(&output)
    );
    std::fs::create_dir(dir.path().join("busy")).unwrap();
    std::fs::write(dir.path().join("busy/keep"), b"mine").unwrap();
    let output = runner(&["plugins", "new", "--kind", "source", "busy"], dir.path());
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        std::fs::read(dir.path().join("busy/keep")).unwrap(),
        b"mine"
    );
}

#[test]
fn precompile_fills_the_cache_so_a_run_compiles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let with_cache = |args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_runner"))
            .args(args)
            .current_dir(dir.path())
            .env("RUNNER_CACHE_DIR", &cache)
            .env("RUNNER_LOG", "runner=debug")
            .output()
            .unwrap()
    };
    let first: serde_json::Value = serde_json::from_str(&ok(
        with_cache(&["plugins", "precompile", "--json"]),
        "precompile",
    ))
    .unwrap();
    let components = first["components"].as_array().unwrap();
    assert!(components.len() >= 5, "{first}");
    assert!(components.iter().all(|c| c["cached"] == false), "{first}");
    let second: serde_json::Value = serde_json::from_str(&ok(
        with_cache(&["plugins", "precompile", "--json"]),
        "precompile",
    ))
    .unwrap();
    assert!(
        second["components"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["cached"] == true),
        "{second}"
    );

    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/file"), b"contents").unwrap();
    std::fs::write(
        dir.path().join("pipeline.toml"),
        "[source]\ntype = \"files\"\npaths = [\"data\"]\n\n[[transform]]\ntype = \"zstd\"\n\n[sink]\ntype = \"local\"\npath = \"repo\"\n",
    )
    .unwrap();
    let run = with_cache(&["run", "pipeline.toml"]);
    let log = stderr(&run);
    assert!(run.status.success(), "{log}");
    assert!(log.contains("loaded from cache"), "{log}");
    assert!(
        !log.contains("component compiled"),
        "the run compiled a component:\n{log}"
    );
}

#[test]
fn the_harness_gives_a_transform_granted_keys_an_encrypted_scratch_repository() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_runner"));
    let aes = bin
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("plugins/wasm32-wasip2/release/runner_plugin_aes_gcm.wasm");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("keys.toml"),
        "[grants]\nkeys = [\"data\"]\n",
    )
    .unwrap();
    let passed = ok(
        runner(
            &[
                "plugins",
                "test",
                aes.to_str().unwrap(),
                "--config",
                "keys.toml",
            ],
            dir.path(),
        ),
        "plugins test of aes-gcm",
    );
    assert!(passed.contains("files identical"), "{passed}");
    // Without the grant it gets no key, and says so.
    let output = runner(&["plugins", "test", aes.to_str().unwrap()], dir.path());
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no key named \"data\""),
        "{}",
        stderr(&output)
    );
}
