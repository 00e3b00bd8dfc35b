//! The `<index>/meta` artifact: an index's settings (without what the cluster assigns),
//! mappings and aliases, and the names of an index's artifacts.

use runner_sdk::{Error, Result};
use serde_json::{Map, Value};

pub const META_MEDIA_TYPE: &str = "application/json";
pub const DOCUMENTS_MEDIA_TYPE: &str = "application/x-ndjson";
pub const SCHEMA_VERSION: u32 = 1;

/// Settings under `index.` the cluster assigns: creating an index with them fails or
/// copies identities that belong to the original (dotted paths below `index`).
const ASSIGNED_SETTINGS: &[&str] = &[
    "uuid",
    "creation_date",
    "creation_date_string",
    "version",
    "provided_name",
    "history_uuid",
    "resize",
    "routing.allocation.initial_recovery",
    "verified_before_close",
];

/// What one index is, apart from its documents.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct IndexMeta {
    pub index: String,
    pub settings: Value,
    pub mappings: Value,
    pub aliases: Map<String, Value>,
    pub cluster_version: String,
    pub distribution: String,
}

impl IndexMeta {
    /// From one entry of `GET /{index}` (`{"aliases", "mappings", "settings"}`).
    pub fn from_get_index(
        index: &str,
        entry: &Value,
        version: &crate::client::ClusterVersion,
    ) -> Result<Self> {
        let field = |name: &str| {
            entry
                .get(name)
                .cloned()
                .ok_or_else(|| Error::permanent(format!("GET /{index}: no `{name}` for the index")))
        };
        let mut settings = field("settings")?;
        strip_assigned(&mut settings);
        Ok(IndexMeta {
            index: index.to_string(),
            settings,
            mappings: field("mappings")?,
            aliases: field("aliases")?.as_object().cloned().unwrap_or_default(),
            cluster_version: version.number.clone(),
            distribution: version.distribution.clone(),
        })
    }

    /// The body of `PUT /{index}` that recreates it (aliases renamed with `prefix`, or none).
    pub fn create_body(&self, prefix: &str, with_aliases: bool) -> Value {
        let mut body = serde_json::json!({ "settings": self.settings, "mappings": self.mappings });
        if with_aliases {
            body["aliases"] = Value::Object(self.renamed_aliases(prefix));
        }
        body
    }

    pub fn renamed_aliases(&self, prefix: &str) -> Map<String, Value> {
        self.aliases
            .iter()
            .map(|(name, spec)| (format!("{prefix}{name}"), spec.clone()))
            .collect()
    }
}

/// Removes cluster-assigned settings in place, from nested (`{"index": {...}}`) or flat
/// (`"index.uuid"`) form, and the objects they leave empty.
pub fn strip_assigned(settings: &mut Value) {
    let Some(top) = settings.as_object_mut() else {
        return;
    };
    for path in ASSIGNED_SETTINGS {
        top.remove(&format!("index.{path}"));
        if let Some(index) = top.get_mut("index") {
            remove_path(index, &path.split('.').collect::<Vec<_>>());
        }
    }
}

fn remove_path(value: &mut Value, path: &[&str]) {
    let Some(object) = value.as_object_mut() else {
        return;
    };
    match path {
        [] => {}
        [last] => {
            object.remove(*last);
        }
        [first, rest @ ..] => {
            if let Some(child) = object.get_mut(*first) {
                remove_path(child, rest);
                if child.as_object().is_some_and(|o| o.is_empty()) {
                    object.remove(*first);
                }
            }
        }
    }
}

/// `products/meta` → ("products", Meta); `products/documents` → ("products", Documents).
pub fn parse_artifact_name(name: &str) -> Result<(&str, Part)> {
    match name.rsplit_once('/') {
        Some((index, "meta")) if !index.is_empty() => Ok((index, Part::Meta)),
        Some((index, "documents")) if !index.is_empty() => Ok((index, Part::Documents)),
        _ => Err(Error::invalid_input(format!(
            "artifact {name:?} is not an elasticsearch artifact (expected <index>/meta or <index>/documents)"
        ))),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Meta,
    Documents,
}
