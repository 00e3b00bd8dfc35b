//! What the pipeline subcommands share: loading the pipeline file into a run context.

use std::path::Path;

use crate::cli::CliError;
use crate::config::Pipeline;
use crate::engine::{Engine, EngineOptions};
use crate::pipeline::Context;
use crate::plugins::Builtins;

/// Loads and validates the pipeline file; config errors exit with the config status.
pub fn context(path: &Path) -> Result<Context, CliError> {
    let pipeline = Pipeline::load(path, &Builtins).map_err(|errors| {
        let text = errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n\n");
        CliError::config(anyhow::anyhow!("{text}"))
    })?;
    let engine = Engine::new(EngineOptions::from_env())?;
    Ok(Context::new(engine, pipeline))
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
