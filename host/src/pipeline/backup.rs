//! `runner run`: one backup. The source lists its artifacts, the host cuts each into
//! bounded objects, workers encode them through the chain into the sink in parallel, and
//! the manifest is written last.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::capabilities::StageGrants;
use crate::config::StageConfig;
use crate::engine::contract::Artifact;
use crate::engine::source::BackupSession;
use crate::engine::{LoadedPlugin, SourceInstance};
use crate::manifest::{ArtifactRecord, MANIFEST_FORMAT, Manifest, ObjectRecord, StageInfo};
use crate::pipeline::chain::{ChainError, ChainSpec, StageSpec};
use crate::pipeline::events::{Event, Events};
use crate::pipeline::stages::{self, Purpose};
use crate::pipeline::workers::{self, Job, Pool};
use crate::pipeline::{CHUNK, Context, OBJECT_SIZE, RunError, failpoint, object_size};
use crate::repository::Repository;
use crate::repository::lock::LockGuard;

/// What a committed backup did.
pub struct BackupSummary {
    pub manifest: Manifest,
    pub seconds: f64,
}

/// One backup into `repository`, opened by the caller, which holds its append `lock`
/// (checked right before the commit); `time` records another start time than now
/// (imports, tests), the recorded end time moving with it.
pub async fn run(
    ctx: &Context,
    repository: &mut Repository,
    lock: &LockGuard,
    tags: Vec<String>,
    time: Option<jiff::Timestamp>,
) -> Result<BackupSummary, RunError> {
    let started = Instant::now();
    let started_at = time.unwrap_or_else(jiff::Timestamp::now);
    let snapshot = hex::encode(rand::random::<[u8; 16]>());
    let pipeline = &ctx.pipeline;
    ctx.events.emit(Event::Start {
        command: "run",
        pipeline: pipeline.name.clone(),
        snapshot: Some(snapshot.clone()),
    });

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
    let readers = Readers {
        engine: &ctx.engine,
        spec: &source_spec,
        jobs: stages::source_jobs(&source_stage.options),
    };
    let artifacts = read_artifacts(
        &mut source,
        readers,
        repository,
        &pool,
        &snapshot,
        &ctx.events,
    )
    .await;
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
        finished: started_at
            .checked_add(started.elapsed())
            .unwrap_or(started_at)
            .to_string(),
        tags,
        stages: stage_infos,
        artifacts,
    };
    // A lock lost meanwhile (unlocked, or unrefreshed long enough to look stale) may mean
    // a prune already deleted some of these objects: commit nothing.
    lock.check().await?;
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

/// How to start more instances of the source, and how many may read at once.
struct Readers<'a> {
    engine: &'a crate::engine::Engine,
    spec: &'a StageSpec,
    jobs: usize,
}

