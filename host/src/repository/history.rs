//! Run history: one record per `runner run` (time, outcome, bytes, error), kept in the
//! repository under `history/` so a stateless job still sees it, and in a local cache
//! that also holds the records a run could not store (the sink was down, say) until the
//! next run uploads them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::repository::{RepoError, Repository, get_bytes, put_bytes};

pub const HISTORY_PREFIX: &str = "history/";
const RECORD_FORMAT: u32 = 1;
const SEALED_MAGIC: &[u8] = b"RUNNER-HISTORY-SEALED-1\n";

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    /// Committed, but the source could not read everything.
    Partial,
    Failure,
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Partial => "partial",
            Outcome::Failure => "failure",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// One run, as history keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub format: u32,
    /// 32 hex digits.
    pub id: String,
    pub pipeline: String,
    pub host: String,
    /// RFC 3339.
    pub started: String,
    pub finished: String,
    pub seconds: f64,
    pub outcome: Outcome,
    pub exit_code: u8,
    /// The committed snapshot, if any.
    pub snapshot: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub artifacts: usize,
    pub objects: usize,
    pub bytes_read: u64,
    pub bytes_stored: u64,
    /// Items the source could not read.
    #[serde(default)]
    pub incomplete: u64,
    /// The error and its causes, for a failed run.
    pub error: Option<String>,
}

impl RunRecord {
    pub fn new(pipeline: &str, host: &str, started: jiff::Timestamp) -> Self {
        RunRecord {
            format: RECORD_FORMAT,
            id: hex::encode(rand::random::<[u8; 16]>()),
            pipeline: pipeline.to_string(),
            host: host.to_string(),
            started: started.to_string(),
            finished: started.to_string(),
            seconds: 0.0,
            outcome: Outcome::Failure,
            exit_code: 1,
            snapshot: None,
            tags: Vec::new(),
            artifacts: 0,
            objects: 0,
            bytes_read: 0,
            bytes_stored: 0,
            incomplete: 0,
            error: None,
        }
    }

    /// The record's name: its start time first, so listings are in time order.
    pub fn name(&self) -> String {
        let started: jiff::Timestamp = self.started.parse().unwrap_or_default();
        format!("{}-{}", started.strftime("%Y%m%dT%H%M%S%.3fZ"), self.id)
    }

    fn binding(repository: &str, name: &str) -> Vec<u8> {
        format!("runner history v1\0{repository}\0{name}").into_bytes()
    }
}

impl Repository {
    /// Stores a run record (sealed with the manifest key when the repository has one).
    pub async fn write_run(&mut self, record: &RunRecord) -> Result<(), RepoError> {
        let name = record.name();
        let json = serde_json::to_vec(record).expect("a run record serializes");
        let bytes = match self.manifest_key() {
            Some(key) => {
                let mut out = SEALED_MAGIC.to_vec();
                out.extend_from_slice(&key.seal(&RunRecord::binding(&self.id, &name), &json));
                out
            }
            None => json,
        };
        let key = format!("{HISTORY_PREFIX}{name}");
        match put_bytes(self.sink(), &key, &bytes, true).await {
            Err(RepoError::Sink(crate::engine::PluginError::Plugin {
                error: crate::engine::bindings::PluginErrorKind::AlreadyExists(_),
                ..
            })) => Ok(()), // uploaded before (a retried pending record)
            other => other,
        }
    }

