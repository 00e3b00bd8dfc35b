//! `runner restore PIPELINE`: a snapshot back into its source, verified at every stage.

use std::path::PathBuf;

use crate::cli::common::{LockArgs, SnapshotArgs, context, human_bytes};
use crate::cli::progress::Display;
use crate::cli::{CliError, Globals};
use crate::engine::contract::RestoreMode;
use crate::pipeline::restore::{self, RestoreRequest};

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Mode {
    /// Add to what the target holds.
    Merge,
    /// Make the target hold exactly the snapshot.
    Replace,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline file.
    pipeline: PathBuf,
    #[command(flatten)]
    snapshot: SnapshotArgs,
    /// Restore only what these globs select (artifact names, or paths inside them).
    #[arg(long = "only")]
    only: Vec<String>,
    /// Where to restore (a directory, a database, an index prefix: the source decides).
    #[arg(long)]
    target: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "merge")]
    mode: Mode,
    /// Show what would be restored; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Restore into a target that already holds data.
    #[arg(long)]
    overwrite: bool,
    /// Without --target: write back where the backup came from (sources that support it,
    /// e.g. sqlite; an existing database is replaced only with --overwrite too).
    #[arg(long, conflicts_with = "target")]
    in_place: bool,
    #[command(flatten)]
    lock: LockArgs,
}

pub async fn run(args: Args, globals: Globals) -> Result<(), CliError> {
    let mut ctx = context(&args.pipeline)?;
    let display = Display::new(globals);
    ctx.events = display.events.clone();
    ctx.lock_wait = args.lock.wait;
    // As written: a directory (relative to the working directory) or, for sources that
    // do not restore into directories, a database name or URL, an index prefix.
    let target = args.target;
    let request = RestoreRequest {
        selection: args.snapshot.selection(),
        only: args.only,
        target,
        mode: match args.mode {
            Mode::Merge => RestoreMode::Merge,
            Mode::Replace => RestoreMode::Replace,
        },
        dry_run: args.dry_run,
        overwrite: args.overwrite,
        in_place: args.in_place,
    };
    let dry_run = request.dry_run;
    let summary = restore::run(&ctx, request).await;
    display.finish();
    let summary = summary?;
    if globals.json {
        let reports: Vec<serde_json::Value> = summary
            .reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "artifact": r.artifact,
                    "metadata": r.metadata.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                    "warnings": r.warnings,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "event": "summary", "snapshot": summary.snapshot, "dry_run": dry_run,
                "artifacts": summary.artifacts, "bytes": summary.bytes, "seconds": summary.seconds, "reports": reports,
            })
        );
        return Ok(());
    }
    let verb = if dry_run { "would restore" } else { "restored" };
    println!(
        "snapshot {}: {verb} {} artifact(s), {} checked, {:.1}s",
        &summary.snapshot[..8],
        summary.artifacts.len(),
        human_bytes(summary.bytes),
        summary.seconds
    );
    for report in &summary.reports {
        let facts: Vec<String> = report
            .metadata
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("  {}: {}", report.artifact, facts.join(" "));
        for warning in &report.warnings {
            println!("    warning: {warning}");
        }
    }
    Ok(())
}
