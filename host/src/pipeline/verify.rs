//! `runner verify`: every manifest authenticates and chains, every recorded component and
//! object is there with its size; with `--read-data`, every byte goes back through the
//! recorded chain and every stage boundary digest is checked.

use crate::manifest::Manifest;
use crate::pipeline::restore::{decode_artifact, recorded_chain};
use crate::pipeline::selection::Selection;
use crate::pipeline::workers::{self, Pool};
use crate::pipeline::{Context, RunError};
use crate::repository::Repository;
use crate::repository::lock::LockKind;

pub struct VerifyRequest {
    /// Which snapshot, unless `all`.
    pub selection: Selection,
    pub all: bool,
    pub read_data: bool,
}

/// The outcome for one snapshot.
pub struct SnapshotCheck {
    pub snapshot: String,
    pub objects: usize,
    pub bytes_read: u64,
    pub problem: Option<String>,
}

pub async fn run(ctx: &Context, request: VerifyRequest) -> Result<Vec<SnapshotCheck>, RunError> {
    let mut repository = ctx.open_repository(false).await?;
    let lock = ctx.lock(&repository, LockKind::Read, "verify").await?;
    let outcome = verify(ctx, &mut repository, request).await;
    lock.release().await;
    outcome
}

async fn verify(
    ctx: &Context,
    repository: &mut Repository,
    request: VerifyRequest,
) -> Result<Vec<SnapshotCheck>, RunError> {
    let ids: Vec<String> = if request.all {
        let mut ids = repository.snapshot_ids().await?;
        ids.sort();
        ids
    } else {
        // A manifest that cannot be read is a verify failure, reported, not a crash.
        match request.selection.resolve(repository).await {
            Ok(manifest) => vec![manifest.snapshot],
            Err(RunError::Repository(crate::repository::RepoError::Corrupt { key, reason })) => {
                return Ok(vec![SnapshotCheck {
                    snapshot: key.trim_start_matches("snapshots/").to_string(),
                    objects: 0,
                    bytes_read: 0,
                    problem: Some(format!("manifest {key} is damaged: {reason}")),
                }]);
            }
            Err(e) => return Err(e),
        }
    };
    let mut checks = Vec::new();
    for id in ids {
        let check = match repository.read_manifest(&id).await {
            Ok(manifest) => check_snapshot(ctx, repository, &manifest, request.read_data).await?,
            Err(e) => SnapshotCheck {
                snapshot: id.clone(),
                objects: 0,
                bytes_read: 0,
                problem: Some(e.to_string()),
            },
        };
        checks.push(check);
    }
    Ok(checks)
}

async fn check_snapshot(
    ctx: &Context,
    repository: &mut Repository,
    manifest: &Manifest,
    read_data: bool,
) -> Result<SnapshotCheck, RunError> {
    let mut check = SnapshotCheck {
        snapshot: manifest.snapshot.clone(),
        objects: 0,
        bytes_read: 0,
        problem: None,
    };
    for stage in &manifest.stages {
        if let Err(e) = repository.load_component(&stage.wasm_sha256).await {
            check.problem = Some(format!("{} stage {}: {e}", stage.kind, stage.plugin));
            return Ok(check);
        }
    }
    for artifact in &manifest.artifacts {
        for object in &artifact.objects {
            check.objects += 1;
            let stored = object.stored().bytes;
            match repository.sink().stat(&object.key).await? {
                None => {
                    check.problem = Some(format!(
                        "artifact {}, object {}: missing",
                        artifact.name, object.key
                    ));
                    return Ok(check);
                }
                Some(stat) if stat.size != stored => {
                    check.problem = Some(format!(
                        "artifact {}, object {}: {} bytes stored, the manifest records {stored}",
                        artifact.name, object.key, stat.size
                    ));
                    return Ok(check);
                }
                Some(_) => {}
            }
        }
    }
    if read_data {
        let chain = recorded_chain(ctx, repository, manifest).await?;
        let pool = Pool::start(&ctx.engine, &chain, workers::default_size()).await?;
        let mut bytes = 0u64;
        let mut outcome = Ok(());
        for artifact in &manifest.artifacts {
            outcome = decode_artifact(
                &pool,
                &manifest.snapshot,
                artifact,
                async |chunk: Vec<u8>| {
                    bytes += chunk.len() as u64;
                    Ok(())
                },
            )
            .await;
            if outcome.is_err() {
                break;
            }
        }
        pool.finish().await;
        check.bytes_read = bytes;
        match outcome {
            Ok(()) => {}
            Err(RunError::Chain { source, .. }) => check.problem = Some(source.to_string()),
            Err(e) => return Err(e),
        }
    }
    Ok(check)
}
