//! `runner key list|add|remove PIPELINE`: the repository's key slots. Adding or removing a
//! passphrase never re-encrypts data: slots wrap the same master key.

use std::path::PathBuf;

use clap::Subcommand;

use crate::cli::common::context;
use crate::cli::{CliError, Globals};
use crate::config::SecretValueRef;
use crate::pipeline::RunError;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// List the key slots.
    List { pipeline: PathBuf },
    /// Add a passphrase (the pipeline's current one must open the repository).
    Add {
        pipeline: PathBuf,
        /// The new passphrase, as a secret reference: '${env:NAME}' or '${file:PATH}'.
        #[arg(long)]
        new_passphrase: String,
        /// A note to tell slots apart.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Remove a key slot by id (the last slot cannot be removed).
    Remove { pipeline: PathBuf, slot: String },
}

pub async fn run(args: Args, globals: Globals) -> Result<(), CliError> {
    match args.command {
        KeyCommand::List { pipeline } => {
            let ctx = context(&pipeline)?;
            let mut repository = ctx.open_repository(false).await?;
            let slots = repository.slots().await?;
            if globals.json {
                let rows: Vec<_> = slots
                    .iter()
                    .map(|s| serde_json::json!({"id": s.id, "created": s.created, "label": s.label, "kdf": s.kdf.algorithm}))
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                for slot in &slots {
                    println!(
                        "{}  {}  {}  {}",
                        slot.id, slot.created, slot.kdf.algorithm, slot.label
                    );
                }
            }
        }
        KeyCommand::Add {
            pipeline,
            new_passphrase,
            label,
        } => {
            let reference = SecretValueRef::from_argument(&new_passphrase, "--new-passphrase")
                .map_err(|e| CliError::config(anyhow::anyhow!(e)))?;
            let ctx = context(&pipeline)?;
            let passphrase = reference
                .resolve(&ctx.secrets)
                .map_err(|e| CliError::from(RunError::from(e)))?;
            let mut repository = ctx.open_repository(false).await?;
            let slot = repository.add_slot(&passphrase, &label).await?;
            println!("added key slot {}", slot.id);
        }
        KeyCommand::Remove { pipeline, slot } => {
            let ctx = context(&pipeline)?;
            let mut repository = ctx.open_repository(false).await?;
            let slots = repository.slots().await?;
            if !slots.iter().any(|s| s.id == slot) {
                return Err(CliError::config(anyhow::anyhow!(
                    "no key slot {slot:?} (see `runner key list`)"
                )));
            }
            if slots.len() == 1 {
                return Err(CliError::config(anyhow::anyhow!(
                    "{slot} is the only key slot; removing it would lock the repository forever"
                )));
            }
            repository.remove_slot(&slot).await?;
            println!("removed key slot {slot}");
        }
    }
    Ok(())
}
