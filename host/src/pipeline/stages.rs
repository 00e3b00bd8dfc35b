//! From a validated stage to a running plugin: which component, what it is granted, and
//! its options checked by the plugin itself (errors pointed at the pipeline file).

use crate::capabilities::StageGrants;
use crate::config::{ConfigError, PluginRef, SecretResolver, StageConfig, StageKind};
use crate::engine::bindings::{ConfigError as PluginConfigError, PluginErrorKind};
use crate::engine::{Engine, LoadedPlugin, PluginError, SinkInstance, SourceInstance, TransformInstance};
use crate::plugins;

/// The component a stage runs: a built-in, or a file checked against its pinned digest.
pub fn load_plugin(engine: &Engine, stage: &StageConfig) -> Result<LoadedPlugin, ConfigError> {
    let at = |message: String| ConfigError::new(stage.location.clone(), message);
    let loaded = match &stage.plugin {
        PluginRef::Builtin(name) => {
            let builtin = plugins::builtin(stage.kind, name)
                .ok_or_else(|| at(format!("no built-in {} plugin named {name:?}", stage.kind)))?;
            engine.load(name, builtin.wasm).map_err(|e| at(e.to_string()))?
        }
        PluginRef::Path { path, sha256 } => {
            let wasm = std::fs::read(path).map_err(|e| at(format!("cannot read plugin {}: {e}", path.display())))?;
            let digest = plugins::sha256(&wasm);
            if let Some(pinned) = sha256
                && *pinned != digest
            {
                return Err(at(format!(
                    "plugin {} has sha256 {}, but the pipeline pins {}; refusing to run it",
                    path.display(),
                    hex::encode(digest),
                    hex::encode(pinned)
                )));
            }
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            engine.load(&name, &wasm).map_err(|e| at(e.to_string()))?
        }
    };
    if loaded.shape.kind != stage.kind {
        return Err(at(format!(
            "{} is a {} plugin, but it is used as the {}",
            loaded.name, loaded.shape.kind, stage.kind
        )));
    }
    Ok(loaded)
}

/// A started plugin of any kind.
pub enum StageInstance {
    Source(SourceInstance),
    Transform(TransformInstance),
    Sink(SinkInstance),
}

/// Instantiates a stage's plugin and configures it with its resolved options. A
/// configuration error from the plugin points at the offending option in the file.
pub async fn start(
    engine: &Engine,
    stage: &StageConfig,
    plugin: &LoadedPlugin,
    grants: StageGrants,
    secrets: &SecretResolver,
) -> Result<StageInstance, StageError> {
    let options = stage.resolved_options(secrets)?;
    let config = serde_json::Value::Object(options).to_string();
    let label = stage.label();
    let started = match stage.kind {
        StageKind::Source => SourceInstance::start(engine, plugin, &label, &config, grants, &stage.limits)
            .await
            .map(StageInstance::Source),
        StageKind::Transform => TransformInstance::start(engine, plugin, &label, &config, grants, &stage.limits)
            .await
            .map(StageInstance::Transform),
        StageKind::Sink => SinkInstance::start(engine, plugin, &label, &config, grants, &stage.limits)
            .await
            .map(StageInstance::Sink),
    };
    started.map_err(|e| locate(stage, e))
}

/// Why a stage could not start.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// A plugin's configuration error becomes a located config error; anything else stays a plugin error.
fn locate(stage: &StageConfig, error: PluginError) -> StageError {
    match error {
        PluginError::Plugin {
            error: PluginErrorKind::Config(PluginConfigError { field, message }),
            ..
        } => {
            let (location, message) = match field {
                Some(field) => (stage.option_location(&field), format!("{}: `{field}`: {message}", stage.label())),
                None => (stage.location.clone(), format!("{}: {message}", stage.label())),
            };
            StageError::Config(ConfigError::new(location, message))
        }
        PluginError::Plugin { error, .. } => {
            StageError::Config(ConfigError::new(stage.location.clone(), format!("{}: {}", stage.label(), crate::engine::bindings::describe(&error))))
        }
        other => StageError::Plugin(other),
    }
}
