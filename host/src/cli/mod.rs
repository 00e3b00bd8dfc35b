//! The command line: raw arguments (clap) → one subcommand module each → exit code.

mod check;
mod common;
mod daemon;
mod exit;
mod history;
mod key;
mod plugins;
mod progress;
mod prune;
mod restore;
mod run;
mod snapshots;
mod status;
mod unlock;
mod validate;
mod verify;

use clap::{Parser, Subcommand};

pub use exit::{CliError, ExitStatus};

#[derive(Parser, Debug)]
#[command(
    name = "runner",
    version,
    about = "WebAssembly-extensible backup pipeline runner"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Machine-readable output: JSON on stdout, JSON log lines on stderr.
    #[arg(long, global = true)]
    json: bool,

    /// More log output (-v: debug, -vv: trace). `RUNNER_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one backup: a new snapshot, committed only when everything was stored.
    Run(run::Args),
    /// Restore a snapshot (the latest by default), checking every stage's digest.
    Restore(restore::Args),
    /// Check snapshots: structure, or every byte with --read-data.
    Verify(verify::Args),
    /// List the snapshots of a pipeline's repository.
    Snapshots(snapshots::Args),
    /// Exit 8 (and notify `stale`) when the newest snapshot is older than max_age.
    Check(check::Args),
    /// Each pipeline at a glance: last run, snapshot age, size, success rate.
    Status(status::Args),
    /// Run pipelines on their schedules; serve /health, /metrics and POST /run/NAME.
    Daemon(daemon::Args),
    /// Every run's record: outcome, time, bytes, error.
    History(history::Args),
    /// Remove stale repository locks (every lock with --all).
    Unlock(unlock::Args),
    /// Forget snapshots by the pipeline's [retention] policy and remove unreferenced objects.
    Prune(prune::Args),
    /// Manage the repository's passphrases (key slots).
    Key(key::Args),
    /// Check a pipeline file: syntax, plugins, options, secrets and grants.
    Validate(validate::Args),
    /// List the built-in plugins, or inspect a component.
    Plugins(plugins::Args),
}

/// Global options every subcommand sees.
#[derive(Clone, Copy, Debug)]
pub struct Globals {
    pub json: bool,
}

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The daemon says what it starts and how runs end; the one-shot commands only warn.
    let quiet = !matches!(cli.command, Command::Daemon(_));
    init_logging(cli.verbose, cli.json, quiet);
    let globals = Globals { json: cli.json };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return exit::report(
                &CliError::new(
                    ExitStatus::Failure,
                    anyhow::anyhow!("cannot start the async runtime: {e}"),
                ),
                globals,
            );
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(args, globals).await,
            Command::Restore(args) => restore::run(args, globals).await,
            Command::Verify(args) => verify::run(args, globals).await,
            Command::Snapshots(args) => snapshots::run(args, globals).await,
            Command::History(args) => history::run(args, globals).await,
            Command::Daemon(args) => daemon::run(args, globals).await,
            Command::Check(args) => check::run(args, globals).await,
            Command::Status(args) => status::run(args, globals).await,
            Command::Unlock(args) => unlock::run(args, globals).await,
            Command::Prune(args) => prune::run(args, globals).await,
            Command::Key(args) => key::run(args, globals).await,
            Command::Validate(args) => validate::run(args, globals).await,
            Command::Plugins(args) => plugins::run(args, globals).await,
        }
    });
    match result {
        Ok(()) => ExitStatus::Success.into(),
        Err(error) => exit::report(&error, globals),
    }
}

fn init_logging(verbose: u8, json: bool, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 if quiet => "warn",
        0 => "info",
        1 => "info,runner=debug",
        _ => "debug,runner=trace",
    };
    let filter = EnvFilter::try_from_env("RUNNER_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only for a person at a terminal: journald, cron mail and log files get
    // plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(progress::LogWriter);
    if json {
        builder.json().init();
    } else if quiet {
        builder.without_time().with_target(false).init();
    } else {
        // A long-running process: every line says when.
        builder.with_target(false).init();
    }
}
