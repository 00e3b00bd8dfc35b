//! What the pipeline subcommands share: loading the pipeline file into a run context.

use std::path::{Path, PathBuf};

use crate::cli::CliError;
use crate::config::Pipeline;
use crate::engine::{Engine, EngineOptions};
use crate::pipeline::Context;
use crate::pipeline::selection::Selection;
use crate::plugins::Builtins;

/// Loads and validates the pipeline file; config errors exit with the config status.
pub fn context(path: &Path) -> Result<Context, CliError> {
    let engine = Engine::new(EngineOptions::from_env())?;
    Ok(Context::new(engine, load(path)?))
}

/// The contexts of the pipeline files named (directories expanded to their `*.toml`,
/// sorted; default ./pipelines), sharing one engine and its compiled plugins.
pub fn contexts(given: &[PathBuf]) -> Result<Vec<Context>, CliError> {
    let files = pipeline_files(given)?;
    let engine = Engine::new(EngineOptions::from_env())?;
    files
        .iter()
        .map(|file| Ok(Context::new(engine.clone(), load(file)?)))
        .collect()
}

fn load(path: &Path) -> Result<Pipeline, CliError> {
    Pipeline::load(path, &Builtins).map_err(|errors| {
        let text = errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n\n");
        CliError::config(anyhow::anyhow!("{text}"))
    })
}

/// The pipeline files named, directories expanded to their `*.toml` (sorted).
fn pipeline_files(given: &[PathBuf]) -> Result<Vec<PathBuf>, CliError> {
    let given = if given.is_empty() {
        vec![PathBuf::from("pipelines")]
    } else {
        given.to_vec()
    };
    let mut files = Vec::new();
    for path in given {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&path)
                .map_err(|e| {
                    CliError::config(anyhow::anyhow!("cannot list {}: {e}", path.display()))
                })?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|ext| ext == "toml"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(CliError::config(anyhow::anyhow!(
            "no pipeline files: name them, or a directory holding *.toml"
        )));
    }
    Ok(files)
}

/// Which snapshot a command works on: `--snapshot`, `--as-of`, `--tag`.
#[derive(clap::Args, Debug)]
pub struct SnapshotArgs {
    /// Snapshot id (a unique prefix) or `latest`.
    #[arg(long, default_value = "latest")]
    pub snapshot: String,
    /// The newest snapshot started at or before this time: "2026-11-20 02:00" (local
    /// time), "2026-11-20" (the end of that day) or RFC 3339.
    #[arg(long, value_parser = parse_time)]
    pub as_of: Option<jiff::Timestamp>,
    /// Only snapshots with this tag (repeatable: every tag given).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
}

impl SnapshotArgs {
    pub fn selection(self) -> Selection {
        Selection {
            id: Some(self.snapshot),
            as_of: self.as_of,
            tags: self.tags,
        }
    }
}

/// `--lock-wait`, shared by the commands that lock the repository.
#[derive(clap::Args, Debug)]
pub struct LockArgs {
    /// Wait this long for another command's conflicting repository lock ("30s", "10m");
    /// 0 fails at once (exit code 4).
    #[arg(long = "lock-wait", value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
    pub wait: std::time::Duration,
}

/// A duration on the command line: "30s", "10m", "2h"; "0" is none.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    if text.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    crate::config::parse_duration(text).map_err(|e| e.to_string())
}

/// An RFC 3339 time shown in the system's time zone with `format` ("%Y-%m-%d %H:%M");
/// as given when it does not parse.
pub fn local_time(rfc3339: &str, format: &str) -> String {
    rfc3339
        .parse::<jiff::Timestamp>()
        .map(|t| {
            t.to_zoned(jiff::tz::TimeZone::system())
                .strftime(format)
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339.to_string())
}

/// "1.2 GiB".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A time given on the command line: RFC 3339 with an offset ("2025-01-01T02:00:00Z"), or
/// "YYYY-MM-DD HH:MM[:SS]" (or with a `T`) in the local time zone (`TZ`), as restic reads it.
pub fn parse_time(text: &str) -> Result<jiff::Timestamp, String> {
    crate::config::parse_time(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_parse_as_rfc3339_or_local() {
        use super::parse_time;
        let utc = parse_time("2025-01-01T02:00:00Z").unwrap();
        assert_eq!(parse_time("2025-01-01T03:30:00+01:30").unwrap(), utc);
        let local = jiff::civil::date(2025, 1, 1)
            .at(2, 0, 0, 0)
            .to_zoned(jiff::tz::TimeZone::system())
            .unwrap()
            .timestamp();
        assert_eq!(parse_time("2025-01-01 02:00").unwrap(), local);
        assert_eq!(parse_time("2025-01-01 02:00:00").unwrap(), local);
        assert_eq!(parse_time("2025-01-01T02:00").unwrap(), local);
        let error = parse_time("yesterday").unwrap_err();
        assert!(
            error.contains("expected \"YYYY-MM-DD HH:MM[:SS]\""),
            "{error}"
        );
    }
}
