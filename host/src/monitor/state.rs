//! A pipeline's state as monitoring sees it, read from its repository: snapshots (count,
//! newest, stored bytes) and recent runs from history; whether it is stale or too big.

use std::time::Duration;

use serde::Serialize;

use crate::config::MonitorConfig;
use crate::pipeline::{Context, RunError};
use crate::repository::history::{HistoryCache, Outcome, RunRecord};
use crate::repository::{RepoError, Repository};

/// Runs kept for rates, means and sparklines.
pub const RECENT_RUNS: usize = 30;

#[derive(Clone, Debug, Serialize)]
pub struct PipelineState {
    pub pipeline: String,
    pub snapshots: usize,
    /// Start of the newest snapshot.
    pub newest_snapshot: Option<jiff::Timestamp>,
    /// What the snapshots store (sum of their objects).
    pub stored_bytes: u64,
    /// The most recent runs, oldest first.
    pub recent_runs: Vec<RunRecord>,
    /// Failed runs in the whole history (a counter for metrics).
    pub failures_total: u64,
    /// Every run in history.
    pub runs_total: u64,
}

/// Why a pipeline needs attention.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// No snapshot yet, or the newest is older than `max_age`.
    Stale {
        newest_snapshot: Option<String>,
        age_seconds: Option<u64>,
        max_age_seconds: u64,
    },
    TooBig {
        stored_bytes: u64,
        warn_size: u64,
    },
}

impl Problem {
    pub fn describe(&self) -> String {
        match self {
            Problem::Stale {
                newest_snapshot: None,
                max_age_seconds,
                ..
            } => format!(
                "no snapshot yet (max_age {})",
                human_duration(*max_age_seconds)
            ),
            Problem::Stale {
                age_seconds,
                max_age_seconds,
                newest_snapshot,
            } => format!(
                "the newest snapshot ({}) is {} old; max_age is {}",
                newest_snapshot.as_deref().unwrap_or("?"),
                human_duration(age_seconds.unwrap_or(0)),
                human_duration(*max_age_seconds)
            ),
            Problem::TooBig {
                stored_bytes,
                warn_size,
            } => format!(
                "the repository stores {} bytes, more than warn_size ({warn_size} bytes)",
                stored_bytes
            ),
        }
    }
}

impl PipelineState {
    /// Opens the pipeline's repository and reads its state; `None` when there is no
    /// repository yet (no run ever committed one).
    pub async fn load(ctx: &Context) -> Result<Option<Self>, RunError> {
        match ctx.open_repository(false).await {
            Ok(mut repository) => Self::read(ctx, &mut repository).await.map(Some),
            Err(RunError::Repository(RepoError::Missing)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A pipeline without a repository: nothing stored, no run recorded.
    pub fn empty(pipeline: &str) -> Self {
        PipelineState {
            pipeline: pipeline.to_string(),
            snapshots: 0,
            newest_snapshot: None,
            stored_bytes: 0,
            recent_runs: Vec::new(),
            failures_total: 0,
            runs_total: 0,
        }
    }

    /// Reads the state from the pipeline's repository; history records come from the local
    /// cache when it has them (they never change), which also adds the runs not stored yet.
    pub async fn read(ctx: &Context, repository: &mut Repository) -> Result<Self, RunError> {
        let manifests = repository.manifests().await?;
        let cache = history_cache(ctx);
        let names = repository.run_names().await?;
        let mut runs = Vec::with_capacity(names.len());
        for name in &names {
            runs.push(cache.read(repository, name).await?);
        }
        // Runs that could not reach the repository yet (it was down, the key was wrong)
        // are history too.
        runs.extend(
            cache
                .records()
                .into_iter()
                .filter(|(record, pending)| *pending && !names.contains(&record.name()))
                .map(|(record, _)| record),
        );
        runs.sort_by_key(RunRecord::name);
        let failures_total = runs
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failure | Outcome::Interrupted))
            .count() as u64;
        let runs_total = runs.len() as u64;
        let recent_runs = runs.split_off(runs.len().saturating_sub(RECENT_RUNS));
        Ok(PipelineState {
            pipeline: ctx.pipeline.name.clone(),
            snapshots: manifests.len(),
            newest_snapshot: manifests.iter().filter_map(|m| m.started_at()).max(),
            stored_bytes: manifests.iter().map(|m| m.bytes_stored()).sum(),
            recent_runs,
            failures_total,
            runs_total,
        })
    }

    pub fn last_run(&self) -> Option<&RunRecord> {
        self.recent_runs.last()
    }

    pub fn last_success(&self) -> Option<&RunRecord> {
        self.recent_runs
            .iter()
            .rev()
            .find(|r| matches!(r.outcome, Outcome::Success | Outcome::Partial))
    }

    /// Share of recent runs that committed a snapshot.
    pub fn success_rate(&self) -> Option<f64> {
        if self.recent_runs.is_empty() {
            return None;
        }
        let good = self
            .recent_runs
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Success | Outcome::Partial))
            .count();
        Some(good as f64 / self.recent_runs.len() as f64)
    }

    /// Mean duration of recent runs that committed a snapshot.
    pub fn mean_seconds(&self) -> Option<f64> {
        let durations: Vec<f64> = self
            .recent_runs
            .iter()
            .filter(|r| r.snapshot.is_some())
            .map(|r| r.seconds)
            .collect();
        (!durations.is_empty()).then(|| durations.iter().sum::<f64>() / durations.len() as f64)
    }

    pub fn age(&self, now: jiff::Timestamp) -> Option<Duration> {
        let newest = self.newest_snapshot?;
        Some(Duration::from_secs(
            now.duration_since(newest).as_secs().max(0) as u64,
        ))
    }

    /// What is wrong by the pipeline's `[monitor]` settings, at `now`.
    pub fn problems(&self, monitor: &MonitorConfig, now: jiff::Timestamp) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Some(max_age) = monitor.max_age {
            let age = self.age(now);
            if age.is_none_or(|age| age > max_age) {
                problems.push(Problem::Stale {
                    newest_snapshot: self.newest_snapshot.map(|t| t.to_string()),
                    age_seconds: age.map(|a| a.as_secs()),
                    max_age_seconds: max_age.as_secs(),
                });
            }
        }
        if let Some(warn_size) = monitor.warn_size
            && self.stored_bytes > warn_size
        {
            problems.push(Problem::TooBig {
                stored_bytes: self.stored_bytes,
                warn_size,
            });
        }
        problems
    }
}

/// The local history cache of the pipeline's sink.
pub fn history_cache(ctx: &Context) -> HistoryCache {
    HistoryCache::new(
        crate::engine::EngineOptions::from_env()
            .cache_dir
            .as_deref(),
        &ctx.sink_identity(),
    )
}

/// "1d 2h", "26h" → "1d 2h", "45m", "30s".
pub fn human_duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86400,
        seconds % 86400 / 3600,
        seconds % 3600 / 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}
