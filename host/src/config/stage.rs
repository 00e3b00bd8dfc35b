//! One validated pipeline stage: which plugin, its options (with secret references and option locations), grants and limits.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde_json::{Map, Value};

use super::error::ConfigError;
use super::grants::Grants;
use super::limits::Limits;
use super::location::Location;
use super::secret::{SecretResolver, SecretValueRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StageKind {
    Source,
    Transform,
    Sink,
}

impl fmt::Display for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StageKind::Source => "source",
            StageKind::Transform => "transform",
            StageKind::Sink => "sink",
        })
    }
}

/// Which component runs a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginRef {
    /// A plugin embedded in the runner, by name (`type = "zstd"`).
    Builtin(String),
    /// A component file (`plugin = "plugins/my.wasm"`), resolved against the pipeline file's directory,
    /// optionally pinned to a sha256 digest.
    Path {
        path: PathBuf,
        sha256: Option<[u8; 32]>,
    },
}

/// One step of an option's position in the options tree: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OptionStep {
    Key(String),
    Index(usize),
}

/// Where each option is written, and which option strings hold secret references.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OptionIndex {
    /// Dotted path ("tls.ca", "paths.0") → location of its key (array items: of the item).
    pub(crate) locations: BTreeMap<String, Location>,
    /// Strings whose value differs from their text: references or `$${` escapes.
    pub(crate) secrets: Vec<(Vec<OptionStep>, SecretValueRef)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StageConfig {
    pub kind: StageKind,
    /// Position among the transforms (0 for the source and the sink).
    pub index: usize,
    pub plugin: PluginRef,
    /// The plugin's own keys, as written: strings with secret references keep the reference text.
    pub options: Map<String, Value>,
    pub grants: Grants,
    pub limits: Limits,
    /// The stage's table header.
    pub location: Location,
    pub(crate) option_index: OptionIndex,
}

impl StageConfig {
    /// "source (files)", "transform #2 (zstd)", "sink (my-sink.wasm)"; transforms are numbered from 1.
    pub fn label(&self) -> String {
        let name = match &self.plugin {
            PluginRef::Builtin(name) => name.clone(),
            PluginRef::Path { path, .. } => path
                .file_name()
                .unwrap_or(path.as_os_str())
                .to_string_lossy()
                .into_owned(),
        };
        match self.kind {
            StageKind::Transform => format!("transform #{} ({name})", self.index + 1),
            kind => format!("{kind} ({name})"),
        }
    }

    /// The options the plugin receives: secret references replaced by their values.
    pub fn resolved_options(
        &self,
        secrets: &SecretResolver,
    ) -> Result<Map<String, Value>, ConfigError> {
        let mut options = self.options.clone();
        for (path, template) in &self.option_index.secrets {
            let value = template.resolve(secrets)?;
            if let Some(slot) = lookup_mut(&mut options, path) {
                *slot = Value::String(value.expose().to_string());
            }
        }
        Ok(options)
    }

    /// The values of the secret references in this stage's options, resolved: the host scrubs
    /// them from anything the plugin logs or returns.
    pub fn resolved_secrets(
        &self,
        secrets: &SecretResolver,
    ) -> Result<Vec<crate::config::Secret>, ConfigError> {
        let mut values = Vec::new();
        for (_, template) in &self.option_index.secrets {
            for (reference, location) in template.references() {
                values.push(secrets.resolve(reference, location)?);
            }
        }
        Ok(values)
    }

    /// The options safe to record in manifests and logs: references as written, never their values.
    pub fn redacted_options(&self) -> Map<String, Value> {
        self.options.clone()
    }

    /// Where an option is written, by dotted path as a plugin names it ("level", "tls.ca",
    /// "paths[1]" or "paths.1"). Unknown paths fall back to their nearest known parent,
    /// then to the stage's table header.
    pub fn option_location(&self, dotted: &str) -> Location {
        let normalized = dotted.replace('[', ".").replace(']', "");
        let mut steps: Vec<&str> = normalized.split('.').filter(|s| !s.is_empty()).collect();
        while !steps.is_empty() {
            if let Some(location) = self.option_index.locations.get(&steps.join(".")) {
                return location.clone();
            }
            steps.pop();
        }
        self.location.clone()
    }

    /// Every secret reference in the options, each resolved once and dropped.
    pub(crate) fn check_secrets(&self, secrets: &SecretResolver, errors: &mut Vec<ConfigError>) {
        for (_, template) in &self.option_index.secrets {
            for (reference, location) in template.references() {
                if let Err(e) = secrets.resolve(reference, location) {
                    errors.push(e);
                }
            }
        }
    }
}

fn lookup_mut<'v>(
    options: &'v mut Map<String, Value>,
    path: &[OptionStep],
) -> Option<&'v mut Value> {
    let (OptionStep::Key(first), rest) = path.split_first()? else {
        return None;
    };
    rest.iter()
        .try_fold(options.get_mut(first)?, |value, step| match step {
            OptionStep::Key(key) => value.as_object_mut()?.get_mut(key),
            OptionStep::Index(i) => value.as_array_mut()?.get_mut(*i),
        })
}
