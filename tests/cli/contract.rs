//! Contract versions through the real binary: a component built against the frozen 0.1
//! contract still backs up and restores (through the host's adapter), and a component of a
//! version this runner does not know is refused naming its version and the supported ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{runner, stderr, succeeded};

/// The committed contract 0.1 source (tests/fixtures/rebuild-contract-0.1.sh rebuilds it).
fn contract_0_1_source() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/contract-0.1-source.wasm")
}

fn sha256_hex(wasm: &[u8]) -> String {
    hex::encode(runner::plugins::sha256(wasm))
}

/// A pipeline in `dir` whose source is the component at `plugin`, over `dir/data`, into a
/// local repository `dir/repo`; restores may go to `dir/restored`.
fn write_pipeline(dir: &Path, plugin: &Path) {
    let wasm = std::fs::read(plugin).unwrap();
    let data = dir.join("data");
    let pipeline = format!(
        "[source]\nplugin = {plugin:?}\nsha256 = \"{sha}\"\npath = {data:?}\n\
         [source.grants]\ndirs = [{{ path = \"data\", access = \"read-write\" }}, {{ path = \"restored\", access = \"read-write\" }}]\n\n\
         [[transform]]\ntype = \"checksum\"\n\n[[transform]]\ntype = \"zstd\"\n\n\
         [sink]\ntype = \"local\"\npath = \"repo\"\n",
        plugin = plugin.display().to_string(),
        sha = sha256_hex(&wasm),
        data = data.display().to_string(),
    );
    std::fs::write(dir.join("pipeline.toml"), pipeline).unwrap();
}

/// The fixture with its exported interface renamed to `version` (same length as "0.1.0",
/// so every offset in the binary stays valid): a real component of an unknown version.
fn with_contract_version(version: &str, dir: &Path) -> PathBuf {
    assert_eq!(version.len(), "0.1.0".len());
    let mut wasm = std::fs::read(contract_0_1_source()).unwrap();
    let (from, to) = (
        b"runner:plugin/source@0.1.0".as_slice(),
        format!("runner:plugin/source@{version}").into_bytes(),
    );
    let mut replaced = 0;
    let mut at = 0;
    while let Some(found) = wasm[at..].windows(from.len()).position(|w| w == from) {
        let start = at + found;
        wasm[start..start + from.len()].copy_from_slice(&to);
        at = start + from.len();
        replaced += 1;
    }
    assert!(
        replaced > 0,
        "the fixture exports runner:plugin/source@0.1.0"
    );
    let path = dir.join(format!("source-{version}.wasm"));
    std::fs::write(&path, wasm).unwrap();
    path
}

/// Name → content of the files directly in `dir`.
fn files_in(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_contract_0_1_source_backs_up_verifies_and_restores_through_the_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let data = work.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(work.join("restored")).unwrap();
    // Several reads per artifact (the host reads ≤ 1 MiB at a time), a small one, an empty one.
    let big: Vec<u8> = (0..(3u32 << 20) + 4097)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(data.join("big.bin"), &big).unwrap();
    std::fs::write(data.join("notes.txt"), b"written before the backup\n").unwrap();
    std::fs::write(data.join("empty"), b"").unwrap();
    write_pipeline(work, &contract_0_1_source());

    let inspected = succeeded(
        &runner(
            &[
                "plugins",
                "inspect",
                contract_0_1_source().to_str().unwrap(),
            ],
            work,
        ),
        &["plugins", "inspect"],
    );
    assert!(
        inspected.contains("contract:  runner:plugin@0.1.0 (older than this runner's 0.2.0"),
        "{inspected}"
    );
    let validated = succeeded(&runner(&["validate", "pipeline.toml"], work), &["validate"]);
    assert!(validated.contains("contract-0.1-source"), "{validated}");

    succeeded(&runner(&["run", "pipeline.toml"], work), &["run"]);
    succeeded(
        &runner(&["verify", "pipeline.toml", "--read-data"], work),
        &["verify"],
    );
    // The source refuses an artifact whose size hint is not its exact recorded size, so
    // this restore also proves the adapter turned 0.2's exact size back into 0.1's hint.
    let restored = work.join("restored");
    succeeded(
        &runner(
            &[
                "restore",
                "pipeline.toml",
                "--target",
                restored.to_str().unwrap(),
            ],
            work,
        ),
        &["restore"],
    );
    // The fixture restores content only (no modes or times): compare names and bytes.
    assert_eq!(files_in(&restored), files_in(&data));
    assert_eq!(std::fs::read(restored.join("big.bin")).unwrap(), big);
}

#[test]
fn a_component_of_an_unknown_contract_version_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::create_dir_all(work.join("data")).unwrap();
    std::fs::create_dir_all(work.join("restored")).unwrap();
    for version in ["0.3.0", "1.0.0"] {
        let plugin = with_contract_version(version, work);
        let name = plugin.file_name().unwrap().to_str().unwrap().to_string();
        let expected = format!(
            "cannot load plugin {name}: it was built against contract runner:plugin@{version}, and this runner supports 0.1.0, 0.2.0"
        );

        let inspected = runner(&["plugins", "inspect", plugin.to_str().unwrap()], work);
        assert_eq!(inspected.status.code(), Some(2), "{}", stderr(&inspected));
        assert!(
            stderr(&inspected).contains(&expected),
            "{}",
            stderr(&inspected)
        );

        write_pipeline(work, &plugin);
        let validated = runner(&["validate", "pipeline.toml"], work);
        assert_eq!(validated.status.code(), Some(2), "{}", stderr(&validated));
        let message = stderr(&validated);
        assert!(message.contains(&expected), "{message}");
        assert!(
            message.contains("pipeline.toml:"),
            "names the stage's line: {message}"
        );

        let run = runner(&["run", "pipeline.toml"], work);
        assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
        assert!(stderr(&run).contains(&expected), "{}", stderr(&run));
        assert!(!work.join("repo/snapshots").exists());
    }
}
