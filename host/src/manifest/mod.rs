//! The snapshot manifest: what every artifact became, stage by stage, and which components
//! and configuration produced it. Written last; it is the snapshot's commit marker.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::capabilities::keys::DataKey;

/// Artifact metadata a source sets to the number of items it could not read (unreadable
/// files, say): the snapshot commits, but the run is partial (exit code 3).
pub const INCOMPLETE: &str = "incomplete";

/// Version of the manifest format.
pub const MANIFEST_FORMAT: u32 = 1;
/// Prefix of a sealed manifest; a plain one is JSON and starts with `{`.
const SEALED_MAGIC: &[u8] = b"RUNNER-MANIFEST-SEALED-1\n";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    /// 32 hex digits.
    pub snapshot: String,
    pub repository: String,
    pub pipeline: String,
    pub hostname: String,
    /// RFC 3339.
    pub started: String,
    pub finished: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Source, transforms in order, sink.
    pub stages: Vec<StageInfo>,
    pub artifacts: Vec<ArtifactRecord>,
}

/// One stage of the chain as it ran.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StageInfo {
    /// "source", "transform", "sink".
    pub kind: String,
    pub plugin: String,
    pub version: String,
    /// sha256 of the component; the component is stored in the repository under it.
    pub wasm_sha256: String,
    /// The stage's options as written, secret references in place of secrets.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Repository keys the stage was granted by name, granted again to read it back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ArtifactRecord {
    pub name: String,
    pub media_type: String,
    pub schema_version: u32,
    pub metadata: BTreeMap<String, String>,
    /// Bytes the source produced.
    pub size: u64,
    /// The artifact's stored form: its bytes cut into objects, in order.
    pub objects: Vec<ObjectRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ObjectRecord {
    /// Key on the sink.
    pub key: String,
    /// `stages[0]` is the slice of source output this object holds; `stages[i]` what
    /// transform `i` made of `stages[i-1]`. The last is what the sink stores.
    pub stages: Vec<StageOutput>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StageOutput {
    pub bytes: u64,
    /// BLAKE3 of the stage's output, hex.
    pub blake3: String,
    /// BLAKE3 of the stage's input (the previous stage's output), chaining the records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_blake3: Option<String>,
    /// What the transform's decoder needs (empty for the source slice).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<(String, String)>,
}

impl ArtifactRecord {
    /// Items the source could not read, from its [`INCOMPLETE`] metadata.
    pub fn incomplete(&self) -> Option<u64> {
        self.metadata
            .get(INCOMPLETE)
            .and_then(|n| n.parse().ok())
            .filter(|n| *n > 0)
    }
}

impl ObjectRecord {
    pub fn stored(&self) -> &StageOutput {
        self.stages
            .last()
            .expect("an object has at least its source slice")
    }
}

impl Manifest {
    /// When the snapshot started; `None` when the recorded time does not parse.
    pub fn started_at(&self) -> Option<jiff::Timestamp> {
        self.started.parse().ok()
    }

    pub fn bytes_in(&self) -> u64 {
        self.artifacts.iter().map(|a| a.size).sum()
    }

    pub fn bytes_stored(&self) -> u64 {
        self.artifacts
            .iter()
            .flat_map(|a| &a.objects)
            .map(|o| o.stored().bytes)
            .sum()
    }

    /// Items the source could not read, over every artifact (0: the snapshot is complete).
    pub fn incomplete(&self) -> u64 {
        self.artifacts.iter().filter_map(|a| a.incomplete()).sum()
    }

    pub fn object_count(&self) -> usize {
        self.artifacts.iter().map(|a| a.objects.len()).sum()
    }

    /// Checks the record chain: each stage's input digest is the previous stage's output.
    pub fn check_chain(&self) -> Result<(), String> {
        let transforms = self.stages.iter().filter(|s| s.kind == "transform").count();
        for artifact in &self.artifacts {
            for object in &artifact.objects {
                if object.stages.len() != transforms + 1 {
                    return Err(format!(
                        "artifact {}, object {}: {} stage records for {} transforms",
                        artifact.name,
                        object.key,
                        object.stages.len(),
                        transforms
                    ));
                }
                for (i, pair) in object.stages.windows(2).enumerate() {
                    if pair[1].input_blake3.as_deref() != Some(pair[0].blake3.as_str()) {
                        return Err(format!(
                            "artifact {}, object {}: stage {} does not chain to stage {}",
                            artifact.name,
                            object.key,
                            i + 1,
                            i
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Serialized, sealed with the manifest key when the repository has one. The associated
    /// data binds the manifest to its repository and snapshot id.
    pub fn encode(&self, key: Option<&DataKey>) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("a manifest serializes");
        match key {
            Some(key) => {
                let mut out = SEALED_MAGIC.to_vec();
                out.extend_from_slice(&key.seal(&binding(&self.repository, &self.snapshot), &json));
                out
            }
            None => json,
        }
    }

    /// Inverse of [`encode`](Self::encode), checking the binding to `repository` and `snapshot`.
    pub fn decode(
        bytes: &[u8],
        key: Option<&DataKey>,
        repository: &str,
        snapshot: &str,
    ) -> Result<Self, String> {
        let json = match (bytes.strip_prefix(SEALED_MAGIC), key) {
            (Some(sealed), Some(key)) => key.open(&binding(repository, snapshot), sealed).ok_or_else(|| {
                "it does not authenticate with this repository's manifest key (edited, damaged, or from another repository)".to_string()
            })?,
            (Some(_), None) => return Err("it is encrypted, but the repository has no key configured".into()),
            (None, Some(_)) => return Err("it is not encrypted, but this repository's manifests must be".into()),
            (None, None) => bytes.to_vec(),
        };
        let manifest: Manifest = serde_json::from_slice(&json)
            .map_err(|e| format!("it is not a valid manifest: {e}"))?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(format!(
                "manifest format {} is not supported (this runner reads {MANIFEST_FORMAT})",
                manifest.format
            ));
        }
        if manifest.repository != repository || manifest.snapshot != snapshot {
            return Err(format!(
                "it belongs to snapshot {} of repository {}, not {snapshot} of {repository}",
                manifest.snapshot, manifest.repository
            ));
        }
        manifest.check_chain()?;
        Ok(manifest)
    }
}

fn binding(repository: &str, snapshot: &str) -> Vec<u8> {
    format!("runner manifest v1\0{repository}\0{snapshot}").into_bytes()
}
