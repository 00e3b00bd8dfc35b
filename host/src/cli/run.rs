//! `runner run PIPELINE`: one backup; exit 0 only when the snapshot is committed.

use std::path::PathBuf;

use crate::cli::common::{context, human_bytes};
use crate::cli::{CliError, Globals};
use crate::pipeline::backup;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline file.
    pipeline: PathBuf,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
}

pub async fn run(args: Args, globals: Globals) -> Result<(), CliError> {
    let ctx = context(&args.pipeline)?;
    let summary = backup::run(&ctx, args.tags).await?;
    let m = &summary.manifest;
    let (bytes_in, stored) = (m.bytes_in(), m.bytes_stored());
    let rate = bytes_in as f64 / summary.seconds.max(1e-9) / (1 << 20) as f64;
    if globals.json {
        println!(
            "{}",
            serde_json::json!({
                "event": "summary",
                "snapshot": m.snapshot,
                "pipeline": m.pipeline,
                "artifacts": m.artifacts.len(),
                "objects": m.object_count(),
                "bytes_in": bytes_in,
                "bytes_stored": stored,
                "seconds": summary.seconds,
            })
        );
    } else {
        println!(
            "snapshot {} committed: {} artifact(s), {} read, {} stored, {:.1}s ({rate:.0} MiB/s)",
            &m.snapshot[..8],
            m.artifacts.len(),
            human_bytes(bytes_in),
            human_bytes(stored),
            summary.seconds
        );
    }
    Ok(())
}
