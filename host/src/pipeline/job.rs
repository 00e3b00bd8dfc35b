//! One `runner run` as an operator sees it: hooks around the backup, the run's record in
//! history, its outcome and exit code; interruptible (SIGINT, SIGTERM) without leaving a
//! snapshot.

use std::future::Future;
use std::time::Instant;

use tokio::sync::watch;

use crate::config::HookPoint;
use crate::monitor::PipelineState;
use crate::monitor::metrics::{Metrics, write_textfile};
use crate::monitor::notify::Notification;
use crate::pipeline::backup::{self, BackupSummary};
use crate::pipeline::{Context, RunError, hooks};
use crate::repository::Repository;
use crate::repository::history::{HistoryCache, Outcome, RunRecord};
use crate::repository::lock::LockKind;
use crate::status::ExitStatus;

/// Raised once when the process is asked to stop; every long step of a job races it.
#[derive(Clone)]
pub struct Interrupt(watch::Receiver<bool>);

impl Interrupt {
    /// Fires on the first SIGINT or SIGTERM; a second one ends the process at once
    /// (exit code 130) for an operator who will not wait for the clean abort.
    pub fn on_signals() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let (sender, receiver) = watch::channel(false);
        tokio::spawn(async move {
            let mut received = 0;
            loop {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
                received += 1;
                if received == 1 {
                    tracing::warn!("interrupted: stopping cleanly (again to quit at once)");
                    let _ = sender.send(true);
                } else {
                    std::process::exit(ExitStatus::Interrupted.code().into());
                }
            }
        });
        Ok(Interrupt(receiver))
    }

    /// An interrupt fired by hand (the daemon aborts its running jobs with it).
    pub fn manual() -> (watch::Sender<bool>, Self) {
        let (sender, receiver) = watch::channel(false);
        (sender, Interrupt(receiver))
    }

    /// Resolves once the interrupt has fired.
    pub async fn fired(&self) {
        let mut receiver = self.0.clone();
        let _ = receiver.wait_for(|fired| *fired).await;
    }

    /// Runs `work` unless the interrupt fires first.
    pub async fn guard<T>(&self, work: impl Future<Output = T>) -> Result<T, RunError> {
        let mut receiver = self.0.clone();
        tokio::select! {
            biased;
            _ = receiver.wait_for(|fired| *fired) => Err(RunError::Interrupted),
            value = work => Ok(value),
        }
    }
}

/// What a job did: the committed snapshot (if any), the error (if any), the history record.
pub struct JobReport {
    pub summary: Option<BackupSummary>,
    pub error: Option<RunError>,
    pub record: RunRecord,
}

impl JobReport {
    pub fn status(&self) -> ExitStatus {
        match &self.error {
            Some(error) => ExitStatus::of(error),
            None if self.record.outcome == Outcome::Partial => ExitStatus::Partial,
            None => ExitStatus::Success,
        }
    }
}

/// Runs the pipeline once: `before` hook, backup, `after` or `on_failure`, `finally`, the
/// record kept in the repository's history (or the local cache while it cannot be).
pub async fn run(
    ctx: &Context,
    tags: Vec<String>,
    time: Option<jiff::Timestamp>,
    interrupt: &Interrupt,
) -> JobReport {
    let clock = Clock {
        started: time.unwrap_or_else(jiff::Timestamp::now),
        elapsed: Instant::now(),
    };
    let mut record = RunRecord::new(&ctx.pipeline.name, &backup::hostname(), clock.started);
    record.tags = tags.clone();
    let cache = crate::monitor::state::history_cache(ctx);
    let mut repository: Option<Repository> = None;

    let mut result: Result<BackupSummary, RunError> = async {
        interrupt
            .guard(hooks::run(
                &ctx.pipeline,
                HookPoint::Before,
                &environment(ctx, None),
            ))
            .await??;
        let opened = interrupt.guard(ctx.open_repository(true)).await??;
        let repository = repository.insert(opened);
        cache.upload_pending(repository).await;
        let lock = interrupt
            .guard(ctx.lock(repository, LockKind::Append, "run"))
            .await??;
        let backed_up = interrupt
            .guard(backup::run(ctx, repository, &lock, tags, time))
            .await;
        // Released on every path, an interrupt included: the next run must not wait.
        lock.release().await;
        backed_up?
    }
    .await;
    if let Err(error) = result {
        result = Err(classify(ctx, error));
    }
    let (mut summary, mut error) = match result {
        Ok(summary) => (Some(summary), None),
        Err(error) => (None, Some(error)),
    };

    fill(&mut record, summary.as_ref(), error.as_ref(), &clock);
    let env = environment(ctx, Some(&record));
    if error.is_none() {
        if let Err(e) = hooks::run(&ctx.pipeline, HookPoint::After, &env).await {
            error = Some(e.into());
        }
    } else if let Err(e) = hooks::run(&ctx.pipeline, HookPoint::OnFailure, &env).await {
        // The run already failed; its own error is the one to report.
        tracing::warn!("{e}");
    }
    fill(&mut record, summary.as_ref(), error.as_ref(), &clock);
    let env = environment(ctx, Some(&record));
    if let Err(e) = hooks::run(&ctx.pipeline, HookPoint::Finally, &env).await {
        if error.is_none() {
            error = Some(e.into());
        } else {
            tracing::warn!("{e}");
        }
    }
    fill(&mut record, summary.as_ref(), error.as_ref(), &clock);
    keep_record(ctx, &cache, repository.as_mut(), &record, interrupt).await;
    crate::monitor::notify::send(&ctx.pipeline, &ctx.secrets, &Notification::of_run(&record)).await;
    if let Some(path) = &ctx.pipeline.monitor.metrics_file {
        write_metrics(ctx, repository.as_mut(), path).await;
    }
    if error.is_some() && summary.is_some() {
        // Committed, then a hook failed: the snapshot stands; the report says both.
        tracing::info!("the snapshot was committed before the failure");
    }
    JobReport {
        summary: summary.take(),
        error,
        record,
    }
}

