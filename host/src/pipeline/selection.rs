//! Which snapshot a restore or verify means: an id prefix, `latest`, the newest at or
//! before a time (`--as-of`), narrowed by tags.

use crate::manifest::Manifest;
use crate::pipeline::RunError;
use crate::repository::Repository;

/// What the operator asked for; the default is the newest snapshot.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// A unique prefix of a snapshot id, or `latest` (same as none).
    pub id: Option<String>,
    /// The newest snapshot started at or before this time.
    pub as_of: Option<jiff::Timestamp>,
    /// Only snapshots carrying every one of these tags.
    pub tags: Vec<String>,
}

impl Selection {
    pub fn latest() -> Self {
        Selection::default()
    }

    /// The id prefix, unless it means "the newest".
    fn prefix(&self) -> Option<&str> {
        self.id.as_deref().filter(|id| *id != "latest")
    }

    /// The one snapshot this selection names.
    pub async fn resolve(&self, repository: &mut Repository) -> Result<Manifest, RunError> {
        if let Some(prefix) = self.prefix() {
            if self.as_of.is_some() || !self.tags.is_empty() {
                return Err(RunError::Usage(
                    "--snapshot ID names one snapshot; it cannot be combined with --as-of or --tag"
                        .into(),
                ));
            }
            let ids = repository.snapshot_ids().await?;
            let mut matches: Vec<&String> =
                ids.iter().filter(|id| id.starts_with(prefix)).collect();
            matches.sort();
            return match matches.as_slice() {
                [id] => Ok(repository.read_manifest(id).await?),
                [] => Err(RunError::Usage(format!(
                    "no snapshot id starts with {prefix:?}"
                ))),
                many => Err(RunError::Usage(format!(
                    "snapshot id prefix {prefix:?} is ambiguous; it matches {}",
                    many.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            };
        }
        let manifests = repository.manifests().await?;
        if manifests.is_empty() {
            return Err(RunError::Usage(
                "the repository has no snapshots yet".into(),
            ));
        }
        self.newest(manifests)
    }

    /// The newest of `manifests` (oldest first) matching the time and tags.
    fn newest(&self, manifests: Vec<Manifest>) -> Result<Manifest, RunError> {
        let count = manifests.len();
        manifests
            .into_iter()
            .filter(|m| self.tags.iter().all(|tag| m.tags.contains(tag)))
            .filter(|m| match self.as_of {
                None => true,
                Some(as_of) => m.started_at().is_some_and(|started| started <= as_of),
            })
            .last()
            .ok_or_else(|| {
                RunError::Usage(format!(
                    "none of the {count} snapshot(s) {}",
                    self.describe()
                ))
            })
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(as_of) = self.as_of {
            parts.push(format!("started at or before {as_of}"));
        }
        if !self.tags.is_empty() {
            parts.push(format!("has the tag(s) {}", self.tags.join(", ")));
        }
        if parts.is_empty() {
            "matches".into()
        } else {
            parts.join(" and ")
        }
    }
}
