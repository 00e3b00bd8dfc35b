//! `runner restore`: the recorded chain run backwards. Objects come out of the sink through
//! the decoders, every stage boundary is checked against the manifest, the source stages
//! the artifacts, and commits only when everything matched.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::Instant;

use globset::{Glob, GlobSet, GlobSetBuilder};
use tokio::sync::{mpsc, oneshot};

use crate::capabilities::StageGrants;
use crate::config::{PluginRef, StageKind};
use crate::engine::contract::{
    Artifact, BYTES, RestoreMode, RestoreOptions, RestoreReport, SizeEstimate,
};
use crate::engine::source::RestoreSession;
use crate::engine::{LoadedPlugin, SourceInstance};
use crate::manifest::{ArtifactRecord, Manifest, StageInfo};
use crate::pipeline::chain::{ChainError, ChainSpec, StageSpec};
use crate::pipeline::events::{Event, Events};
use crate::pipeline::selection::Selection;
use crate::pipeline::stages::{self, Purpose};
use crate::pipeline::workers::{self, Job, Pool};
use crate::pipeline::{CHUNK, Context, OBJECT_SIZE, RunError};
use crate::repository::Repository;
use crate::repository::lock::LockKind;

pub struct RestoreRequest {
    pub selection: Selection,
    pub only: Vec<String>,
    pub target: Option<PathBuf>,
    pub mode: RestoreMode,
    pub dry_run: bool,
    pub overwrite: bool,
    /// No target: back where the backup came from (sources that support it).
    pub in_place: bool,
}

pub struct RestoreSummary {
    pub snapshot: String,
    pub artifacts: Vec<String>,
    pub bytes: u64,
    pub reports: Vec<RestoreReport>,
    pub seconds: f64,
}

pub async fn run(ctx: &Context, request: RestoreRequest) -> Result<RestoreSummary, RunError> {
    let started = Instant::now();
    let mut repository = ctx.open_repository(false).await?;
    let lock = ctx.lock(&repository, LockKind::Read, "restore").await?;
    let outcome = restore(ctx, &mut repository, request, started).await;
    lock.release().await;
    outcome
}

