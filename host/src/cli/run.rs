//! `runner run PIPELINE`: one backup with its hooks and history record, then the automatic
//! prune when `[retention] auto = true`; exit 0 only when the snapshot is committed and
//! complete.

use std::path::PathBuf;

use crate::cli::common::{LockArgs, context, human_bytes, parse_time};
use crate::cli::progress::{Display, print_json};
use crate::cli::{CliError, ExitStatus, Globals};
use crate::pipeline::job::{self, Interrupt};
use crate::pipeline::prune;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline file.
    pipeline: PathBuf,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Record this start time instead of now (importing old backups, tests):
    /// "YYYY-MM-DD HH:MM[:SS]" in local time, or RFC 3339.
    #[arg(long, value_parser = parse_time)]
    time: Option<jiff::Timestamp>,
    #[command(flatten)]
    lock: LockArgs,
}

pub async fn run(args: Args, globals: Globals) -> Result<(), CliError> {
    let mut ctx = context(&args.pipeline)?;
    ctx.lock_wait = args.lock.wait;
    let display = Display::new(globals);
    ctx.events = display.events.clone();
    let interrupt = Interrupt::on_signals()
        .map_err(|e| CliError::failure(anyhow::anyhow!("cannot watch for signals: {e}")))?;
    let report = job::run(&ctx, args.tags, args.time, &interrupt).await;
    display.finish();
    let status = report.status();
    let record = &report.record;
    if let Some(summary) = &report.summary {
        let m = &summary.manifest;
        if globals.json {
            print_json(&serde_json::json!({
                "event": "summary",
                "outcome": record.outcome,
                "exit_code": status.code(),
                "snapshot": m.snapshot,
                "pipeline": m.pipeline,
                "artifacts": m.artifacts.len(),
                "objects": m.object_count(),
                "bytes_in": record.bytes_read,
                "bytes_stored": record.bytes_stored,
                "incomplete": record.incomplete,
                "seconds": summary.seconds,
            }));
        } else {
            let rate = record.bytes_read as f64 / summary.seconds.max(1e-9) / (1 << 20) as f64;
            println!(
                "snapshot {} committed: {} artifact(s), {} read, {} stored, {:.1}s ({rate:.0} MiB/s)",
                &m.snapshot[..8],
                m.artifacts.len(),
                human_bytes(record.bytes_read),
                human_bytes(record.bytes_stored),
                summary.seconds
            );
        }
    }
    if let Some(error) = report.error {
        return Err(CliError::new(status, error));
    }
    if let Some(summary) = &report.summary
        && ctx.pipeline.retention.as_ref().is_some_and(|r| r.auto)
    {
        // `[retention] auto = true`: the committed snapshot is safe whatever the prune does
        // (the run's append lock is released; prune takes the exclusive one).
        let snapshot = &summary.manifest.snapshot;
        let pruned = prune::run(&ctx, false).await.map_err(|e| {
            CliError::new(
                ExitStatus::of(&e),
                anyhow::anyhow!(
                    "snapshot {} committed, but the automatic prune failed: {e}",
                    &snapshot[..8]
                ),
            )
        })?;
        if globals.json {
            let mut event = crate::cli::prune::report_json(&pruned);
            event["event"] = "prune".into();
            print_json(&event);
        } else {
            crate::cli::prune::print_report(&pruned);
        }
    }
    if status == ExitStatus::Partial {
        return Err(CliError::new(
            status,
            anyhow::anyhow!(
                "the snapshot is incomplete: the source could not read {} item(s) (the warnings above name them)",
                record.incomplete
            ),
        ));
    }
    Ok(())
}
