//! `runner validate PIPELINE`: syntax, plugins, their options, secret references and the
//! effective grants of every stage, without touching the source or the sink's data; with
//! `--check-remote`, also that the sink is reachable and writable.

use crate::capabilities::StageGrants;
use crate::cli::{CliError, Globals};
use crate::config::{ConfigError, Pipeline, SecretResolver, StageConfig, StageKind};
use crate::engine::{Engine, EngineOptions};
use crate::pipeline::stages::{self, Purpose, StageError};
use crate::plugins::Builtins;
use crate::repository::keys::{MasterKey, RepoKeys};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline file.
    pipeline: PathBuf,
    /// Also check that the sink is reachable and writable: write, read back and delete one
    /// small probe object (outside the repository's objects).
    #[arg(long)]
    check_remote: bool,
}

pub async fn run(args: Args, globals: Globals) -> Result<(), CliError> {
    let pipeline = Pipeline::load(&args.pipeline, &Builtins)
        .map_err(|errors| config_failure(errors.into_vec()))?;
    let secrets = SecretResolver::from_process_env();
    let mut problems = pipeline.check_secrets(&secrets);
    let engine = Engine::new(EngineOptions::from_env())?;
    // Options are checked by instantiating each plugin; a stage that needs the repository
    // key gets a throwaway one, so validation never needs the passphrase.
    let keys = pipeline
        .repository
        .key
        .as_ref()
        .map(|_| MasterKey::generate().derive("validate"));

    let mut report = Vec::new();
    for stage in pipeline.stages() {
        match check_stage(&engine, &pipeline, stage, keys.as_ref(), &secrets).await {
            Ok(entry) => report.push(entry),
            Err(StageError::Config(e)) => problems.push(e),
            Err(StageError::Plugin(e)) => {
                problems.push(ConfigError::new(stage.location.clone(), e.to_string()))
            }
        }
    }
    if !problems.is_empty() {
        return Err(config_failure(problems));
    }
    let remote = if args.check_remote {
        let context = crate::pipeline::Context::new(engine.clone(), pipeline.clone());
        Some(crate::pipeline::probe::check_sink(&context).await?)
    } else {
        None
    };

    // The next few times, so an operator sees the schedule means what they meant.
    let upcoming: Vec<jiff::Timestamp> = pipeline.schedule.as_ref().map_or(Vec::new(), |s| {
        std::iter::successors(s.next_after(jiff::Timestamp::now()), |t| s.next_after(*t))
            .take(3)
            .collect()
    });
    if globals.json {
        println!(
            "{}",
            serde_json::json!({
                "pipeline": pipeline.name,
                "file": args.pipeline,
                "valid": true,
                "schedule": pipeline.schedule.as_ref().map(|s| s.describe()),
                "next_runs": upcoming,
                "stages": report,
                "sink_check": remote,
            })
        );
    } else {
        println!(
            "{}: pipeline {:?} is valid",
            args.pipeline.display(),
            pipeline.name
        );
        if let Some(schedule) = &pipeline.schedule {
            let zone = &schedule.time_zone;
            let times: Vec<String> = upcoming
                .iter()
                .map(|t| {
                    t.to_zoned(zone.clone())
                        .strftime("%a %Y-%m-%d %H:%M %Z")
                        .to_string()
                })
                .collect();
            println!(
                "  schedule {}, missed runs: {}; next: {}",
                schedule.describe(),
                schedule.missed.name(),
                times.join(", ")
            );
        }
        for entry in &report {
            println!(
                "  {:<22} {} {}  sha256:{}",
                entry["stage"].as_str().unwrap_or_default(),
                entry["plugin"].as_str().unwrap_or_default(),
                entry["version"].as_str().unwrap_or_default(),
                &entry["sha256"].as_str().unwrap_or_default()[..16],
            );
            for grant in entry["grants"].as_array().into_iter().flatten() {
                println!("      grant  {}", grant.as_str().unwrap_or_default());
            }
            println!(
                "      limits {}",
                entry["limits"].as_str().unwrap_or_default()
            );
        }
    }
    if let (Some(check), false) = (&remote, globals.json) {
        println!(
            "  sink check: {} reachable and writable ({})",
            check["storage"].as_str().unwrap_or_default(),
            check["summary"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

async fn check_stage(
    engine: &Engine,
    pipeline: &Pipeline,
    stage: &StageConfig,
    keys: Option<&RepoKeys>,
    secrets: &SecretResolver,
) -> Result<serde_json::Value, StageError> {
    let plugin = stages::load_plugin(engine, stage)?;
    let info = engine.describe(&plugin).await?;
    // A sink's storage is opened only when the repository is (validation touches no data).
    let (grants, storage) = match stage.kind {
        StageKind::Sink => (
            StageGrants {
                grants: stage.grants.clone(),
                ..Default::default()
            },
            crate::sinks::describe_storage(stage, pipeline.base_dir(), secrets)?
                .map(|storage| format!("storage {storage}")),
        ),
        _ => (
            stages::implied_grants(stage, pipeline, Purpose::Backup, keys)?,
            None,
        ),
    };
    let mut described_grants = describe_grants(&grants);
    if let Some(storage) = storage {
        described_grants.retain(|g| !g.starts_with("nothing"));
        described_grants.push(storage);
    }
    stages::start(engine, stage, &plugin, grants, secrets).await?;
    let limits = &stage.limits;
    Ok(serde_json::json!({
        "stage": stage.label(),
        "plugin": info.name,
        "version": info.version,
        "sha256": hex::encode(plugin.digest),
        "grants": described_grants,
        "limits": format!(
            "memory {} MiB, call {:?}, run {:?}, chunk {} MiB",
            limits.memory >> 20, limits.call_timeout, limits.run_timeout, limits.max_chunk >> 20
        ),
    }))
}

/// One line per grant, as `validate` prints them.
fn describe_grants(grants: &StageGrants) -> Vec<String> {
    let mut lines = Vec::new();
    for dir in &grants.grants.dirs {
        lines.push(format!("dir {} ({})", dir.path.display(), dir.access));
    }
    for http in &grants.grants.http {
        lines.push(format!("http {http}"));
    }
    for header in &grants.http_headers {
        lines.push(format!(
            "http {} gets its {} header from the host (the plugin never holds it)",
            header.origin, header.name
        ));
    }
    for trusted in &grants.http_trusted {
        lines.push(format!(
            "{} trusts only the {} CA certificate(s) of {}",
            trusted.origin,
            trusted.certificates,
            trusted.ca_file.display()
        ));
    }
    for tcp in &grants.grants.tcp {
        lines.push(format!("tcp {tcp}"));
    }
    if grants.keys.get("data").is_some() {
        lines.push("key data (seal/open through the host)".into());
    }
    if lines.is_empty() {
        lines.push("nothing (no files, network or keys)".into());
    }
    lines
}

fn config_failure(problems: Vec<ConfigError>) -> CliError {
    let count = problems.len();
    let text = problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n\n");
    let summary = if count == 1 {
        "1 problem".to_string()
    } else {
        format!("{count} problems")
    };
    CliError::config(anyhow::anyhow!("{text}\n\n{summary} in the pipeline file"))
}