async fn restore(
    ctx: &Context,
    repository: &mut Repository,
    request: RestoreRequest,
    started: Instant,
) -> Result<RestoreSummary, RunError> {
    let manifest = request.selection.resolve(repository).await?;
    let selected = select_artifacts(&manifest, &request.only)?;

    let chain = recorded_chain(ctx, repository, &manifest).await?;
    let (source_info, source_plugin) =
        recorded_component(ctx, repository, &manifest, StageKind::Source).await?;
    let source_stage = &ctx.pipeline.source;
    let builtin = match &source_stage.plugin {
        PluginRef::Builtin(name) if *name == source_info.plugin => Some(name.as_str()),
        _ => None,
    };
    let purpose = Purpose::Restore {
        target: request.target.clone(),
        dry_run: request.dry_run,
        in_place: request.in_place,
    };
    let grants = stages::builtin_grants(
        StageKind::Source,
        builtin,
        &source_info.config,
        &source_stage.grants,
        ctx.pipeline.base_dir(),
        purpose,
        None,
    )
    .map_err(|message| RunError::Usage(format!("{}: {message}", source_stage.label())))?;
    let target = stages::restore_target(builtin, &grants, request.target.as_deref());
    // The recorded config holds secret references as written; the plugin needs their
    // values (a database password), resolved now — except credentials the host keeps
    // (the elasticsearch source's auth, injected into its requests instead).
    let (mut config, secrets) = stages::resolve_recorded(
        &source_stage.label(),
        &source_info.config,
        ctx.pipeline.base_dir(),
        &ctx.secrets,
    )
    .map_err(RunError::Usage)?;
    if builtin == Some("elasticsearch") {
        crate::pipeline::elasticsearch::withhold(&source_info.config, &mut config);
    }
    // `jobs` is the operator's choice now, not at backup (like `pg_restore -j`): the
    // pipeline's value goes to the recorded plugin when that plugin knows the option
    // (its artifacts say they can be written in parallel) and is the pipeline's own.
    let knows_jobs = selected
        .iter()
        .any(|a| a.metadata.contains_key(PARALLEL_AFTER));
    let jobs = match source_stage.options.get("jobs") {
        Some(value) if builtin.is_some() && knows_jobs => {
            config.insert("jobs".into(), value.clone());
            stages::source_jobs(&source_stage.options)
        }
        _ => stages::source_jobs(&config),
    };
    let grants = StageGrants {
        secrets: secrets.into(),
        ..grants
    };
    let mut source = SourceInstance::start(
        &ctx.engine,
        &source_plugin,
        &source_stage.label(),
        &serde_json::Value::Object(config).to_string(),
        grants,
        &source_stage.limits,
    )
    .await?;
    let options = RestoreOptions {
        target,
        only: request.only.clone(),
        mode: request.mode,
        dry_run: request.dry_run,
        overwrite: request.overwrite,
    };
    let session = source.begin_restore(&options).await?;
    let pool = Pool::start(&ctx.engine, &chain, workers::default_size()).await?;

    ctx.events.emit(Event::Start {
        command: "restore",
        pipeline: ctx.pipeline.name.clone(),
        snapshot: Some(manifest.snapshot.clone()),
    });
    ctx.events.emit(Event::Listed {
        artifacts: selected.len(),
        bytes_hint: Some(selected.iter().map(|a| a.size).sum()),
    });
    let written = write_artifacts(
        &mut source,
        &session,
        &pool,
        &manifest.snapshot,
        &selected,
        jobs,
        &ctx.events,
    )
    .await;
    pool.finish().await;
    let bytes = match written {
        Ok(bytes) => bytes,
        Err(e) => {
            // Nothing reaches the target: staging goes away.
            let _ = source.abort(session).await;
            return Err(e);
        }
    };
    let reports = source.commit(session).await?;
    Ok(RestoreSummary {
        snapshot: manifest.snapshot.clone(),
        artifacts: selected.iter().map(|a| a.name.clone()).collect(),
        bytes,
        reports,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Artifact metadata a source sets on artifacts that may be written at the same time as
/// each other once the artifact it names is written (PostgreSQL's tables, after `schema`).
pub const PARALLEL_AFTER: &str = "parallel_after";

/// Writes the selected artifacts, in order, to the restore session; returns the bytes
/// written. An artifact marked `parallel_after` an artifact already written joins the
/// run of such artifacts written at once, up to `jobs` (`pg_restore -j`: tables load on
/// their own connections after the schema); every other artifact is written alone.
async fn write_artifacts(
    source: &mut SourceInstance,
    session: &RestoreSession,
    pool: &Pool,
    snapshot: &str,
    selected: &[&ArtifactRecord],
    jobs: usize,
    events: &Events,
) -> Result<u64, RunError> {
    let mut bytes = 0u64;
    let mut written: HashSet<&str> = HashSet::new();
    let started = |artifact: &ArtifactRecord| {
        events.emit(Event::ArtifactStart {
            artifact: artifact.name.clone(),
            size_hint: Some(artifact.size),
        })
    };
    let done = |artifact: &ArtifactRecord| {
        events.emit(Event::ArtifactDone {
            artifact: artifact.name.clone(),
            bytes: artifact.size,
            stored: artifact.objects.iter().map(|o| o.stored().bytes).sum(),
            objects: artifact.objects.len(),
            incomplete: None,
        })
    };
    let mut at = 0;
    while at < selected.len() {
        let parallel = |a: &ArtifactRecord| {
            jobs > 1
                && a.metadata
                    .get(PARALLEL_AFTER)
                    .is_some_and(|after| written.contains(after.as_str()))
        };
        let run = selected[at..].iter().take_while(|a| parallel(a)).count();
        if run > 1 {
            let batch = &selected[at..at + run];
            batch.iter().for_each(|a| started(a));
            bytes += write_at_once(source, session, pool, snapshot, batch, jobs).await?;
            batch.iter().for_each(|a| done(a));
            written.extend(batch.iter().map(|a| a.name.as_str()));
            at += run;
            continue;
        }
        let artifact = selected[at];
        started(artifact);
        let writer = source
            .write_artifact(session, &wit_artifact(artifact))
            .await?;
        let mut artifact_bytes = 0u64;
        decode_artifact(pool, snapshot, artifact, async |chunk: Vec<u8>| {
            bytes += chunk.len() as u64;
            artifact_bytes += chunk.len() as u64;
            events.emit(Event::Progress {
                artifact: artifact.name.clone(),
                bytes: artifact_bytes,
                total_bytes: bytes,
            });
            source.write(&writer, chunk).await.map_err(RunError::from)
        })
        .await?;
        source.finish_write(writer).await?;
        done(artifact);
        written.insert(&artifact.name);
        at += 1;
    }
    Ok(bytes)
}

/// What a decoding artifact sends to the one task that talks to the source instance.
enum Decoded {
    Chunk(usize, Vec<u8>),
    End(usize),
}

/// Writes `batch` with up to `jobs` artifacts open at once: each is decoded on the pool
/// by its own task, and their chunks, in order per artifact, go to this task, which
/// alone calls the source (one instance, one call at a time). Each open artifact holds
/// one decode window, so memory grows with `jobs`, not with artifact sizes.
async fn write_at_once(
    source: &mut SourceInstance,
    session: &RestoreSession,
    pool: &Pool,
    snapshot: &str,
    batch: &[&ArtifactRecord],
    jobs: usize,
) -> Result<u64, RunError> {
    use futures::StreamExt;
    use futures::stream::FuturesUnordered;

    let (sender, mut received) = mpsc::channel::<Decoded>(jobs * 2);
    let mut decoding = FuturesUnordered::new();
    let mut writers = HashMap::new();
    let (mut next, mut open, mut bytes) = (0, 0, 0u64);
    tracing::info!(
        artifacts = batch.len(),
        jobs,
        "writing artifacts in parallel"
    );
    loop {
        while open < jobs && next < batch.len() {
            let artifact = batch[next];
            let writer = source
                .write_artifact(session, &wit_artifact(artifact))
                .await?;
            writers.insert(next, writer);
            let sender = sender.clone();
            let index = next;
            decoding.push(async move {
                decode_objects(pool, snapshot, artifact, true, async |chunk: Vec<u8>| {
                    sender
                        .send(Decoded::Chunk(index, chunk))
                        .await
                        .map_err(|_| RunError::Failed("the restore stopped".into()))
                })
                .await?;
                sender
                    .send(Decoded::End(index))
                    .await
                    .map_err(|_| RunError::Failed("the restore stopped".into()))
            });
            next += 1;
            open += 1;
        }
        if open == 0 {
            return Ok(bytes);
        }
        tokio::select! {
            Some(message) = received.recv() => match message {
                Decoded::Chunk(index, chunk) => {
                    bytes += chunk.len() as u64;
                    source.write(&writers[&index], chunk).await?;
                }
                Decoded::End(index) => {
                    let writer = writers.remove(&index).expect("an open writer");
                    source.finish_write(writer).await?;
                    open -= 1;
                }
            },
            Some(decoded) = decoding.next() => decoded?,
        }
    }
}

/// The artifacts `--only` selects: a glob matching an artifact's name, or reaching inside
/// it (`name/…`), selects it. No globs: all.
pub fn select_artifacts<'m>(
    manifest: &'m Manifest,
    only: &[String],
) -> Result<Vec<&'m ArtifactRecord>, RunError> {
    if only.is_empty() {
        return Ok(manifest.artifacts.iter().collect());
    }
    let globs = glob_set(only)?;
    let selected: Vec<&ArtifactRecord> = manifest
        .artifacts
        .iter()
        .filter(|a| {
            globs.is_match(&a.name)
                || only.iter().any(|g| {
                    g.strip_prefix(a.name.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
                })
        })
        .collect();
    if selected.is_empty() {
        let names: Vec<&str> = manifest.artifacts.iter().map(|a| a.name.as_str()).collect();
        return Err(RunError::Usage(format!(
            "--only {} matches no artifact of snapshot {} (artifacts: {})",
            only.join(" "),
            &manifest.snapshot[..8],
            names.join(", ")
        )));
    }
    Ok(selected)
}

fn glob_set(patterns: &[String]) -> Result<GlobSet, RunError> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        builder.add(
            Glob::new(pattern).map_err(|e| RunError::Usage(format!("--only {pattern:?}: {e}")))?,
        );
    }
    builder.build().map_err(|e| RunError::Usage(e.to_string()))
}

