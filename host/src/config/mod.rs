//! Pipeline files: TOML read into spanned raw tables, validated into typed stages, every error with file:line:col.

mod error;
mod grants;
mod hooks;
mod limits;
mod location;
mod monitor;
mod raw;
mod retention;
mod schedule;
mod secret;
mod stage;
mod units;
mod validate;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use error::{ConfigError, ConfigErrors};
pub use grants::{DirAccess, DirGrant, GrantError, Grants, HttpGrant, TcpGrant};
pub use hooks::{HookPoint, HooksConfig, OnHookError};
pub use limits::Limits;
pub use location::Location;
pub use monitor::{MonitorConfig, NotifyConfig, NotifyOn, NotifyTarget};
pub use retention::Retention;
pub use schedule::{MissedRuns, Schedule};
pub use secret::{Secret, SecretRef, SecretResolver, SecretValueRef};
pub use stage::{PluginRef, StageConfig, StageKind};
pub use units::{
    CalendarSpan, UnitError, parse_calendar_span, parse_duration, parse_size, parse_time,
};

use location::SourceFile;

/// The plugins the runner embeds, so validation can reject an unknown `type` and list the known ones.
pub trait PluginCatalog {
    fn builtin_names(&self, kind: StageKind) -> Vec<String>;
}

/// Where the repository key comes from; `None` in `RepositoryConfig` means no encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Passphrase(SecretValueRef),
    /// A key file, resolved against the pipeline file's directory.
    KeyFile(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryConfig {
    pub key: Option<KeySource>,
    /// `lock_stale_after`: a lock not refreshed for this long is stale.
    pub lock_stale_after: std::time::Duration,
}

impl Default for RepositoryConfig {
    fn default() -> Self {
        RepositoryConfig {
            key: None,
            lock_stale_after: crate::repository::lock::DEFAULT_STALE_AFTER,
        }
    }
}

/// A validated pipeline: one source, transforms in order, one sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// `[pipeline] name`, or the file stem.
    pub name: String,
    /// `[pipeline] schedule`: when `runner daemon` runs it; `None`: only on demand.
    pub schedule: Option<Schedule>,
    /// The file as given (relative paths stay relative, for messages).
    pub path: PathBuf,
    pub repository: RepositoryConfig,
    /// `[retention]`: which snapshots `runner prune` keeps; `None` when the file has no table.
    pub retention: Option<Retention>,
    /// Commands the host runs around `runner run`.
    pub hooks: HooksConfig,
    /// Staleness, size warning, metrics file.
    pub monitor: MonitorConfig,
    /// Who hears about failures, successes and staleness.
    pub notify: Vec<NotifyConfig>,
    pub source: StageConfig,
    pub transforms: Vec<StageConfig>,
    pub sink: StageConfig,
    base_dir: PathBuf,
}

impl Pipeline {
    /// Reads and validates a pipeline file.
    pub fn load(path: impl AsRef<Path>, catalog: &dyn PluginCatalog) -> Result<Self, ConfigErrors> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                Location::whole_file(path),
                format!("cannot read pipeline file: {e}"),
            )
        })?;
        Self::parse(&text, path, catalog)
    }

    /// Validates pipeline text; `path` names it in errors and anchors its relative paths.
    pub fn parse(
        text: &str,
        path: impl AsRef<Path>,
        catalog: &dyn PluginCatalog,
    ) -> Result<Self, ConfigErrors> {
        let path = path.as_ref();
        let src = SourceFile::new(path, text);
        let mut errors = Vec::new();
        let pipeline = raw::parse(&src, &mut errors)
            .and_then(|raw| validate::validate(raw, &src, path, catalog, &mut errors));
        match pipeline {
            Some(pipeline) if errors.is_empty() => Ok(pipeline),
            _ => Err(ConfigErrors::new(errors)),
        }
    }

    /// Source, transforms in order, sink.
    pub fn stages(&self) -> impl Iterator<Item = &StageConfig> {
        std::iter::once(&self.source)
            .chain(&self.transforms)
            .chain(std::iter::once(&self.sink))
    }

    /// The directory relative paths in the file were resolved against.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// Resolves every secret reference once, keeping no value, so `validate` can report a
    /// missing variable or unreadable file at the place it is referenced.
    pub fn check_secrets(&self, secrets: &SecretResolver) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if let Some(KeySource::Passphrase(passphrase)) = &self.repository.key {
            for (reference, location) in passphrase.references() {
                errors.extend(secrets.resolve(reference, location).err());
            }
        }
        for notify in &self.notify {
            if let NotifyTarget::Webhook { url } = &notify.target {
                for (reference, location) in url.references() {
                    errors.extend(secrets.resolve(reference, location).err());
                }
            }
        }
        for stage in self.stages() {
            stage.check_secrets(secrets, &mut errors);
        }
        errors.sort_by_key(|e| (e.location.line, e.location.column));
        errors
    }
}
