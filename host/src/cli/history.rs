//! `runner history PIPELINE`: every run's record (outcome, time, bytes, error), from the
//! repository, with the local cache filling in what the repository does not have yet.

use std::path::PathBuf;

use crate::cli::common::{context, human_bytes, local_time};
use crate::cli::{CliError, Globals};
use crate::repository::history::RunRecord;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline file.
    pipeline: PathBuf,
    /// Show the newest N runs.
    #[arg(long, default_value_t = 20)]
    last: usize,
}

/// A record and whether it is only in the local cache so far.
struct Row {
    record: RunRecord,
    pending: bool,
}

pub async fn run(args: Args, globals: Globals) -> Result<(), CliError> {
    let ctx = context(&args.pipeline)?;
    let cache = crate::monitor::state::history_cache(&ctx);
    let mut rows: Vec<Row> = match ctx.open_repository(false).await {
        Ok(mut repository) => {
            let names = repository.run_names().await?;
            let mut rows = Vec::new();
            for name in names.iter().skip(names.len().saturating_sub(args.last)) {
                let record = cache.read(&mut repository, name).await?;
                rows.push(Row {
                    record,
                    pending: false,
                });
            }
            rows
        }
        Err(e) => {
            tracing::warn!("cannot read the repository's history ({e}); showing the local cache");
            Vec::new()
        }
    };
    for (record, pending) in cache.records() {
        if pending || rows.is_empty() {
            rows.push(Row { record, pending });
        }
    }
    rows.sort_by_key(|row| row.record.name());
    rows.dedup_by_key(|row| row.record.name());
    let rows = &rows[rows.len().saturating_sub(args.last)..];

    if globals.json {
        let values: Vec<serde_json::Value> = rows
            .iter()
            .map(|row| {
                let mut value = serde_json::to_value(&row.record).expect("records serialize");
                value["pending"] = row.pending.into();
                value
            })
            .collect();
        println!("{}", serde_json::Value::Array(values));
        return Ok(());
    }
    println!(
        "{:<20} {:>9} {:<12} {:<9} {:>11} {:>11}  ERROR",
        "STARTED", "DURATION", "OUTCOME", "SNAPSHOT", "READ", "STORED"
    );
    for Row { record: r, pending } in rows {
        println!(
            "{:<20} {:>8.1}s {:<12} {:<9} {:>11} {:>11}  {}{}",
            local_time(&r.started, "%Y-%m-%d %H:%M:%S"),
            r.seconds,
            r.outcome.as_str(),
            r.snapshot.as_deref().map_or("-", |s| &s[..8.min(s.len())]),
            human_bytes(r.bytes_read),
            human_bytes(r.bytes_stored),
            r.error.as_deref().unwrap_or(""),
            if *pending {
                " (not yet in the repository)"
            } else {
                ""
            }
        );
    }
    println!("{} run(s)", rows.len());
    Ok(())
}