fn wit_artifact(record: &ArtifactRecord) -> Artifact {
    Artifact {
        name: record.name.clone(),
        media_type: record.media_type.clone(),
        // The recorded size is exact: the restore can show progress against it.
        size: Some(SizeEstimate {
            amount: record.size,
            unit: BYTES.into(),
            exact: true,
        }),
        schema_version: record.schema_version,
        metadata: record.metadata.clone().into_iter().collect(),
    }
}

/// The snapshot's own stage component of `kind` (the first), loaded from the repository.
pub async fn recorded_component(
    ctx: &Context,
    repository: &mut Repository,
    manifest: &Manifest,
    kind: StageKind,
) -> Result<(StageInfo, LoadedPlugin), RunError> {
    let info = manifest
        .stages
        .iter()
        .find(|s| s.kind == kind.to_string())
        .ok_or_else(|| {
            RunError::Failed(format!(
                "snapshot {} records no {kind} stage",
                manifest.snapshot
            ))
        })?;
    Ok((info.clone(), load_recorded(ctx, repository, info).await?))
}

async fn load_recorded(
    ctx: &Context,
    repository: &mut Repository,
    info: &StageInfo,
) -> Result<LoadedPlugin, RunError> {
    let wasm = repository.load_component(&info.wasm_sha256).await?;
    Ok(ctx.engine.load(&info.plugin, &wasm)?)
}

