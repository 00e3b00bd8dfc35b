//! Running a pipeline: its stages, backup forward, restore backward, verify.

pub mod backup;
pub mod chain;
pub mod elasticsearch;
pub mod failpoint;
pub mod probe;
pub mod restore;
pub mod stages;
pub mod verify;
mod workers;

use crate::config::{ConfigError, KeySource, Pipeline, Secret, SecretResolver};
use crate::engine::{Engine, PluginError};
use crate::manifest::Manifest;
use crate::repository::{RepoError, Repository};
use chain::{ChainError, StageSpec};
use stages::StageError;

/// Bytes read from a source or handed to a restore session at once.
pub const CHUNK: u32 = 1 << 20;
/// Source bytes per stored object: bounded, so parallel encoding, resumable transfers,
/// sinks with object size limits and (later) deduplication all work on the same format.
pub const OBJECT_SIZE: usize = 16 << 20;

/// Source bytes per object for a sink that takes objects of at most `max_object_size`:
/// below the limit by a margin for what transforms add (zstd's worst case is +0.4%,
/// aes-gcm's 16 bytes per MiB plus a header), in whole chunks.
pub fn object_size(max_object_size: Option<u64>) -> usize {
    match max_object_size {
        None => OBJECT_SIZE,
        Some(max) => {
            let room = max.saturating_sub(max / 32 + (64 << 10)) as usize;
            // Whole chunks where the limit allows, so reads are not split needlessly.
            let size = if room >= CHUNK as usize {
                room / CHUNK as usize * CHUNK as usize
            } else {
                room
            };
            size.clamp(1, OBJECT_SIZE)
        }
    }
}

/// Why a run, restore or verify failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Repository(#[from] RepoError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("snapshot {snapshot}: {source}")]
    Chain {
        snapshot: String,
        source: ChainError,
    },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

impl From<StageError> for RunError {
    fn from(e: StageError) -> Self {
        match e {
            StageError::Config(e) => RunError::Config(e),
            StageError::Plugin(e) => RunError::Plugin(e),
        }
    }
}

/// What every command working on a pipeline's repository shares.
pub struct Context {
    pub engine: Engine,
    pub pipeline: Pipeline,
    /// Set before the first [`Context::sink_spec`]: the sink is prepared once with them.
    pub secrets: SecretResolver,
    /// The sink, prepared once: its plugin loaded and its storage (HTTP client, cached
    /// tokens) opened, shared by the repository and every worker of a command.
    sink: std::sync::OnceLock<StageSpec>,
}

impl Context {
    pub fn new(engine: Engine, pipeline: Pipeline) -> Self {
        Context {
            engine,
            pipeline,
            secrets: SecretResolver::from_process_env(),
            sink: std::sync::OnceLock::new(),
        }
    }

    /// The repository passphrase (or key file content), when the pipeline has a key.
    pub fn passphrase(&self) -> Result<Option<Secret>, RunError> {
        match &self.pipeline.repository.key {
            None => Ok(None),
            Some(KeySource::Passphrase(value)) => Ok(Some(value.resolve(&self.secrets)?)),
            Some(KeySource::KeyFile(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    RunError::Usage(format!("cannot read key file {}: {e}", path.display()))
                })?;
                let key = text.trim_end_matches(['\n', '\r']);
                if key.is_empty() {
                    return Err(RunError::Usage(format!(
                        "key file {} is empty",
                        path.display()
                    )));
                }
                Ok(Some(Secret::new(key.to_string())))
            }
        }
    }

    /// The sink stage as configured in the pipeline file.
    pub fn sink_spec(&self) -> Result<StageSpec, RunError> {
        if let Some(spec) = self.sink.get() {
            return Ok(spec.clone());
        }
        let spec = self.prepare_sink()?;
        Ok(self.sink.get_or_init(|| spec).clone())
    }

    fn prepare_sink(&self) -> Result<StageSpec, RunError> {
        let stage = &self.pipeline.sink;
        let plugin = stages::load_plugin(&self.engine, stage)?;
        let mut grants =
            stages::implied_grants(stage, &self.pipeline, stages::Purpose::Backup, None)?;
        grants.storage =
            crate::sinks::open_storage(stage, self.pipeline.base_dir(), &self.secrets)?;
        stages::spec(stage, plugin, grants, &self.secrets)
    }

    /// Opens the pipeline's repository (creating it when `create`), checking the key.
    pub async fn open_repository(&self, create: bool) -> Result<Repository, RunError> {
        let passphrase = self.passphrase()?;
        let instance = self.start_sink(&self.sink_spec()?).await?;
        Ok(Repository::open(instance, passphrase.as_ref(), create).await?)
    }

    /// Starts the sink stage; a configuration error points at its option in the file.
    pub async fn start_sink(
        &self,
        spec: &StageSpec,
    ) -> Result<crate::engine::SinkInstance, RunError> {
        crate::engine::SinkInstance::start(
            &self.engine,
            &spec.plugin,
            &spec.label,
            &spec.config_json,
            spec.grants.clone(),
            &spec.limits,
        )
        .await
        .map_err(|e| RunError::from(stages::locate(&self.pipeline.sink, e)))
    }
}

/// Picks a snapshot by unique id prefix, or the newest for `latest`/none.
pub async fn select_snapshot(
    repository: &mut Repository,
    wanted: Option<&str>,
) -> Result<Manifest, RunError> {
    let ids = repository.snapshot_ids().await?;
    match wanted {
        None | Some("latest") => {
            let manifests = repository.manifests().await?;
            manifests
                .into_iter()
                .last()
                .ok_or_else(|| RunError::Usage("the repository has no snapshots yet".into()))
        }
        Some(prefix) => {
            let matches: Vec<&String> = ids.iter().filter(|id| id.starts_with(prefix)).collect();
            match matches.as_slice() {
                [id] => Ok(repository.read_manifest(id).await?),
                [] => Err(RunError::Usage(format!(
                    "no snapshot id starts with {prefix:?}"
                ))),
                many => Err(RunError::Usage(format!(
                    "snapshot id prefix {prefix:?} is ambiguous; it matches {}",
                    many.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            }
        }
    }
}
