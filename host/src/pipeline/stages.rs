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
    let options = plugin_options(stage, secrets)?;
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
    /// Restoring into `target` (a directory for the files source); `dry_run` creates nothing;
    /// `in_place` (no target) writes back where the backup came from, for sources that can.
    Restore {
        target: Option<std::path::PathBuf>,
        dry_run: bool,
        in_place: bool,
    },
}

/// The grants a stage runs with: what its table grants explicitly, plus what a built-in
/// plugin's own options imply (the files source may read its `paths`; the aes-gcm
/// transform may use the repository's data key). A storage sink's storage is opened by
/// [`crate::sinks::open_storage`].
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
    use crate::capabilities::KeyRing;
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
                ..
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
        (StageKind::Source, Some("sqlite")) => {
            sqlite_grants(&mut grants, options, base_dir, purpose)?;
        }
        (StageKind::Source, Some("postgres")) => {
            // TCP to the database server only: the url's address, or a restore target URL's.
            let url = options
                .get("url")
                .and_then(|v| v.as_str())
                .ok_or("the postgres source needs `url`")?;
            let target_url = match &purpose {
                Purpose::Restore {
                    target: Some(target),
                    ..
                } => target
                    .to_str()
                    .filter(|t| t.starts_with("postgres://") || t.starts_with("postgresql://")),
                _ => None,
            };
            grants
                .grants
                .tcp
                .push(postgres_address(target_url.unwrap_or(url))?);
        }
        (StageKind::Source, Some("elasticsearch")) => {
            let access = crate::pipeline::elasticsearch::access(options, base_dir)?;
            grants.grants.http.push(access.origin);
            grants.http_headers.extend(access.authorization);
            grants.http_trusted.extend(access.trusted);
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

/// The options a stage's plugin receives: secret references resolved, except the
/// credentials a built-in leaves to the host — a storage sink's (the plugin sees the
/// references as written) and the elasticsearch source's auth.
fn plugin_options(
    stage: &StageConfig,
    secrets: &SecretResolver,
) -> Result<serde_json::Map<String, serde_json::Value>, ConfigError> {
    if crate::sinks::host_opens_storage(stage) {
        return Ok(stage.redacted_options());
    }
    let mut options = stage.resolved_options(secrets)?;
    if stage.kind == StageKind::Source
        && matches!(&stage.plugin, PluginRef::Builtin(name) if name == "elasticsearch")
    {
        crate::pipeline::elasticsearch::withhold(&stage.options, &mut options);
    }
    Ok(options)
}

/// The sqlite source: backup reads the directories of its `paths` (the literal part
/// before any glob) and gets a scratch directory for the host's snapshot copies, granted
/// last; restore writes to the `--target` directory (or a file's directory), or with
/// `--in-place` to the directories of its `paths`. The plugin pairs `paths` with the
/// granted roots by position, so one grant is pushed per entry, in order.
fn sqlite_grants(
    grants: &mut StageGrants,
    options: &serde_json::Map<String, serde_json::Value>,
    base_dir: &std::path::Path,
    purpose: Purpose,
) -> Result<(), String> {
    use crate::config::{DirAccess, DirGrant};
    let entries: Vec<&str> = match options.get("paths") {
        Some(serde_json::Value::Array(items)) => items.iter().filter_map(|v| v.as_str()).collect(),
        Some(serde_json::Value::String(one)) => vec![one.as_str()],
        _ => Vec::new(),
    };
    let directories = |access: DirAccess| -> Result<Vec<DirGrant>, String> {
        entries
            .iter()
            .map(|entry| {
                let dir = base_dir.join(sqlite_literal_dir(entry));
                let path = dir.canonicalize().map_err(|e| {
                    format!("`paths` entry {entry:?}: directory {}: {e}", dir.display())
                })?;
                Ok(DirGrant { path, access })
            })
            .collect()
    };
    match purpose {
        Purpose::Backup => {
            grants.grants.dirs.extend(directories(DirAccess::Read)?);
            let parent = match options.get("scratch_dir") {
                Some(serde_json::Value::String(dir)) => Some(base_dir.join(dir)),
                _ => None,
            };
            let scratch = crate::capabilities::sqlite::Scratch::create(parent.as_deref())
                .map_err(|e| format!("cannot create a scratch directory for snapshots: {e}"))?;
            grants.grants.dirs.push(DirGrant {
                path: scratch.path().to_path_buf(),
                access: DirAccess::Read,
            });
            grants.sqlite_scratch = Some(scratch);
        }
        Purpose::Restore {
            target: Some(_),
            in_place: true,
            ..
        } => return Err("--in-place and --target exclude each other".into()),
        Purpose::Restore {
            target: Some(target),
            dry_run,
            ..
        } => {
            let dir = if sqlite_target_is_dir(&target) {
                target.clone()
            } else {
                // A bare file name is in the working directory.
                match target.parent() {
                    Some(parent) if parent.as_os_str().is_empty() => ".".into(),
                    Some(parent) => parent.to_path_buf(),
                    None => {
                        return Err(format!("restore target {} names no file", target.display()));
                    }
                }
            };
            if !dir.exists() {
                if dry_run {
                    return Err(format!(
                        "the directory {} of the restore target does not exist (a dry run creates nothing)",
                        dir.display()
                    ));
                }
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let path = dir
                .canonicalize()
                .map_err(|e| format!("restore target {}: {e}", dir.display()))?;
            grants.grants.dirs.push(DirGrant {
                path,
                access: DirAccess::ReadWrite,
            });
        }
        Purpose::Restore {
            target: None,
            in_place: false,
            ..
        } => {
            return Err("restoring SQLite databases needs --target PATH (a file, or a directory for several databases), or --in-place to write them back where they were backed up".into());
        }
        Purpose::Restore {
            target: None,
            in_place: true,
            ..
        } => {
            grants
                .grants
                .dirs
                .extend(directories(DirAccess::ReadWrite)?);
        }
    }
    Ok(())
}

/// The directory part of a sqlite `paths` entry: the components before the first one
/// holding a glob character, or the file's directory (`.` when none). The plugin splits
/// entries the same way.
fn sqlite_literal_dir(entry: &str) -> std::path::PathBuf {
    let components: Vec<&str> = entry.split('/').collect();
    let literal = components
        .iter()
        .position(|c| c.contains(['*', '?', '[', '{']))
        .unwrap_or(components.len() - 1);
    let dir = components[..literal].join("/");
    match dir.as_str() {
        "" if entry.starts_with('/') => "/".into(),
        "" => ".".into(),
        _ => dir.into(),
    }
}

/// A sqlite restore target is a directory when it is one or ends in `/`; else a file.
fn sqlite_target_is_dir(target: &std::path::Path) -> bool {
    target.is_dir() || target.as_os_str().as_encoded_bytes().ends_with(b"/")
}

/// The target a source's restore session is told: the directory the target was granted
/// as (canonical, the plugin's name for it) — for the sqlite source naming a file, that
/// file in it, and with `--in-place` none.
pub fn restore_target(
    builtin: Option<&str>,
    grants: &StageGrants,
    requested: Option<&std::path::Path>,
) -> Option<String> {
    let granted = grants.grants.dirs.last().map(|d| d.path.clone());
    let path = match (builtin, granted, requested) {
        (Some("sqlite"), _, None) => return None,
        (Some("sqlite"), Some(dir), Some(file)) if !sqlite_target_is_dir(file) => {
            dir.join(file.file_name()?)
        }
        (_, Some(dir), _) => dir,
        (_, None, requested) => requested?.to_path_buf(),
    };
    Some(path.display().to_string())
}

/// The server address of a `postgres://user@host[:port]/db` URL (port 5432 by default).
fn postgres_address(url: &str) -> Result<crate::config::TcpGrant, String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| format!("{url:?} is not a postgres://user@host:port/database URL"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let with_port = if host_port.ends_with(']') || !host_port.contains(':') {
        format!("{host_port}:5432")
    } else {
        host_port.to_string()
    };
    crate::config::TcpGrant::parse(&with_port)
        .map_err(|e| format!("postgres URL {with_port:?}: {e}"))
}

/// How many artifacts the host reads (backup) or writes (restore) at once, from a source
/// stage's `jobs` option: `DEFAULT_SOURCE_JOBS` when absent. Only sources that can share
/// their view (a share token) are read in parallel, and only artifacts the source marks
/// `parallel_after` are written in parallel; the plugin validates the value itself.
pub fn source_jobs(options: &serde_json::Map<String, serde_json::Value>) -> usize {
    options
        .get("jobs")
        .and_then(serde_json::Value::as_u64)
        .map_or(DEFAULT_SOURCE_JOBS, |jobs| {
            jobs.clamp(1, MAX_SOURCE_JOBS) as usize
        })
}

/// `jobs` of a source that does not say: two at once, like `pg_dump -j 2`.
pub const DEFAULT_SOURCE_JOBS: usize = 2;
const MAX_SOURCE_JOBS: u64 = 64;

/// How to start a stage, with its options resolved for the plugin.
pub fn spec(
    stage: &StageConfig,
    plugin: LoadedPlugin,
    grants: StageGrants,
    secrets: &SecretResolver,
) -> Result<crate::pipeline::chain::StageSpec, crate::pipeline::RunError> {
    let options = plugin_options(stage, secrets)?;
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
