//! `runner status [PIPELINE…]`: each pipeline at a glance — last run, newest snapshot
//! age, snapshots and stored size, success rate and mean duration from history; on a
//! terminal, sparklines of size and duration over recent runs.

use std::io::IsTerminal;
use std::path::PathBuf;

use crate::cli::common::{contexts, human_bytes, local_time};
use crate::cli::{CliError, Globals};
use crate::monitor::PipelineState;
use crate::monitor::state::human_duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Pipeline files or directories of them (default: ./pipelines).
    pipelines: Vec<PathBuf>,
}

pub async fn run(args: Args, globals: Globals) -> Result<(), CliError> {
    let contexts = contexts(&args.pipelines)?;
    let now = jiff::Timestamp::now();
    let mut rows = Vec::new();
    for ctx in &contexts {
        // No repository yet reads as nothing stored, no run recorded.
        let state = PipelineState::load(&ctx)
            .await
            .map(|state| state.unwrap_or_else(|| PipelineState::empty(&ctx.pipeline.name)))
            .map_err(|e| crate::pipeline::job::error_chain(&e));
        let problems = state
            .as_ref()
            .map(|s| s.problems(&ctx.pipeline.monitor, now))
            .unwrap_or_default();
        let next_run = ctx
            .pipeline
            .schedule
            .as_ref()
            .and_then(|schedule| schedule.next_after(now));
        rows.push(Row {
            name: ctx.pipeline.name.clone(),
            file: ctx.pipeline.path.clone(),
            schedule: ctx.pipeline.schedule.as_ref().map(|s| s.describe()),
            next_run,
            state,
            problems,
        });
    }
    if globals.json {
        let values: Vec<serde_json::Value> = rows
            .iter()
            .map(|row| match &row.state {
                Ok(s) => serde_json::json!({
                    "pipeline": row.name,
                    "file": row.file,
                    "schedule": row.schedule,
                    "next_run": row.next_run,
                    "last_run": s.last_run(),
                    "newest_snapshot": s.newest_snapshot,
                    "age_seconds": s.age(now).map(|a| a.as_secs()),
                    "snapshots": s.snapshots,
                    "stored_bytes": s.stored_bytes,
                    "success_rate": s.success_rate(),
                    "mean_seconds": s.mean_seconds(),
                    "runs": s.runs_total,
                    "failed_runs": s.failures_total,
                    "problems": row.problems,
                }),
                Err(error) => serde_json::json!({
                    "pipeline": row.name,
                    "file": row.file,
                    "schedule": row.schedule,
                    "next_run": row.next_run,
                    "error": error,
                }),
            })
            .collect();
        println!("{}", serde_json::Value::Array(values));
        return Ok(());
    }
    let spark = std::io::stdout().is_terminal();
    println!(
        "{:<16} {:<20} {:<12} {:>10} {:>9} {:>11} {:>8} {:>8}  NEXT RUN",
        "PIPELINE", "LAST RUN", "OUTCOME", "NEWEST", "SNAPSHOTS", "STORED", "SUCCESS", "MEAN"
    );
    for row in &rows {
        let (name, problems) = (&row.name, &row.problems);
        let next_run = row
            .next_run
            .map_or("-".into(), |t| local_time(&t.to_string(), "%Y-%m-%d %H:%M"));
        let s = match &row.state {
            Ok(s) => s,
            Err(error) => {
                println!("{name:<16} cannot read the repository: {error}");
                continue;
            }
        };
        let last = s.last_run();
        println!(
            "{:<16} {:<20} {:<12} {:>10} {:>9} {:>11} {:>8} {:>8}  {next_run}",
            name,
            last.map_or("-".into(), |r| local_time(&r.started, "%Y-%m-%d %H:%M")),
            last.map_or("-", |r| r.outcome.as_str()),
            s.age(now)
                .map_or("-".into(), |a| human_duration(a.as_secs())),
            s.snapshots,
            human_bytes(s.stored_bytes),
            s.success_rate()
                .map_or("-".into(), |r| format!("{:.0}%", r * 100.0)),
            s.mean_seconds().map_or("-".into(), |m| format!("{m:.1}s")),
        );
        for problem in problems {
            println!("  ! {}", problem.describe());
        }
        if spark && s.recent_runs.len() > 1 {
            let stored: Vec<f64> = s
                .recent_runs
                .iter()
                .map(|r| r.bytes_stored as f64)
                .collect();
            let seconds: Vec<f64> = s.recent_runs.iter().map(|r| r.seconds).collect();
            println!(
                "  stored {}   duration {}",
                sparkline(&stored),
                sparkline(&seconds)
            );
        }
    }
    Ok(())
}

/// One pipeline's line.
struct Row {
    name: String,
    file: PathBuf,
    /// "0 2 * * * (UTC)".
    schedule: Option<String>,
    next_run: Option<jiff::Timestamp>,
    state: Result<crate::monitor::PipelineState, String>,
    problems: Vec<crate::monitor::Problem>,
}

/// "▁▂▅█" scaled between the values' minimum and maximum.
pub fn sparkline(values: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    values
        .iter()
        .map(|v| {
            if max > min {
                BARS[(((v - min) / (max - min)) * 7.0).round() as usize]
            } else {
                BARS[3]
            }
        })
        .collect()
}