/// Rewrites the pipeline's node-exporter textfile; a failure is logged, not the run's.
async fn write_metrics(ctx: &Context, repository: Option<&mut Repository>, path: &std::path::Path) {
    let Some(repository) = repository else {
        tracing::warn!(
            "metrics_file {} not updated: the repository was not opened",
            path.display()
        );
        return;
    };
    let written = match PipelineState::read(ctx, repository).await {
        Ok(state) => {
            let metrics = Metrics::new(&[(&state, &ctx.pipeline.monitor)], jiff::Timestamp::now());
            write_textfile(path, &metrics).map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = written {
        tracing::warn!("metrics_file {} not updated: {e}", path.display());
    }
}

/// A failure on a sink whose last request could not reach it is "unreachable".
fn classify(ctx: &Context, error: RunError) -> RunError {
    match error {
        RunError::Interrupted | RunError::SinkUnreachable(_) => error,
        error if ctx.sink_unreachable() => RunError::SinkUnreachable(Box::new(error)),
        error => error,
    }
}

/// When the run started (now, or the time it was given) and the time since.
struct Clock {
    started: jiff::Timestamp,
    elapsed: Instant,
}

/// The record as the run stands now (hooks run after the backup may still change it).
fn fill(
    record: &mut RunRecord,
    summary: Option<&BackupSummary>,
    error: Option<&RunError>,
    clock: &Clock,
) {
    let elapsed = clock.elapsed.elapsed();
    record.finished = clock
        .started
        .checked_add(elapsed)
        .unwrap_or(clock.started)
        .to_string();
    record.seconds = elapsed.as_secs_f64();
    if let Some(summary) = summary {
        let m = &summary.manifest;
        record.snapshot = Some(m.snapshot.clone());
        record.artifacts = m.artifacts.len();
        record.objects = m.object_count();
        record.bytes_read = m.bytes_in();
        record.bytes_stored = m.bytes_stored();
        record.incomplete = m.incomplete();
    }
    (record.outcome, record.exit_code, record.error) = match error {
        Some(RunError::Interrupted) => (
            Outcome::Interrupted,
            ExitStatus::Interrupted.code(),
            Some(RunError::Interrupted.to_string()),
        ),
        Some(error) => (
            Outcome::Failure,
            ExitStatus::of(error).code(),
            Some(error_chain(error)),
        ),
        None if record.incomplete > 0 => (Outcome::Partial, ExitStatus::Partial.code(), None),
        None => (Outcome::Success, ExitStatus::Success.code(), None),
    };
}

/// An error and its causes on one line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        cause = e.source();
    }
    parts.join(": ")
}

/// What hooks see: `RUNNER_PIPELINE` always; after the backup, its outcome.
fn environment(ctx: &Context, record: Option<&RunRecord>) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("RUNNER_PIPELINE", ctx.pipeline.name.clone()),
        (
            "RUNNER_PIPELINE_FILE",
            ctx.pipeline.path.display().to_string(),
        ),
    ];
    if let Some(r) = record {
        env.extend([
            ("RUNNER_OUTCOME", r.outcome.as_str().to_string()),
            ("RUNNER_EXIT_CODE", r.exit_code.to_string()),
            ("RUNNER_SNAPSHOT", r.snapshot.clone().unwrap_or_default()),
            ("RUNNER_ERROR", r.error.clone().unwrap_or_default()),
            ("RUNNER_STARTED", r.started.clone()),
            ("RUNNER_DURATION_SECONDS", format!("{:.3}", r.seconds)),
            ("RUNNER_ARTIFACTS", r.artifacts.to_string()),
            ("RUNNER_BYTES_READ", r.bytes_read.to_string()),
            ("RUNNER_BYTES_STORED", r.bytes_stored.to_string()),
            ("RUNNER_INCOMPLETE", r.incomplete.to_string()),
        ]);
    }
    env
}

/// Stores the record in the repository (opening it if the run never did) and the local
/// cache; what cannot be stored now stays pending in the cache for the next run.
async fn keep_record(
    ctx: &Context,
    cache: &HistoryCache,
    repository: Option<&mut Repository>,
    record: &RunRecord,
    interrupt: &Interrupt,
) {
    let stored = match repository {
        // After an interrupt, briefly: the operator wants out, not a wait on a remote.
        Some(repository) if record.outcome == Outcome::Interrupted => {
            match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                repository.write_run(record),
            )
            .await
            {
                Ok(stored) => stored.map_err(RunError::from),
                Err(_) => Err(RunError::Failed("timed out".into())),
            }
        }
        Some(repository) => repository.write_run(record).await.map_err(RunError::from),
        None if record.outcome == Outcome::Interrupted => {
            Err(RunError::Failed("interrupted".into()))
        }
        None => match interrupt.guard(ctx.open_repository(false)).await {
            Ok(Ok(mut repository)) => repository.write_run(record).await.map_err(RunError::from),
            Ok(Err(e)) | Err(e) => Err(e),
        },
    };
    if let Err(e) = &stored {
        tracing::info!("the run's record stays in the local cache until the next run: {e}");
    }
    cache.store(record, stored.is_err());
}