/// The transforms recorded in the snapshot (with their recorded configuration) and the
/// pipeline's sink: the chain that reads this snapshot back.
pub async fn recorded_chain(
    ctx: &Context,
    repository: &mut Repository,
    manifest: &Manifest,
) -> Result<ChainSpec, RunError> {
    let mut transforms = Vec::new();
    let recorded: Vec<&StageInfo> = manifest
        .stages
        .iter()
        .filter(|s| s.kind == "transform")
        .collect();
    for (i, info) in recorded.into_iter().enumerate() {
        let plugin = load_recorded(ctx, repository, info).await?;
        let builtin = crate::plugins::builtin(StageKind::Transform, &info.plugin).map(|b| b.name);
        let grants = stages::builtin_grants(
            StageKind::Transform,
            builtin,
            &info.config,
            &crate::config::Grants {
                keys: info.keys.clone(),
                ..Default::default()
            },
            ctx.pipeline.base_dir(),
            Purpose::Backup,
            repository.keys(),
        )
        .map_err(|m| {
            RunError::Failed(format!(
                "recorded transform #{} ({}): {m}",
                i + 1,
                info.plugin
            ))
        })?;
        let label = format!("transform #{} ({})", i + 1, info.plugin);
        let (config, secrets) =
            stages::resolve_recorded(&label, &info.config, ctx.pipeline.base_dir(), &ctx.secrets)
                .map_err(RunError::Usage)?;
        let grants = StageGrants {
            secrets: secrets.into(),
            ..grants
        };
        transforms.push(StageSpec {
            plugin,
            label,
            config_json: serde_json::Value::Object(config).to_string(),
            grants,
            limits: Default::default(),
        });
    }
    Ok(ChainSpec {
        transforms,
        sink: ctx.sink_spec()?,
        read_back_writes: false,
    })
}

/// Decodes an artifact's objects in parallel and hands their bytes, in order, to `each`.
pub async fn decode_artifact(
    pool: &Pool,
    snapshot: &str,
    artifact: &ArtifactRecord,
    each: impl AsyncFnMut(Vec<u8>) -> Result<(), RunError>,
) -> Result<(), RunError> {
    decode_objects(pool, snapshot, artifact, false, each).await
}

/// `decode_artifact`; `shared`: other artifacts decode on the same pool at the same time.
/// Then this one waits for a free worker only when it has no object in flight: waiting
/// while its decoded objects sit unread could leave every worker blocked on output no
/// one reads (its own later objects) while the job that would free them (another
/// artifact's) waits in the queue.
async fn decode_objects(
    pool: &Pool,
    snapshot: &str,
    artifact: &ArtifactRecord,
    shared: bool,
    mut each: impl AsyncFnMut(Vec<u8>) -> Result<(), RunError>,
) -> Result<(), RunError> {
    // One object per worker plus one queued: enough to keep every core busy, never more
    // (a deeper window could block a worker on output nobody reads yet).
    let window = workers::default_size() + 1;
    // Alone on the pool, an object decodes whole while the ones before it are written (a
    // stage never gives more than the manifest recorded, so at most `window` objects wait
    // in memory); 4 chunks only kept one core decoding. The queue counts pieces, which
    // decoders may make smaller than CHUNK: room for a whole object of quarter-size pieces.
    // Shared, each artifact keeps a short queue: several are open at once.
    let depth = if shared {
        4
    } else {
        4 * OBJECT_SIZE / CHUNK as usize
    };
    let mut in_flight: VecDeque<(
        mpsc::Receiver<Vec<u8>>,
        oneshot::Receiver<Result<(), ChainError>>,
    )> = VecDeque::new();
    let mut objects = artifact.objects.iter();
    // A job the pool had no room for, with its receivers, submitted next time round.
    let mut waiting = None;
    loop {
        while in_flight.len() < window {
            let (job, received, result) = match waiting.take() {
                Some(held) => held,
                None => {
                    let Some(record) = objects.next() else { break };
                    let (out, received) = mpsc::channel(depth);
                    let (done, result) = oneshot::channel();
                    let job = Job::Decode {
                        artifact: artifact.name.clone(),
                        record: record.clone(),
                        out,
                        done,
                    };
                    (job, received, result)
                }
            };
            if shared && !in_flight.is_empty() {
                if let Err(job) = pool.try_submit(job) {
                    // Read what is in flight first.
                    waiting = Some((job, received, result));
                    break;
                }
            } else {
                pool.submit(job).await;
            }
            in_flight.push_back((received, result));
        }
        let Some((mut received, result)) = in_flight.pop_front() else {
            return Ok(());
        };
        let mut delivered = Ok(());
        while let Some(chunk) = received.recv().await {
            if delivered.is_ok() {
                delivered = each(chunk).await;
            }
        }
        workers::outcome(result, snapshot).await?;
        delivered?;
    }
}
