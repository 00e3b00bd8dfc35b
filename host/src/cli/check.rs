//! `runner check PIPELINE`: for monitoring systems — exits 8 (and notifies `stale`) when
//! the newest snapshot is older than `[monitor] max_age` or the repository stores more
//! than `warn_size`.

use std::path::PathBuf;

use crate::cli::common::context;
use crate::cli::progress::print_json;
use crate::cli::{CliError, ExitStatus, Globals};
use crate::monitor::notify::{self, Notification};
use crate::monitor::state::human_duration;
use crate::monitor::{PipelineState, Problem};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline file.
    pipeline: PathBuf,
    /// Report only; send no `stale` notification.
    #[arg(long)]
    no_notify: bool,
}

pub async fn run(args: Args, globals: Globals) -> Result<(), CliError> {
    let ctx = context(&args.pipeline)?;
    let monitor = &ctx.pipeline.monitor;
    if monitor.max_age.is_none() && monitor.warn_size.is_none() {
        return Err(CliError::config(anyhow::anyhow!(
            "{}: nothing to check: set max_age (and/or warn_size) in a [monitor] table",
            ctx.pipeline.path.display()
        )));
    }
    let now = jiff::Timestamp::now();
    // No repository yet: no snapshot, which max_age reports as stale.
    let state = PipelineState::load(&ctx).await?;
    let problems = match &state {
        Some(state) => state.problems(monitor, now),
        None => PipelineState::empty(&ctx.pipeline.name).problems(monitor, now),
    };
    let age = state.as_ref().and_then(|s| s.age(now));
    if globals.json {
        print_json(&serde_json::json!({
            "event": "check",
            "pipeline": ctx.pipeline.name,
            "ok": problems.is_empty(),
            "newest_snapshot": state.as_ref().and_then(|s| s.newest_snapshot),
            "age_seconds": age.map(|a| a.as_secs()),
            "stored_bytes": state.as_ref().map(|s| s.stored_bytes),
            "problems": problems,
        }));
    } else if problems.is_empty() {
        println!(
            "{}: ok, newest snapshot {} old",
            ctx.pipeline.name,
            age.map_or("-".into(), |a| human_duration(a.as_secs()))
        );
    }
    if problems.is_empty() {
        return Ok(());
    }
    let reasons: Vec<String> = problems.iter().map(Problem::describe).collect();
    if !args.no_notify {
        notify::send(
            &ctx.pipeline,
            &ctx.secrets,
            &Notification::stale(&ctx.pipeline.name, problems),
        )
        .await;
    }
    Err(CliError::new(
        ExitStatus::Stale,
        anyhow::anyhow!("{}: {}", ctx.pipeline.name, reasons.join("; ")),
    ))
}
