//! `runner daemon PIPELINE…|DIR`: the scheduler in the foreground (for systemd, a
//! container, a terminal); exits 0 after a clean stop on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::common::{contexts, parse_duration};
use crate::cli::{CliError, Globals};
use crate::config::SecretValueRef;
use crate::daemon::{self, Clock, Options};
use crate::pipeline::job::Interrupt;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Pipeline files or directories of them (default: ./pipelines). Each runs on its
    /// `[pipeline] schedule`; one without a schedule runs only on `POST /run/NAME`.
    pipelines: Vec<PathBuf>,
    /// Serve GET /health, GET /metrics and POST /run/NAME on this address.
    #[arg(long, value_name = "ADDRESS", default_value = "127.0.0.1:9184")]
    listen: SocketAddr,
    /// Serve nothing.
    #[arg(long)]
    no_listen: bool,
    /// The bearer token POST /run/NAME requires, as a secret reference:
    /// '${env:RUNNER_DAEMON_TOKEN}' or '${file:/run/secrets/token}'. Without it POST /run
    /// is refused.
    #[arg(long, value_name = "SECRET_REF")]
    token: Option<String>,
    /// On SIGTERM or Ctrl-C, let running backups go on this long ("10m") before they
    /// are aborted (no snapshot, no lock left). A second signal quits at once.
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
    grace: Duration,
    /// Re-read each repository this often, for runs by other processes and /metrics.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    refresh: Duration,
}

pub async fn run(args: Args, _globals: Globals) -> Result<(), CliError> {
    let contexts = contexts(&args.pipelines)?;
    for (i, ctx) in contexts.iter().enumerate() {
        if let Some(other) = contexts[..i]
            .iter()
            .find(|c| c.pipeline.name == ctx.pipeline.name)
        {
            return Err(CliError::config(anyhow::anyhow!(
                "{} and {} are both named \"{}\"; pipeline names must be unique (set [pipeline] name)",
                other.pipeline.path.display(),
                ctx.pipeline.path.display(),
                ctx.pipeline.name
            )));
        }
    }
    let listen = (!args.no_listen).then_some(args.listen);
    if listen.is_none() && contexts.iter().all(|c| c.pipeline.schedule.is_none()) {
        return Err(CliError::config(anyhow::anyhow!(
            "nothing to do: no pipeline has a [pipeline] schedule and --no-listen leaves no POST /run"
        )));
    }
    let token = match &args.token {
        None => None,
        Some(reference) => {
            let value = SecretValueRef::from_argument(reference, "--token")
                .map_err(|e| CliError::config(anyhow::anyhow!(e)))?;
            let secrets = crate::config::SecretResolver::from_process_env();
            let token = value.resolve(&secrets).map_err(CliError::config)?;
            if token.expose().trim().is_empty() {
                return Err(CliError::config(anyhow::anyhow!(
                    "--token: the secret is empty"
                )));
            }
            Some(token)
        }
    };
    let shutdown = Interrupt::on_signals()
        .map_err(|e| CliError::failure(anyhow::anyhow!("cannot watch for signals: {e}")))?;
    let options = Options {
        listen,
        token,
        grace: args.grace,
        refresh: args.refresh,
        clock: Clock::from_env(),
    };
    let names: Vec<&str> = contexts.iter().map(|c| c.pipeline.name.as_str()).collect();
    tracing::info!(
        "runner daemon: {} pipeline(s): {}",
        names.len(),
        names.join(", ")
    );
    daemon::run(contexts, options, shutdown)
        .await
        .map_err(|e| CliError::failure(anyhow::anyhow!(e)))
}
