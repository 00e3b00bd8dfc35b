//! `runner prune PIPELINE [--dry-run]`: forget the snapshots the `[retention]` policy does not
//! keep, then remove every object no remaining snapshot references.

use std::path::PathBuf;

use crate::cli::common::{LockArgs, context, human_bytes};
use crate::cli::{CliError, Globals};
use crate::pipeline::prune::{self, PruneReport};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline file; its [retention] table is the policy.
    pipeline: PathBuf,
    /// Report what would be removed and which rule keeps each snapshot; delete nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    lock: LockArgs,
}

pub async fn run(args: Args, globals: Globals) -> Result<(), CliError> {
    let mut ctx = context(&args.pipeline)?;
    ctx.lock_wait = args.lock.wait;
    let report = prune::run(&ctx, args.dry_run).await?;
    if globals.json {
        println!("{}", report_json(&report));
    } else {
        print_report(&report);
    }
    Ok(())
}

/// The report as one JSON object (also the `prune` event of `runner run` with `auto`).
pub fn report_json(report: &PruneReport) -> serde_json::Value {
    let snapshots: Vec<serde_json::Value> = report
        .decisions
        .iter()
        .map(|d| {
            serde_json::json!({
                "id": d.snapshot.id,
                "time": d.snapshot.time.to_string(),
                "tags": d.snapshot.tags,
                "bytes_stored": d.snapshot.stored_bytes,
                "keep": d.keep(),
                "reasons": d.kept_by.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "over_budget": d.over_budget,
            })
        })
        .collect();
    let removed = report.removed_snapshots().count();
    serde_json::json!({
        "dry_run": report.dry_run,
        "snapshots": snapshots,
        "kept": report.decisions.len() - removed,
        "removed": removed,
        "other_pipelines_snapshots": report.other_snapshots,
        "unreferenced_objects": report.unreferenced_objects.len(),
        "unreferenced_components": report.unreferenced_components.len(),
        "unreferenced_bytes": report.unreferenced_bytes(),
    })
}

/// One line per snapshot (what happens to it and why), then the totals.
pub fn print_report(report: &PruneReport) {
    let (keep, remove) = if report.dry_run {
        ("would keep", "would remove")
    } else {
        ("keep", "remove")
    };
    for d in &report.decisions {
        let why = if d.over_budget {
            format!(
                "over max_total_size (kept by {})",
                d.kept_by
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            d.kept_by
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "{:<12} {} {} {:>11}  {}{}",
            if d.keep() { keep } else { remove },
            &d.snapshot.id[..8.min(d.snapshot.id.len())],
            d.snapshot.time.strftime("%Y-%m-%d %H:%M:%S"),
            human_bytes(d.snapshot.stored_bytes),
            why,
            if d.snapshot.tags.is_empty() {
                String::new()
            } else {
                format!("  [tags: {}]", d.snapshot.tags.join(", "))
            }
        );
    }
    let removed = report.removed_snapshots().count();
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    println!(
        "{verb} {removed} of {} snapshot(s) and {} unreferenced object(s) + {} component(s) ({}); kept {}{}",
        report.decisions.len(),
        report.unreferenced_objects.len(),
        report.unreferenced_components.len(),
        human_bytes(report.unreferenced_bytes()),
        report.decisions.len() - removed,
        if report.other_snapshots > 0 {
            format!(
                " (and {} snapshot(s) of other pipelines, untouched)",
                report.other_snapshots
            )
        } else {
            String::new()
        }
    );
}
