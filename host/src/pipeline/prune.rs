//! `runner prune`: applies the pipeline's retention policy to its snapshots, deletes the
//! forgotten snapshots' manifests, then every object and component no remaining snapshot
//! references (also orphans of killed runs).
//!
//! Only `snapshots/`, `data/` and `components/` are ever deleted from; `config`, `keys/`,
//! `locks/` and `history/` are never listed here. Manifests go first, so a prune that dies
//! halfway leaves at worst orphan objects (removed by the next prune), never a snapshot
//! whose objects are gone. Every manifest in the repository is read before anything is
//! deleted: one that cannot be read stops the prune, since its objects cannot be known.

use std::collections::HashSet;

use crate::config::Retention;
use crate::engine::contract::ObjectStat;
use crate::manifest::Manifest;
use crate::pipeline::retention::{self, Candidate, Decision};
use crate::pipeline::{Context, RunError};
use crate::repository::lock::{LockGuard, LockKind};
use crate::repository::{self, RepoError, Repository};

/// Where stored objects and stage components live (see [`crate::repository`]).
const DATA_PREFIX: &str = "data/";
const COMPONENTS_PREFIX: &str = "components/";

/// What a prune did, or with `dry_run` would do.
pub struct PruneReport {
    pub dry_run: bool,
    /// The pipeline's snapshots, newest first, with the policy's verdict on each.
    pub decisions: Vec<Decision>,
    /// Snapshots of other pipelines sharing the repository: not judged, their objects kept.
    pub other_snapshots: usize,
    /// Objects under `data/` no remaining snapshot references.
    pub unreferenced_objects: Vec<ObjectStat>,
    /// Components under `components/` no remaining snapshot records.
    pub unreferenced_components: Vec<ObjectStat>,
}

impl PruneReport {
    pub fn removed_snapshots(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| !d.keep())
    }

    pub fn unreferenced_bytes(&self) -> u64 {
        self.unreferenced_objects
            .iter()
            .chain(&self.unreferenced_components)
            .map(|o| o.size)
            .sum()
    }
}

/// Prunes the pipeline's repository by its `[retention]` policy.
pub async fn run(ctx: &Context, dry_run: bool) -> Result<PruneReport, RunError> {
    let Some(policy) = &ctx.pipeline.retention else {
        return Err(RunError::Usage(format!(
            "{} has no [retention] table, so prune has no policy to apply; add one, e.g. [retention] with keep_daily = 7",
            ctx.pipeline.path.display()
        )));
    };
    let mut repository = ctx.open_repository(false).await?;
    // Exclusive, held to the end: no run may write objects meanwhile, since a run in
    // progress has objects on the sink that no manifest references yet. A dry run deletes
    // nothing and only reads.
    let kind = if dry_run {
        LockKind::Read
    } else {
        LockKind::Exclusive
    };
    let lock = ctx.lock(&repository, kind, "prune").await?;
    let pruned = prune_repository(
        &mut repository,
        &lock,
        policy,
        &ctx.pipeline.name,
        &jiff::tz::TimeZone::system(),
        dry_run,
    )
    .await;
    lock.release().await;
    pruned
}

async fn prune_repository(
    repository: &mut Repository,
    lock: &LockGuard,
    policy: &Retention,
    pipeline: &str,
    zone: &jiff::tz::TimeZone,
    dry_run: bool,
) -> Result<PruneReport, RunError> {
    let manifests = repository.manifests().await?;
    let (own, others): (Vec<&Manifest>, Vec<&Manifest>) =
        manifests.iter().partition(|m| m.pipeline == pipeline);
    let mut candidates = Vec::with_capacity(own.len());
    for manifest in &own {
        candidates.push(Candidate {
            id: manifest.snapshot.clone(),
            time: snapshot_time(manifest)?,
            tags: manifest.tags.clone(),
            stored_bytes: manifest.bytes_stored(),
        });
    }
    let decisions = retention::apply(policy, candidates, zone, jiff::Timestamp::now());
    let forgotten: HashSet<String> = decisions
        .iter()
        .filter(|d| !d.keep())
        .map(|d| d.snapshot.id.clone())
        .collect();

    let remaining = manifests
        .iter()
        .filter(|m| !forgotten.contains(&m.snapshot));
    let mut referenced = HashSet::new();
    for manifest in remaining {
        for stage in &manifest.stages {
            referenced.insert(repository::component_key(&stage.wasm_sha256));
        }
        for artifact in &manifest.artifacts {
            referenced.extend(artifact.objects.iter().map(|o| o.key.clone()));
        }
    }
    let sink = repository.sink();
    let unreferenced = |objects: Vec<ObjectStat>| -> Vec<ObjectStat> {
        objects
            .into_iter()
            .filter(|o| !referenced.contains(&o.key))
            .collect()
    };
    let unreferenced_objects = unreferenced(sink.list_all(DATA_PREFIX).await?);
    let unreferenced_components = unreferenced(sink.list_all(COMPONENTS_PREFIX).await?);

    let report = PruneReport {
        dry_run,
        other_snapshots: others.len(),
        decisions,
        unreferenced_objects,
        unreferenced_components,
    };
    if dry_run {
        return Ok(report);
    }
    // Still ours (not removed by `unlock`, refreshed in time): only then delete anything.
    lock.check().await?;
    for decision in report.removed_snapshots() {
        sink.delete(&repository::snapshot_key(&decision.snapshot.id))
            .await
            .map_err(RepoError::from)?;
        tracing::info!(snapshot = %decision.snapshot.id, "snapshot forgotten");
    }
    for object in report
        .unreferenced_objects
        .iter()
        .chain(&report.unreferenced_components)
    {
        sink.delete(&object.key).await.map_err(RepoError::from)?;
    }
    tracing::info!(
        snapshots = report.removed_snapshots().count(),
        objects = report.unreferenced_objects.len(),
        components = report.unreferenced_components.len(),
        bytes = report.unreferenced_bytes(),
        "pruned"
    );
    Ok(report)
}

fn snapshot_time(manifest: &Manifest) -> Result<jiff::Timestamp, RepoError> {
    manifest.started.parse().map_err(|e| RepoError::Corrupt {
        key: repository::snapshot_key(&manifest.snapshot),
        reason: format!(
            "its start time {:?} is not a timestamp: {e}",
            manifest.started
        ),
    })
}
