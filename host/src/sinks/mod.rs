//! The host halves of the built-in sinks: each turns its `[sink]` table into the storage the
//! plugin writes through, so storage credentials stay in the host and never reach the plugin.

mod gdrive;
mod google_auth;
pub mod http;
mod s3;

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::capabilities::Storage;
use crate::config::{ConfigError, PluginRef, SecretResolver, StageConfig};

/// The built-in sinks whose storage the host opens from the stage's options.
pub const STORAGE_SINKS: &[&str] = &["local", "s3", "gdrive"];

/// Whether the host opens this stage's storage (and so holds its credentials).
pub fn host_opens_storage(stage: &StageConfig) -> bool {
    matches!(&stage.plugin, PluginRef::Builtin(name) if STORAGE_SINKS.contains(&name.as_str()))
}

/// A problem with one option of a sink's table.
#[derive(Debug)]
pub struct OptionError {
    /// Dotted option name ("bucket"), or empty for the table as a whole.
    pub field: String,
    pub message: String,
}

impl OptionError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        OptionError {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Opens the storage of a built-in storage sink from its table (secret references resolved
/// here, in the host). `None` for sinks that bring their own storage (plugin files).
pub fn open_storage(
    stage: &StageConfig,
    base_dir: &Path,
    secrets: &SecretResolver,
) -> Result<Option<Storage>, ConfigError> {
    let PluginRef::Builtin(name) = &stage.plugin else {
        return Ok(None);
    };
    let options = stage.resolved_options(secrets)?;
    let opened = match name.as_str() {
        "local" => local(&options, base_dir),
        "s3" => parse(&options).and_then(s3::open).map(Some),
        "gdrive" => parse(&options).and_then(gdrive::open).map(Some),
        _ => Ok(None),
    };
    opened.map_err(|e| {
        ConfigError::new(
            stage.option_location(&e.field),
            format!("{}: {}", stage.label(), e.message),
        )
    })
}

fn local(options: &Map<String, Value>, base_dir: &Path) -> Result<Option<Storage>, OptionError> {
    let path = match options.get("path") {
        Some(Value::String(path)) => base_dir.join(path),
        Some(_) => return Err(OptionError::new("path", "`path` must be a string")),
        None => return Err(OptionError::new("", "the local sink needs `path`")),
    };
    Storage::local(&path)
        .map(Some)
        .map_err(|e| OptionError::new("path", format!("{e:#}")))
}

/// Deserializes a sink's options; an unknown or mistyped key is reported by name, so the
/// host can point at its line.
fn parse<T: DeserializeOwned>(options: &Map<String, Value>) -> Result<T, OptionError> {
    serde_json::from_value(Value::Object(options.clone())).map_err(|e| {
        let message = e.to_string();
        // serde names unknown keys as "unknown field `x`"; point at that key when it is one.
        let field = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
            .unwrap_or("")
            .to_string();
        OptionError { field, message }
    })
}

/// What `validate` says about a sink's storage, without creating or contacting anything.
pub fn describe_storage(
    stage: &StageConfig,
    base_dir: &Path,
    secrets: &SecretResolver,
) -> Result<Option<String>, ConfigError> {
    match &stage.plugin {
        PluginRef::Builtin(name) if name == "local" => Ok(stage
            .options
            .get("path")
            .and_then(Value::as_str)
            .map(|p| format!("local directory {}", base_dir.join(p).display()))),
        // Opening a remote storage only builds its client; nothing is sent.
        _ => Ok(open_storage(stage, base_dir, secrets)?.map(|s| s.description().to_string())),
    }
}
