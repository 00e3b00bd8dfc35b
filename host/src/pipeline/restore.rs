//! `runner restore`: the recorded chain run backwards. Objects come out of the sink through
//! the decoders, every stage boundary is checked against the manifest, the source stages
//! the artifacts, and commits only when everything matched.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Instant;

use globset::{Glob, GlobSet, GlobSetBuilder};
use tokio::sync::{mpsc, oneshot};

use crate::capabilities::StageGrants;
use crate::config::{PluginRef, StageKind};
use crate::engine::bindings::source::exports::runner::plugin::source::{
    Artifact, RestoreMode, RestoreOptions, RestoreReport,
};
use crate::engine::{LoadedPlugin, SourceInstance};
use crate::manifest::{ArtifactRecord, Manifest, StageInfo};
use crate::pipeline::chain::{ChainError, ChainSpec, StageSpec};
use crate::pipeline::stages::{self, Purpose};
use crate::pipeline::workers::{self, Job, Pool};
use crate::pipeline::{Context, RunError, select_snapshot};
use crate::repository::Repository;

pub struct RestoreRequest {
    pub snapshot: Option<String>,
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
    let manifest = select_snapshot(&mut repository, request.snapshot.as_deref()).await?;
    let selected = select_artifacts(&manifest, &request.only)?;

    let chain = recorded_chain(ctx, &mut repository, &manifest).await?;
    let (source_info, source_plugin) =
        recorded_component(ctx, &mut repository, &manifest, StageKind::Source).await?;
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

    let mut bytes = 0u64;
    let written = async {
        for artifact in &selected {
            let writer = source
                .write_artifact(&session, &wit_artifact(artifact))
                .await?;
            decode_artifact(
                &pool,
                &manifest.snapshot,
                artifact,
                async |chunk: Vec<u8>| {
                    bytes += chunk.len() as u64;
                    source.write(&writer, chunk).await.map_err(RunError::from)
                },
            )
            .await?;
            source.finish_write(writer).await?;
        }
        Ok::<_, RunError>(())
    }
    .await;
    pool.finish().await;
    if let Err(e) = written {
        // Nothing reaches the target: staging goes away.
        let _ = source.abort(session).await;
        return Err(e);
    }
    let reports = source.commit(session).await?;
    Ok(RestoreSummary {
        snapshot: manifest.snapshot.clone(),
        artifacts: selected.iter().map(|a| a.name.clone()).collect(),
        bytes,
        reports,
        seconds: started.elapsed().as_secs_f64(),
    })
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
        size_hint: Some(record.size),
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
    mut each: impl AsyncFnMut(Vec<u8>) -> Result<(), RunError>,
) -> Result<(), RunError> {
    // One object per worker plus one queued: enough to keep every core busy, never more
    // (a deeper window could block a worker on output nobody reads yet).
    let window = workers::default_size() + 1;
    let mut in_flight: VecDeque<(
        mpsc::Receiver<Vec<u8>>,
        oneshot::Receiver<Result<(), ChainError>>,
    )> = VecDeque::new();
    let mut objects = artifact.objects.iter();
    loop {
        while in_flight.len() < window {
            let Some(record) = objects.next() else { break };
            let (out, received) = mpsc::channel(4);
            let (done, result) = oneshot::channel();
            pool.submit(Job::Decode {
                artifact: artifact.name.clone(),
                record: record.clone(),
                out,
                done,
            })
            .await;
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
