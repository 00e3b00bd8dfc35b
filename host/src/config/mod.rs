//! Pipeline files: TOML read into spanned raw tables, validated into typed stages, every error with file:line:col.

mod error;
mod grants;
mod limits;
mod location;
mod raw;
mod secret;
mod stage;
mod units;
mod validate;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use error::{ConfigError, ConfigErrors};
pub use grants::{DirAccess, DirGrant, GrantError, Grants, HttpGrant, TcpGrant};
pub use limits::Limits;
pub use location::Location;
pub use secret::{Secret, SecretRef, SecretResolver, SecretValueRef};
pub use stage::{PluginRef, StageConfig, StageKind};
pub use units::{UnitError, parse_duration, parse_size};

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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepositoryConfig {
    pub key: Option<KeySource>,
}

/// A validated pipeline: one source, transforms in order, one sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// `[pipeline] name`, or the file stem.
    pub name: String,
    /// The file as given (relative paths stay relative, for messages).
    pub path: PathBuf,
    pub repository: RepositoryConfig,
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
        for stage in self.stages() {
            stage.check_secrets(secrets, &mut errors);
        }
        errors.sort_by_key(|e| (e.location.line, e.location.column));
        errors
    }
}