/// Reads every artifact of one backup session and hands its objects to the workers.
///
/// A source that can share its view (a share token: PostgreSQL's exported snapshot) is
/// read by up to `jobs` instances at once, the first one's session and the others joined
/// to it, each taking the next artifact from one queue, largest first (`pg_dump -j`).
/// Every reader hands at most one object at a time to the workers, so memory grows with
/// `jobs` objects, not with artifact sizes. Records come back in listing order.
async fn read_artifacts(
    source: &mut SourceInstance,
    readers: Readers<'_>,
    repository: &mut Repository,
    pool: &Pool,
    snapshot: &str,
    events: &Events,
) -> Result<Vec<ArtifactRecord>, RunError> {
    let object_size = object_size(repository.max_object_size().await?);
    let repository = &*repository;
    let session = source.begin_backup(None).await?;
    let listed = source.artifacts(&session).await?;
    events.emit(Event::Listed {
        artifacts: listed.len(),
        bytes_hint: listed.iter().map(expected_bytes).sum(),
    });
    let progress = Progress {
        events,
        total: AtomicU64::new(0),
    };
    let progress = &progress;
    let token = if readers.jobs > 1 && listed.len() > 1 {
        source.share_token(&session).await?
    } else {
        None
    };
    let joined = match &token {
        Some(_) => readers.jobs.min(listed.len()) - 1,
        None => 0,
    };
    let mut order: Vec<usize> = (0..listed.len()).collect();
    if joined > 0 {
        // Largest first, so the last artifact to finish is a small one.
        order.sort_by_key(|&i| std::cmp::Reverse(listed[i].size.as_ref().map_or(0, |s| s.amount)));
        tracing::info!(
            readers = joined + 1,
            "reading artifacts in parallel from one shared view"
        );
    }
    let queue = Mutex::new(VecDeque::from(order));
    let take = || queue.lock().expect("the artifact queue").pop_front();
    let read_all = async |source: &mut SourceInstance, session: &BackupSession| {
        let mut records = Vec::new();
        while let Some(i) = take() {
            let artifact = listed[i].clone();
            records.push((
                i,
                read_artifact(
                    source,
                    session,
                    artifact,
                    repository,
                    pool,
                    snapshot,
                    object_size,
                    progress,
                )
                .await?,
            ));
        }
        Ok::<_, RunError>(records)
    };
    let join = async || {
        let mut instance = SourceInstance::start(
            readers.engine,
            &readers.spec.plugin,
            &readers.spec.label,
            &readers.spec.config_json,
            readers.spec.grants.clone(),
            &readers.spec.limits,
        )
        .await?;
        let session = instance.begin_backup(token.clone()).await?;
        let records = read_all(&mut instance, &session).await?;
        instance.close_backup(session).await?;
        Ok::<_, RunError>(records)
    };
    type Records = Result<Vec<(usize, ArtifactRecord)>, RunError>;
    let mut readers: Vec<std::pin::Pin<Box<dyn Future<Output = Records> + '_>>> = Vec::new();
    readers.push(Box::pin(read_all(source, &session)));
    for _ in 0..joined {
        readers.push(Box::pin(join()));
    }
    let mut records: Vec<Option<ArtifactRecord>> = (0..listed.len()).map(|_| None).collect();
    for (i, record) in futures::future::try_join_all(readers)
        .await?
        .into_iter()
        .flatten()
    {
        records[i] = Some(record);
    }
    source.close_backup(session).await?;
    Ok(records.into_iter().flatten().collect())
}

/// Reads one artifact to its end, cutting it into objects the workers encode.
async fn read_artifact(
    source: &mut SourceInstance,
    session: &BackupSession,
    artifact: Artifact,
    repository: &Repository,
    pool: &Pool,
    snapshot: &str,
    object_size: usize,
    progress: &Progress<'_>,
) -> Result<ArtifactRecord, RunError> {
    progress.events.emit(Event::ArtifactStart {
        artifact: artifact.name.clone(),
        size_hint: expected_bytes(&artifact),
    });
    let reader = source.open(session, &artifact.name).await?;
    let mut pending: Vec<oneshot::Receiver<Result<ObjectRecord, ChainError>>> = Vec::new();
    let mut current: Option<(mpsc::Sender<Vec<u8>>, usize)> = None;
    let mut size = 0u64;
    let mut worker_gone = false;
    'read: while let Some(mut data) = source.read(&reader, CHUNK).await? {
        size += data.len() as u64;
        let total_bytes = progress
            .total
            .fetch_add(data.len() as u64, Ordering::Relaxed)
            + data.len() as u64;
        progress.events.emit(Event::Progress {
            artifact: artifact.name.clone(),
            bytes: size,
            total_bytes,
        });
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
    let record = ArtifactRecord {
        name: artifact.name,
        media_type: artifact.media_type,
        schema_version: artifact.schema_version,
        metadata,
        size,
        objects,
    };
    progress.events.emit(Event::ArtifactDone {
        artifact: record.name.clone(),
        bytes: size,
        stored: record.objects.iter().map(|o| o.stored().bytes).sum(),
        objects: record.objects.len(),
        incomplete: record.incomplete(),
    });
    Ok(record)
}

/// The bytes a source expects an artifact to have, when it estimates in bytes (a row or
/// document count gives no byte total for progress).
fn expected_bytes(artifact: &Artifact) -> Option<u64> {
    artifact
        .size
        .as_ref()
        .filter(|size| size.unit == "bytes")
        .map(|size| size.amount)
}

/// Where the readers report: events, and the bytes read by all of them together.
struct Progress<'e> {
    events: &'e Events,
    total: AtomicU64,
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

pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}
