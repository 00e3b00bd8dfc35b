//! The host's contract 0.1 adapter, call by call: the committed 0.1 fixture source driven
//! through the 0.2 API the rest of the host uses.

use std::path::{Path, PathBuf};

use runner::capabilities::StageGrants;
use runner::config::{DirAccess, DirGrant, Grants, Limits};
use runner::engine::bindings::PluginErrorKind;
use runner::engine::contract::{Artifact, BYTES, RestoreMode, RestoreOptions, SizeEstimate};
use runner::engine::{Contract, PluginError, SourceInstance};

use crate::common;

fn fixture() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/contract-0.1-source.wasm");
    std::fs::read(path).unwrap()
}

async fn start(dirs: &[&Path], path: &Path) -> SourceInstance {
    let engine = common::engine();
    let loaded = engine.load("contract-0.1-source", &fixture()).unwrap();
    assert_eq!(loaded.contract, Contract::V0_1);
    assert_eq!(loaded.shape.contract_version, "0.1.0");
    let grants = StageGrants {
        grants: Grants {
            dirs: dirs
                .iter()
                .map(|dir| DirGrant {
                    path: dir.to_path_buf(),
                    access: DirAccess::ReadWrite,
                })
                .collect(),
            ..Default::default()
        },
        ..Default::default()
    };
    let config = serde_json::json!({ "path": path.to_string_lossy() }).to_string();
    SourceInstance::start(
        &engine,
        &loaded,
        "source (0.1)",
        &config,
        grants,
        &Limits::default(),
    )
    .await
    .unwrap()
}

fn sized(artifact: &Artifact, amount: u64, unit: &str) -> Artifact {
    Artifact {
        size: Some(SizeEstimate {
            amount,
            unit: unit.into(),
            exact: true,
        }),
        ..artifact.clone()
    }
}

#[tokio::test]
async fn a_0_1_source_runs_through_the_0_2_api() {
    let dir = tempfile::tempdir().unwrap();
    let (data, target) = (dir.path().join("data"), dir.path().join("target"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(data.join("a.txt"), b"first file").unwrap();
    std::fs::write(data.join("b.bin"), vec![7u8; 70_000]).unwrap();
    let mut source = start(&[&data, &target], &data).await;

    // Backup: 0.1's byte size hints arrive as (inexact) estimates in bytes.
    let session = source.begin_backup(None).await.unwrap();
    let artifacts = source.artifacts(&session).await.unwrap();
    let listed: Vec<_> = artifacts
        .iter()
        .map(|a| {
            let size = a.size.as_ref().expect("a size");
            (a.name.as_str(), size.amount, size.unit.as_str(), size.exact)
        })
        .collect();
    assert_eq!(
        listed,
        [("a.txt", 10, BYTES, false), ("b.bin", 70_000, BYTES, false)]
    );
    assert_eq!(artifacts[0].metadata, [("contract".into(), "0.1".into())]);
    let mut contents = Vec::new();
    for artifact in &artifacts {
        let reader = source.open(&session, &artifact.name).await.unwrap();
        let mut bytes = Vec::new();
        while let Some(chunk) = source.read(&reader, 65_536).await.unwrap() {
            bytes.extend(chunk);
        }
        let learned = source.finish_read(reader).await.unwrap();
        assert_eq!(learned, [("bytes".into(), bytes.len().to_string())]);
        contents.push(bytes);
    }
    source.close_backup(session).await.unwrap();

    // Restore: options and the exact recorded size in bytes reach the 0.1 source; the
    // reports come back as 0.2's.
    let options = RestoreOptions {
        target: Some(target.to_string_lossy().into_owned()),
        only: Vec::new(),
        mode: RestoreMode::Replace,
        dry_run: false,
        overwrite: false,
    };
    let restore = source.begin_restore(&options).await.unwrap();
    for (artifact, bytes) in artifacts.iter().zip(&contents) {
        let artifact = sized(artifact, bytes.len() as u64, BYTES);
        let writer = source.write_artifact(&restore, &artifact).await.unwrap();
        source.write(&writer, bytes.clone()).await.unwrap();
        source.finish_write(writer).await.unwrap();
    }
    let reports = source.commit(restore).await.unwrap();
    let reported: Vec<_> = reports
        .iter()
        .map(|r| (r.artifact.as_str(), r.metadata.clone()))
        .collect();
    assert_eq!(
        reported,
        [
            ("a.txt", vec![("bytes".to_string(), "10".to_string())]),
            ("b.bin", vec![("bytes".to_string(), "70000".to_string())]),
        ]
    );
    assert_eq!(std::fs::read(target.join("a.txt")).unwrap(), b"first file");
    assert_eq!(
        std::fs::read(target.join("b.bin")).unwrap(),
        vec![7u8; 70_000]
    );

    // An estimate in another unit has no place in 0.1's `size-hint`: the source gets none
    // (and this one refuses to restore without it).
    let restore = source.begin_restore(&options).await.unwrap();
    let refused = source
        .write_artifact(&restore, &sized(&artifacts[0], 3, "rows"))
        .await;
    match refused {
        Err(PluginError::Plugin {
            error: PluginErrorKind::InvalidInput(message),
            ..
        }) => assert!(message.contains("no size hint"), "{message}"),
        Err(other) => panic!("expected the fixture's refusal, got {other}"),
        Ok(_) => panic!("expected the fixture's refusal"),
    }
    source.abort(restore).await.unwrap();
}
