//! `runner run`: one backup. The source lists its artifacts, the host cuts each into
//! bounded objects, workers encode them through the chain into the sink in parallel, and
//! the manifest is written last.

use std::collections::BTreeMap;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::capabilities::StageGrants;
use crate::config::StageConfig;
use crate::engine::{LoadedPlugin, SourceInstance};
use crate::manifest::{ArtifactRecord, MANIFEST_FORMAT, Manifest, ObjectRecord, StageInfo};
use crate::pipeline::chain::{ChainError, ChainSpec};
use crate::pipeline::stages::{self, Purpose};
use crate::pipeline::workers::{self, Job, Pool};
use crate::pipeline::{CHUNK, Context, OBJECT_SIZE, RunError, failpoint, object_size};
use crate::repository::Repository;

/// What a committed backup did.
pub struct BackupSummary {
    pub manifest: Manifest,
    pub seconds: f64,
}

pub async fn run(ctx: &Context, tags: Vec<String>) -> Result<BackupSummary, RunError> {
    let started = Instant::now();
    let started_at = jiff::Timestamp::now();
    let mut repository = ctx.open_repository(true).await?;
    let snapshot = hex::encode(rand::random::<[u8; 16]>());
    let pipeline = &ctx.pipeline;

    // Every stage's component, recorded and stored so the snapshot restores with them.
    let mut loaded: Vec<(&StageConfig, LoadedPlugin)> = Vec::new();
    for stage in pipeline.stages() {
        loaded.push((stage, stages::load_plugin(&ctx.engine, stage)?));
    }
    let mut stage_infos = Vec::new();
    for (stage, plugin) in &loaded {
        let info = ctx.engine.describe(plugin).await?;
        repository
            .store_component(
                &hex::encode(plugin.digest),
                component_bytes(stage, plugin)?.as_slice(),
            )
            .await?;
        stage_infos.push(StageInfo {
            kind: stage.kind.to_string(),
            plugin: info.name,
            version: info.version,
            wasm_sha256: hex::encode(plugin.digest),
            config: stage.redacted_options(),
            keys: stage.grants.keys.clone(),
        });
    }

    let keys = repository.keys();
    let grants = |stage: &StageConfig| -> Result<StageGrants, RunError> {
        Ok(stages::implied_grants(
            stage,
            pipeline,
            Purpose::Backup,
            keys,
        )?)
    };
    let mut transforms = Vec::new();
    for (stage, plugin) in &loaded[1..loaded.len() - 1] {
        transforms.push(stages::spec(
            stage,
            plugin.clone(),
            grants(stage)?,
            &ctx.secrets,
        )?);
    }
    let spec = ChainSpec {
        transforms,
        sink: ctx.sink_spec()?,
        read_back_writes: matches!(pipeline.sink.plugin, crate::config::PluginRef::Path { .. }),
    };
    let (source_stage, source_plugin) = &loaded[0];
    let source_spec = stages::spec(
        source_stage,
        source_plugin.clone(),
        grants(source_stage)?,
        &ctx.secrets,
    )?;

    let mut source = SourceInstance::start(
        &ctx.engine,
        &source_spec.plugin,
        &source_spec.label,
        &source_spec.config_json,
        source_spec.grants.clone(),
        &source_spec.limits,
    )
    .await
    .map_err(|e| RunError::from(stages::locate(source_stage, e)))?;
    let pool = Pool::start(&ctx.engine, &spec, workers::default_size()).await?;
    let artifacts = read_artifacts(&mut source, &mut repository, &pool, &snapshot).await;
    pool.finish().await;
    let artifacts = artifacts?;

    failpoint::hit("before-manifest");
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        snapshot: snapshot.clone(),
        repository: repository.id.clone(),
        pipeline: pipeline.name.clone(),
        hostname: hostname(),
        started: started_at.to_string(),
        finished: jiff::Timestamp::now().to_string(),
        tags,
        stages: stage_infos,
        artifacts,
    };
    repository.write_manifest(&manifest).await?;
    Ok(BackupSummary {
        manifest,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The component bytes behind a loaded stage (built-in or file).
fn component_bytes(stage: &StageConfig, plugin: &LoadedPlugin) -> Result<Vec<u8>, RunError> {
    match &stage.plugin {
        crate::config::PluginRef::Builtin(name) => Ok(crate::plugins::builtin(stage.kind, name)
            .map(|b| b.wasm.to_vec())
            .ok_or_else(|| RunError::Failed(format!("built-in {name} vanished")))?),
        crate::config::PluginRef::Path { path, .. } => {
            let wasm = std::fs::read(path)
                .map_err(|e| RunError::Failed(format!("cannot read {}: {e}", path.display())))?;
            if crate::plugins::sha256(&wasm) != plugin.digest {
                return Err(RunError::Failed(format!(
                    "{} changed while the run started",
                    path.display()
                )));
            }
            Ok(wasm)
        }
    }
}

/// Reads every artifact of one backup session and hands its objects to the workers.
async fn read_artifacts(
    source: &mut SourceInstance,
    repository: &mut Repository,
    pool: &Pool,
    snapshot: &str,
) -> Result<Vec<ArtifactRecord>, RunError> {
    let object_size = object_size(repository.max_object_size().await?);
    let session = source.begin_backup(None).await?;
    let listed = source.artifacts(&session).await?;
    let mut records = Vec::new();
    for artifact in listed {
        let reader = source.open(&session, &artifact.name).await?;
        let mut pending: Vec<oneshot::Receiver<Result<ObjectRecord, ChainError>>> = Vec::new();
        let mut current: Option<(mpsc::Sender<Vec<u8>>, usize)> = None;
        let mut size = 0u64;
        let mut worker_gone = false;
        'read: while let Some(mut data) = source.read(&reader, CHUNK).await? {
            size += data.len() as u64;
            while !data.is_empty() {
                if current.is_none() {
                    let key = repository.object_key(snapshot, &artifact.name, pending.len());
                    let (chunks, result) = submit_encode(pool, &artifact.name, key).await;
                    pending.push(result);
                    current = Some((chunks, 0));
                }
                let (chunks, filled) = current.as_mut().expect("an object is open");
                let room = object_size - *filled;
                let piece = if data.len() > room {
                    let rest = data.split_off(room);
                    std::mem::replace(&mut data, rest)
                } else {
                    std::mem::take(&mut data)
                };
                *filled += piece.len();
                if chunks.send(piece).await.is_err() {
                    // The worker failed this object; its result says why.
                    worker_gone = true;
                    break 'read;
                }
                if *filled == object_size {
                    current = None;
                    failpoint::hit("after-object");
                }
            }
        }
        if pending.is_empty() && !worker_gone {
            // An empty artifact still becomes one (empty) object, so it restores.
            let key = repository.object_key(snapshot, &artifact.name, 0);
            let (_, result) = submit_encode(pool, &artifact.name, key).await;
            pending.push(result);
        }
        drop(current);
        let mut objects = Vec::new();
        for result in pending {
            objects.push(workers::outcome(result, snapshot).await?);
        }
        let learned = source.finish_read(reader).await?;
        let mut metadata: BTreeMap<String, String> = artifact.metadata.into_iter().collect();
        metadata.extend(learned);
        tracing::info!(artifact = %artifact.name, bytes = size, objects = objects.len(), "artifact stored");
        records.push(ArtifactRecord {
            name: artifact.name,
            media_type: artifact.media_type,
            schema_version: artifact.schema_version,
            metadata,
            size,
            objects,
        });
    }
    source.close_backup(session).await?;
    Ok(records)
}

/// Starts encoding one object on the pool; returns where its chunks go and where its record comes from.
async fn submit_encode(
    pool: &Pool,
    artifact: &str,
    key: String,
) -> (
    mpsc::Sender<Vec<u8>>,
    oneshot::Receiver<Result<ObjectRecord, ChainError>>,
) {
    // A whole object may wait in memory, so the reader moves on to the next object (and
    // the next worker) instead of pacing itself to the slowest worker.
    let (chunks, receiver) = mpsc::channel(OBJECT_SIZE / CHUNK as usize);
    let (done, result) = oneshot::channel();
    pool.submit(Job::Encode {
        artifact: artifact.to_string(),
        key,
        chunks: receiver,
        done,
    })
    .await;
    (chunks, result)
}

fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}
