//! `runner plugins precompile [FILE.wasm]…`: compiles every built-in plugin and the given
//! components into the compile cache, so the next `runner run` starts without compiling.

use std::path::PathBuf;
use std::time::Instant;

use crate::cli::{CliError, Globals};
use crate::engine::{Engine, EngineOptions};
use crate::plugins::BUILTINS;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Components loaded from files by your pipelines (the built-ins are always included).
    files: Vec<PathBuf>,
}

pub async fn run(args: Args, globals: Globals) -> Result<(), CliError> {
    let options = EngineOptions::from_env();
    let cache_dir = options.cache_dir.clone();
    let engine = Engine::new(options)?;
    let mut components: Vec<(String, std::borrow::Cow<'static, [u8]>)> = BUILTINS
        .iter()
        .map(|b| (b.name.to_string(), std::borrow::Cow::Borrowed(b.wasm)))
        .collect();
    for file in &args.files {
        let wasm = std::fs::read(file).map_err(|e| {
            CliError::config(anyhow::anyhow!("cannot read {}: {e}", file.display()))
        })?;
        components.push((file.display().to_string(), wasm.into()));
    }
    let mut rows = Vec::new();
    for (name, wasm) in &components {
        let started = Instant::now();
        let cached = engine.precompile(name, wasm).map_err(CliError::config)?;
        let seconds = started.elapsed().as_secs_f64();
        if !globals.json {
            let state = if cached { "cached" } else { "compiled" };
            println!("{state:<9} {name} ({seconds:.2}s)");
        }
        rows.push(serde_json::json!({"plugin": name, "cached": cached, "seconds": seconds}));
    }
    let dir = cache_dir
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    if globals.json {
        println!(
            "{}",
            serde_json::json!({"cache_dir": dir, "components": rows})
        );
    } else {
        println!("{} component(s) ready in {dir}", rows.len());
    }
    Ok(())
}
