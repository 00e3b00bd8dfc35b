//! `runner snapshots PIPELINE`: the committed snapshots, from their manifests only.

use std::path::PathBuf;

use crate::cli::common::{context, human_bytes};
use crate::cli::{CliError, Globals};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline file.
    pipeline: PathBuf,
}

pub async fn run(args: Args, globals: Globals) -> Result<(), CliError> {
    let ctx = context(&args.pipeline)?;
    let mut repository = ctx.open_repository(false).await?;
    let manifests = repository.manifests().await?;
    if globals.json {
        let rows: Vec<serde_json::Value> = manifests
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": m.snapshot, "time": m.started, "finished": m.finished, "hostname": m.hostname,
                    "tags": m.tags, "artifacts": m.artifacts.len(), "objects": m.object_count(),
                    "bytes_in": m.bytes_in(), "bytes_stored": m.bytes_stored(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    println!(
        "{:<10} {:<26} {:>9} {:>11} {:>11}  TAGS",
        "ID", "TIME", "ARTIFACTS", "SIZE", "STORED"
    );
    for m in &manifests {
        println!(
            "{:<10} {:<26} {:>9} {:>11} {:>11}  {}",
            &m.snapshot[..8],
            m.started
                .chars()
                .take(19)
                .collect::<String>()
                .replace('T', " "),
            m.artifacts.len(),
            human_bytes(m.bytes_in()),
            human_bytes(m.bytes_stored()),
            m.tags.join(",")
        );
    }
    println!("{} snapshot(s)", manifests.len());
    Ok(())
}
