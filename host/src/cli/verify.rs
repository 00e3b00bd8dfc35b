//! `runner verify PIPELINE`: structure and manifests, or every byte with `--read-data`.

use std::path::PathBuf;

use crate::cli::common::{LockArgs, SnapshotArgs, context, human_bytes};
use crate::cli::{CliError, ExitStatus, Globals};
use crate::pipeline::verify::{self, VerifyRequest};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline file.
    pipeline: PathBuf,
    #[command(flatten)]
    snapshot: SnapshotArgs,
    /// Every snapshot.
    #[arg(long, conflicts_with_all = ["snapshot", "as_of", "tags"])]
    all: bool,
    /// Read every object back through the recorded chain, checking every digest.
    #[arg(long)]
    read_data: bool,
    #[command(flatten)]
    lock: LockArgs,
}

pub async fn run(args: Args, globals: Globals) -> Result<(), CliError> {
    let mut ctx = context(&args.pipeline)?;
    ctx.lock_wait = args.lock.wait;
    let checks = verify::run(
        &ctx,
        VerifyRequest {
            selection: args.snapshot.selection(),
            all: args.all,
            read_data: args.read_data,
        },
    )
    .await?;
    let failed: Vec<_> = checks.iter().filter(|c| c.problem.is_some()).collect();
    for check in &checks {
        if globals.json {
            println!(
                "{}",
                serde_json::json!({
                    "event": "verified", "snapshot": check.snapshot, "objects": check.objects,
                    "bytes_read": check.bytes_read, "ok": check.problem.is_none(), "problem": check.problem,
                })
            );
        } else {
            match &check.problem {
                None => println!(
                    "snapshot {}: ok ({} objects{})",
                    &check.snapshot[..8.min(check.snapshot.len())],
                    check.objects,
                    if args.read_data {
                        format!(", {} read back", human_bytes(check.bytes_read))
                    } else {
                        String::new()
                    }
                ),
                Some(problem) => println!("snapshot {}: FAILED: {problem}", check.snapshot),
            }
        }
    }
    if !failed.is_empty() {
        let first = failed[0];
        return Err(CliError::new(
            ExitStatus::Integrity,
            anyhow::anyhow!(
                "{} of {} snapshot(s) failed verification; first: snapshot {}: {}",
                failed.len(),
                checks.len(),
                first.snapshot,
                first.problem.as_deref().unwrap_or_default()
            ),
        ));
    }
    Ok(())
}
