//! The compile cache: entries are reused, and a corrupted or foreign entry is rebuilt,
//! never trusted.

use runner::config::StageKind;
use runner::engine::{Engine, EngineOptions};

fn engine(dir: &std::path::Path, guest_debug: bool) -> Engine {
    Engine::new(EngineOptions {
        cache_dir: Some(dir.to_path_buf()),
        guest_debug,
    })
    .unwrap()
}

fn entries(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn corrupted_and_foreign_entries_are_rebuilt() {
    let wasm = runner::plugins::builtin(StageKind::Transform, "checksum")
        .unwrap()
        .wasm;
    let dir = tempfile::tempdir().unwrap();
    let normal = engine(dir.path(), false);
    normal.load("checksum", wasm).unwrap();
    let [entry] = entries(dir.path()).try_into().expect("one cache entry");
    let good = std::fs::read(&entry).unwrap();

    // Reused as is.
    normal.load("checksum", wasm).unwrap();
    assert_eq!(std::fs::read(&entry).unwrap(), good);

    // A flipped byte in the compiled code: detected, recompiled, rewritten.
    let mut corrupted = good.clone();
    let middle = corrupted.len() / 2;
    corrupted[middle] ^= 0x20;
    std::fs::write(&entry, &corrupted).unwrap();
    let loaded = normal.load("checksum", wasm).unwrap();
    assert_eq!(normal.describe(&loaded).await.unwrap().name, "checksum");
    assert_eq!(
        std::fs::read(&entry).unwrap(),
        good,
        "the corrupted entry was not rebuilt"
    );

    // Truncated.
    std::fs::write(&entry, &good[..100]).unwrap();
    normal.load("checksum", wasm).unwrap();
    assert_eq!(std::fs::read(&entry).unwrap(), good);

    // A well-formed entry from an engine with another configuration, under this one's name.
    let other_dir = tempfile::tempdir().unwrap();
    engine(other_dir.path(), true)
        .load("checksum", wasm)
        .unwrap();
    let [foreign] = entries(other_dir.path())
        .try_into()
        .expect("one cache entry");
    assert_ne!(
        foreign.file_name(),
        entry.file_name(),
        "engine configuration must be part of the key"
    );
    std::fs::copy(&foreign, &entry).unwrap();
    let loaded = normal.load("checksum", wasm).unwrap();
    assert_eq!(normal.describe(&loaded).await.unwrap().name, "checksum");
    assert_eq!(
        std::fs::read(&entry).unwrap(),
        good,
        "the foreign entry was not replaced"
    );
}