    /// Names of every stored run record, oldest first.
    pub async fn run_names(&mut self) -> Result<Vec<String>, RepoError> {
        let mut names: Vec<String> = self
            .sink()
            .list_all(HISTORY_PREFIX)
            .await?
            .into_iter()
            .filter_map(|o| o.key.strip_prefix(HISTORY_PREFIX).map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    pub async fn read_run(&mut self, name: &str) -> Result<RunRecord, RepoError> {
        let key = format!("{HISTORY_PREFIX}{name}");
        let bytes = get_bytes(self.sink(), &key)
            .await?
            .ok_or_else(|| RepoError::Corrupt {
                key: key.clone(),
                reason: "it disappeared while being read".into(),
            })?;
        let corrupt = |reason: String| RepoError::Corrupt {
            key: key.clone(),
            reason,
        };
        let json = match (bytes.strip_prefix(SEALED_MAGIC), self.manifest_key()) {
            (Some(sealed), Some(k)) => k
                .open(&RunRecord::binding(&self.id, name), sealed)
                .ok_or_else(|| {
                    corrupt("it does not authenticate with this repository's key".into())
                })?,
            (None, None) => bytes,
            (Some(_), None) => {
                return Err(corrupt(
                    "it is sealed, but the repository has no key".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(corrupt(
                    "it is not sealed, but this repository's records must be".into(),
                ));
            }
        };
        serde_json::from_slice(&json).map_err(|e| corrupt(format!("not a run record: {e}")))
    }
}

/// The local copy of a pipeline's history: `<cache>/history/<sink identity>/<name>.json`,
/// plus `<name>.pending` for records not yet in the repository.
pub struct HistoryCache {
    dir: Option<PathBuf>,
}

impl HistoryCache {
    /// `identity` names the sink (it must not contain secrets; a digest of its redacted
    /// options); `cache_root` is the runner's cache directory, if it has one.
    pub fn new(cache_root: Option<&Path>, identity: &str) -> Self {
        HistoryCache {
            dir: cache_root.map(|root| root.join("history").join(identity)),
        }
    }

    /// Keeps a record locally; `pending` when the repository does not have it yet.
    pub fn store(&self, record: &RunRecord, pending: bool) {
        let Some(dir) = &self.dir else { return };
        let name = record.name();
        let result = std::fs::create_dir_all(dir)
            .and_then(|()| {
                std::fs::write(
                    dir.join(format!("{name}.json")),
                    serde_json::to_vec_pretty(record).expect("a run record serializes"),
                )
            })
            .and_then(|()| {
                let marker = dir.join(format!("{name}.pending"));
                if pending {
                    std::fs::write(marker, b"")
                } else {
                    std::fs::remove_file(marker).or_else(|e| match e.kind() {
                        std::io::ErrorKind::NotFound => Ok(()),
                        _ => Err(e),
                    })
                }
            });
        if let Err(e) = result {
            tracing::warn!(
                "cannot keep the run record in the local cache {}: {e}",
                dir.display()
            );
        }
    }

    /// Every cached record, oldest first, with whether it is still pending.
    pub fn records(&self) -> Vec<(RunRecord, bool)> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut records: Vec<(RunRecord, bool)> = entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                let path = entry.path();
                if path.extension()? != "json" {
                    return None;
                }
                let record: RunRecord = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
                let pending = path.with_extension("pending").exists();
                Some((record, pending))
            })
            .collect();
        records.sort_by_key(|(record, _)| record.name());
        records
    }

    fn get(&self, name: &str) -> Option<RunRecord> {
        let path = self.dir.as_ref()?.join(format!("{name}.json"));
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// The record `name` of `repository`: the cached copy when there is one (records never
    /// change), else downloaded and cached.
    pub async fn read(
        &self,
        repository: &mut Repository,
        name: &str,
    ) -> Result<RunRecord, RepoError> {
        if let Some(record) = self.get(name) {
            return Ok(record);
        }
        let record = repository.read_run(name).await?;
        self.store(&record, false);
        Ok(record)
    }

    /// Uploads the records an earlier run could not store.
    pub async fn upload_pending(&self, repository: &mut Repository) {
        for (record, pending) in self.records() {
            if !pending {
                continue;
            }
            match repository.write_run(&record).await {
                Ok(()) => self.store(&record, false),
                Err(e) => {
                    tracing::warn!("cannot store an earlier run's record in the repository: {e}");
                    return;
                }
            }
        }
    }
}
