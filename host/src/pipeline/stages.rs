//! From a validated stage to a running plugin: which component, what it is granted, and
//! its options checked by the plugin itself (errors pointed at the pipeline file).

use crate::capabilities::StageGrants;
use crate::config::{ConfigError, PluginRef, SecretResolver, StageConfig, StageKind};
use crate::engine::bindings::{ConfigError as PluginConfigError, PluginErrorKind};
use crate::engine::{
    Engine, LoadedPlugin, PluginError, SinkInstance, SourceInstance, TransformInstance,
};
use crate::plugins;

/// The component a stage runs: a built-in, or a file checked against its pinned digest.
pub fn load_plugin(engine: &Engine, stage: &StageConfig) -> Result<LoadedPlugin, ConfigError> {
    let at = |message: String| ConfigError::new(stage.location.clone(), message);
    let loaded = match &stage.plugin {
        PluginRef::Builtin(name) => {
            let builtin = plugins::builtin(stage.kind, name)
                .ok_or_else(|| at(format!("no built-in {} plugin named {name:?}", stage.kind)))?;
            engine
                .load(name, builtin.wasm)
                .map_err(|e| at(e.to_string()))?
        }
        PluginRef::Path { path, sha256 } => {
            let wasm = std::fs::read(path)
                .map_err(|e| at(format!("cannot read plugin {}: {e}", path.display())))?;
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
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
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
    let grants = StageGrants {
        secrets: stage.resolved_secrets(secrets)?.into(),
        ..grants
    };
    let label = stage.label();
    let started = match stage.kind {
        StageKind::Source => {
            SourceInstance::start(engine, plugin, &label, &config, grants, &stage.limits)
                .await
                .map(StageInstance::Source)
        }
        StageKind::Transform => {
            TransformInstance::start(engine, plugin, &label, &config, grants, &stage.limits)
                .await
                .map(StageInstance::Transform)
        }
        StageKind::Sink => {
            SinkInstance::start(engine, plugin, &label, &config, grants, &stage.limits)
                .await
                .map(StageInstance::Sink)
        }
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
pub fn locate(stage: &StageConfig, error: PluginError) -> StageError {
    match error {
        PluginError::Plugin {
            error: PluginErrorKind::Config(PluginConfigError { field, message }),
            ..
        } => {
            let (location, message) = match field {
                Some(field) => (
                    stage.option_location(&field),
                    format!("{}: `{field}`: {message}", stage.label()),
                ),
                None => (
                    stage.location.clone(),
                    format!("{}: {message}", stage.label()),
                ),
            };
            StageError::Config(ConfigError::new(location, message))
        }
        PluginError::Plugin { error, .. } => StageError::Config(ConfigError::new(
            stage.location.clone(),
            format!(
                "{}: {}",
                stage.label(),
                crate::engine::bindings::describe(&error)
            ),
        )),
        other => StageError::Plugin(other),
    }
}

/// What a stage is started for: its implied grants differ.
#[derive(Clone, Debug)]
pub enum Purpose {
    Backup,
    /// Restoring into `target` (a directory for the files source); `dry_run` creates nothing.
    Restore {
        target: Option<std::path::PathBuf>,
        dry_run: bool,
    },
}

/// The grants a stage runs with: what its table grants explicitly, plus what a built-in
/// plugin's own options imply (the files source may read its `paths`; the local sink's
/// storage is its `path`; the aes-gcm transform may use the repository's data key).
/// A plugin loaded from a file gets only what is written.
pub fn implied_grants(
    stage: &StageConfig,
    pipeline: &crate::config::Pipeline,
    purpose: Purpose,
    keys: Option<&crate::repository::keys::RepoKeys>,
) -> Result<StageGrants, ConfigError> {
    let builtin = match &stage.plugin {
        PluginRef::Builtin(name) => Some(name.as_str()),
        PluginRef::Path { .. } => None,
    };
    builtin_grants(
        stage.kind,
        builtin,
        &stage.options,
        &stage.grants,
        pipeline.base_dir(),
        purpose,
        keys,
    )
    .map_err(|message| {
        ConfigError::new(
            stage.location.clone(),
            format!("{}: {message}", stage.label()),
        )
    })
}

/// [`implied_grants`] from parts, for stages recorded in a snapshot.
pub fn builtin_grants(
    kind: StageKind,
    builtin: Option<&str>,
    options: &serde_json::Map<String, serde_json::Value>,
    explicit: &crate::config::Grants,
    base_dir: &std::path::Path,
    purpose: Purpose,
    keys: Option<&crate::repository::keys::RepoKeys>,
) -> Result<StageGrants, String> {
    use crate::capabilities::{KeyRing, Storage};
    use crate::config::{DirAccess, DirGrant};
    let mut grants = StageGrants {
        grants: explicit.clone(),
        ..Default::default()
    };
    let path_option = |name: &str| -> Result<Vec<std::path::PathBuf>, String> {
        let values = match options.get(name) {
            None => Vec::new(),
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("`{name}` must hold strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(format!("`{name}` must be a string or a list of strings")),
        };
        Ok(values.iter().map(|v| base_dir.join(v)).collect())
    };
    match (kind, builtin) {
        (StageKind::Source, Some("files")) => match purpose {
            Purpose::Backup => {
                for path in path_option("paths")? {
                    let path = path
                        .canonicalize()
                        .map_err(|e| format!("cannot back up {}: {e}", path.display()))?;
                    grants.grants.dirs.push(DirGrant {
                        path,
                        access: DirAccess::Read,
                    });
                }
            }
            Purpose::Restore {
                target: Some(target),
                dry_run,
            } => {
                if !target.exists() {
                    if dry_run {
                        return Err(format!(
                            "the restore target {} does not exist (a dry run creates nothing)",
                            target.display()
                        ));
                    }
                    std::fs::create_dir_all(&target)
                        .map_err(|e| format!("cannot create {}: {e}", target.display()))?;
                }
                let path = target
                    .canonicalize()
                    .map_err(|e| format!("restore target {}: {e}", target.display()))?;
                grants.grants.dirs.push(DirGrant {
                    path,
                    access: DirAccess::ReadWrite,
                });
            }
            Purpose::Restore { target: None, .. } => {
                return Err("restoring files needs --target DIR".into());
            }
        },
        (StageKind::Sink, Some("local")) => {
            let path = path_option("path")?
                .into_iter()
                .next()
                .ok_or("the local sink needs `path`")?;
            grants.storage = Some(Storage::local(&path).map_err(|e| format!("{e:#}"))?);
        }
        _ if !explicit.keys.is_empty() => {
            // Keys written in the stage's grants (a third-party encrypting transform).
            let keys = keys.ok_or(
                "its grants name repository keys: set [repository] passphrase or key_file",
            )?;
            for name in &explicit.keys {
                if name == "data" {
                    grants.keys = std::mem::take(&mut grants.keys).with("data", keys.data.clone());
                }
            }
        }
        (StageKind::Transform, Some("aes-gcm")) => match keys {
            Some(keys) => grants.keys = KeyRing::default().with("data", keys.data.clone()),
            None => {
                return Err("aes-gcm encrypts with the repository key: set [repository] passphrase or key_file".into());
            }
        },
        _ => {}
    }
    Ok(grants)
}

/// How to start a stage, with its options resolved for the plugin.
pub fn spec(
    stage: &StageConfig,
    plugin: LoadedPlugin,
    grants: StageGrants,
    secrets: &SecretResolver,
) -> Result<crate::pipeline::chain::StageSpec, crate::pipeline::RunError> {
    let options = stage.resolved_options(secrets)?;
    let grants = StageGrants {
        secrets: stage.resolved_secrets(secrets)?.into(),
        ..grants
    };
    Ok(crate::pipeline::chain::StageSpec {
        plugin,
        label: stage.label(),
        config_json: serde_json::Value::Object(options).to_string(),
        grants,
        limits: stage.limits.clone(),
    })
}

/// A recorded stage's options (a manifest keeps secret references, never values) with the
/// references resolved again for the plugin, and their values, so they are scrubbed from
/// what the plugin logs or returns.
pub fn resolve_recorded(
    label: &str,
    options: &serde_json::Map<String, serde_json::Value>,
    base_dir: &std::path::Path,
    secrets: &SecretResolver,
) -> Result<
    (
        serde_json::Map<String, serde_json::Value>,
        Vec<crate::config::Secret>,
    ),
    String,
> {
    use serde_json::Value;
    fn walk(
        value: &mut Value,
        at: &crate::config::Location,
        base_dir: &std::path::Path,
        secrets: &SecretResolver,
        found: &mut Vec<crate::config::Secret>,
    ) -> Result<(), String> {
        match value {
            Value::String(text) if text.contains('$') => {
                let template =
                    crate::config::SecretValueRef::parse(text, base_dir, &|_| at.clone())
                        .map_err(|e| e.message)?;
                if template.needs_resolution() {
                    for (reference, location) in template.references() {
                        found.push(
                            secrets
                                .resolve(reference, location)
                                .map_err(|e| e.message)?,
                        );
                    }
                    *text = template
                        .resolve(secrets)
                        .map_err(|e| e.message)?
                        .expose()
                        .to_string();
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(item, at, base_dir, secrets, found)?;
                }
            }
            Value::Object(map) => {
                for item in map.values_mut() {
                    walk(item, at, base_dir, secrets, found)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
    let at = crate::config::Location::whole_file(format!("<{label} as recorded in the snapshot>"));
    let mut value = Value::Object(options.clone());
    let mut found = Vec::new();
    walk(&mut value, &at, base_dir, secrets, &mut found).map_err(|m| format!("{label}: {m}"))?;
    match value {
        Value::Object(map) => Ok((map, found)),
        _ => unreachable!("an object stays an object"),
    }
}
