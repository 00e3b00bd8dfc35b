//! `runner unlock PIPELINE [--all]`: removes stale repository locks (every lock with `--all`).

use std::path::PathBuf;

use crate::cli::common::context;
use crate::cli::{CliError, Globals};
use crate::repository::lock::{self, Unlocked};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline file.
    pipeline: PathBuf,
    /// Remove every lock, also those of commands still running (only when you know none is).
    #[arg(long)]
    all: bool,
}

pub async fn run(args: Args, globals: Globals) -> Result<(), CliError> {
    let ctx = context(&args.pipeline)?;
    let mut repository = ctx.open_repository(false).await?;
    let seal = repository.lock_seal();
    let (removed, kept) = lock::remove_locks(
        repository.sink(),
        &seal,
        ctx.pipeline.repository.lock_stale_after,
        args.all,
    )
    .await?;
    if globals.json {
        println!(
            "{}",
            serde_json::json!({
                "event": "unlock",
                "removed": removed.iter().map(describe_json).collect::<Vec<_>>(),
                "kept": kept.iter().map(describe_json).collect::<Vec<_>>(),
            })
        );
        return Ok(());
    }
    if removed.is_empty() {
        println!("no stale locks");
    }
    for entry in &removed {
        println!("removed {}", describe(entry));
    }
    for entry in &kept {
        println!("kept {}", describe(entry));
    }
    if !kept.is_empty() && !args.all {
        println!(
            "{} lock(s) kept: their holders may still be working; `runner unlock --all` removes them anyway",
            kept.len()
        );
    }
    Ok(())
}

fn describe(entry: &Unlocked) -> String {
    match &entry.record {
        Some(record) => format!(
            "{}: {}, created {}: {}",
            entry.key,
            record.holder(),
            record.created,
            entry.reason
        ),
        None => format!("{}: {}", entry.key, entry.reason),
    }
}

fn describe_json(entry: &Unlocked) -> serde_json::Value {
    let now = jiff::Timestamp::now();
    match &entry.record {
        Some(record) => serde_json::json!({
            "key": entry.key,
            "kind": record.kind,
            "command": record.command,
            "pipeline": record.pipeline,
            "host": record.host,
            "pid": record.pid,
            "created": record.created,
            "refreshed": record.refreshed,
            "age_seconds": record.age(now).as_secs(),
            "reason": entry.reason,
        }),
        None => serde_json::json!({ "key": entry.key, "reason": entry.reason }),
    }
}
