//! `runner plugins`: the built-in plugins with kind, version and digest; `inspect` for any
//! component; `new`, `test` and `precompile` (one module each) for plugin authors and images.

mod new;
mod precompile;
mod test;

use std::path::PathBuf;

use clap::Subcommand;

use crate::cli::common::human_bytes;
use crate::cli::{CliError, Globals};
use crate::engine::{Contract, Engine, EngineOptions};
use crate::plugins::BUILTINS;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Option<PluginsCommand>,
}

#[derive(Subcommand, Debug)]
enum PluginsCommand {
    /// Show what a component is: world, contract version, imports, size, digest.
    Inspect {
        /// A `.wasm` component.
        file: PathBuf,
    },
    /// Write a new plugin crate (source, transform or sink) that builds on its own.
    New(new::Args),
    /// Round-trip a plugin inside the real host: backup, verify, restore (sinks: every call).
    Test(test::Args),
    /// Compile the built-in plugins (and given components) into the compile cache.
    Precompile(precompile::Args),
}

pub async fn run(args: Args, globals: Globals) -> Result<(), CliError> {
    match args.command {
        Some(PluginsCommand::New(args)) => new::run(args),
        Some(PluginsCommand::Test(args)) => test::run(args, globals).await,
        Some(PluginsCommand::Precompile(args)) => precompile::run(args, globals).await,
        None => list(&Engine::new(EngineOptions::from_env())?, globals).await,
        Some(PluginsCommand::Inspect { file }) => {
            inspect(&Engine::new(EngineOptions::from_env())?, &file, globals).await
        }
    }
}

async fn list(engine: &Engine, globals: Globals) -> Result<(), CliError> {
    let mut rows = Vec::new();
    for builtin in BUILTINS {
        let loaded = engine.load(builtin.name, builtin.wasm)?;
        let info = engine.describe(&loaded).await?;
        rows.push(serde_json::json!({
            "name": builtin.name,
            "kind": builtin.kind.to_string(),
            "version": info.version,
            "contract": loaded.contract.version(),
            "sha256": hex::encode(loaded.digest),
            "size": builtin.wasm.len(),
            "description": info.description,
        }));
    }
    if globals.json {
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    println!(
        "{:<10} {:<10} {:<8} {:<9} {:<64}  DESCRIPTION",
        "KIND", "NAME", "VERSION", "SIZE", "SHA256"
    );
    for row in &rows {
        println!(
            "{:<10} {:<10} {:<8} {:<9} {:<64}  {}",
            row["kind"].as_str().unwrap_or_default(),
            row["name"].as_str().unwrap_or_default(),
            row["version"].as_str().unwrap_or_default(),
            human_bytes(row["size"].as_u64().unwrap_or_default()),
            row["sha256"].as_str().unwrap_or_default(),
            row["description"].as_str().unwrap_or_default(),
        );
    }
    Ok(())
}

async fn inspect(engine: &Engine, file: &PathBuf, globals: Globals) -> Result<(), CliError> {
    let wasm = std::fs::read(file)
        .map_err(|e| CliError::config(anyhow::anyhow!("cannot read {}: {e}", file.display())))?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let loaded = engine.load(&name, &wasm).map_err(CliError::config)?;
    let info = engine.describe(&loaded).await?;
    let report = serde_json::json!({
        "file": file.display().to_string(),
        "name": info.name,
        "version": info.version,
        "description": info.description,
        "world": format!("{}-plugin", loaded.shape.kind),
        "contract": loaded.contract.to_string(),
        "current_contract": Contract::CURRENT.to_string(),
        "size": wasm.len(),
        "sha256": hex::encode(loaded.digest),
        "imports": loaded.shape.imports,
        "exports": loaded.shape.exports,
    });
    if globals.json {
        println!("{report}");
        return Ok(());
    }
    println!("file:      {}", file.display());
    println!(
        "plugin:    {} {} — {}",
        info.name, info.version, info.description
    );
    println!(
        "world:     {}",
        report["world"].as_str().unwrap_or_default()
    );
    if loaded.contract == Contract::CURRENT {
        println!("contract:  {}", loaded.contract);
    } else {
        println!(
            "contract:  {} (older than this runner's {}: runs through the host's adapter, unchanged)",
            loaded.contract,
            Contract::CURRENT.version()
        );
    }
    println!(
        "size:      {} ({} bytes)",
        human_bytes(wasm.len() as u64),
        wasm.len()
    );
    println!("sha256:    {}", hex::encode(loaded.digest));
    println!("imports:");
    for import in &loaded.shape.imports {
        println!("  {import}");
    }
    println!("exports:");
    for export in &loaded.shape.exports {
        println!("  {export}");
    }
    Ok(())
}
