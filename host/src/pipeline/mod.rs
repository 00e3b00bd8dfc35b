//! Running a pipeline: its stages, backup forward, restore backward, verify.

pub mod backup;
pub mod chain;
pub mod elasticsearch;
pub mod events;
pub mod failpoint;
pub mod hooks;
pub mod job;
pub mod probe;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod selection;
pub mod stages;
pub mod verify;
mod workers;

use crate::config::{ConfigError, KeySource, Pipeline, Secret, SecretResolver};
use crate::engine::{Engine, PluginError};
use crate::repository::lock::{LockError, LockGuard, LockKind, LockRequest};
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
    #[error(transparent)]
    Hook(#[from] hooks::HookError),
    #[error("interrupted: the run was aborted; no snapshot was committed")]
    Interrupted,
    /// The sink failed with a connection error (refused, name resolution, timeouts)
    /// after every retry.
    #[error("the sink is unreachable: {0}")]
    SinkUnreachable(#[source] Box<RunError>),
    #[error("{0}")]
    Failed(String),
    /// The repository is locked by another command, or this command lost its lock.
    #[error(transparent)]
    Lock(LockError),
}

impl From<LockError> for RunError {
    fn from(e: LockError) -> Self {
        match e {
            LockError::Sink(e) => RunError::Plugin(e),
            LockError::Repository(e) => RunError::Repository(e),
            other => RunError::Lock(other),
        }
    }
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
    /// Where progress goes (bars, `--json` lines, nowhere).
    pub events: events::Events,
    /// How long [`Context::lock`] waits for a conflicting lock (`--lock-wait`); zero: fail at once.
    pub lock_wait: std::time::Duration,
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
            events: events::Events::default(),
            lock_wait: std::time::Duration::ZERO,
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

    /// Whether the sink's last request could not reach it (remote sinks), so a failure
    /// reads "unreachable" rather than a generic one.
    pub fn sink_unreachable(&self) -> bool {
        self.sink
            .get()
            .and_then(|spec| spec.grants.storage.as_ref())
            .is_some_and(|storage| storage.unreachable())
    }

    /// A name for the sink that carries no secret: a digest of its type and options as
    /// written (secret references, not values). Keys the local history cache.
    pub fn sink_identity(&self) -> String {
        let sink = &self.pipeline.sink;
        let text = format!(
            "{}\0{:?}\0{}",
            self.pipeline.base_dir().display(),
            sink.plugin,
            serde_json::Value::Object(sink.redacted_options())
        );
        hex::encode(&crate::plugins::sha256(text.as_bytes())[..8])
    }

    /// Opens the pipeline's repository (creating it when `create`), checking the key.
    pub async fn open_repository(&self, create: bool) -> Result<Repository, RunError> {
        let passphrase = self.passphrase()?;
        let instance = self.start_sink(&self.sink_spec()?).await?;
        Ok(Repository::open(instance, passphrase.as_ref(), create).await?)
    }

    /// Locks `repository` for `command` (waiting up to `lock_wait` while another holder
    /// conflicts); the lock is refreshed in the background until released.
    pub async fn lock(
        &self,
        repository: &Repository,
        kind: LockKind,
        command: &str,
    ) -> Result<LockGuard, RunError> {
        // An instance of its own: the refresh task uses it while the command works.
        let sink = self.start_sink(&self.sink_spec()?).await?;
        let request = LockRequest {
            kind,
            command: command.to_string(),
            pipeline: self.pipeline.name.clone(),
            wait: self.lock_wait,
            stale_after: self.pipeline.repository.lock_stale_after,
        };
        let guard = LockGuard::acquire(sink, repository.lock_seal(), request).await?;
        failpoint::pause("locked").await;
        Ok(guard)
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
