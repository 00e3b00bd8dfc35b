//! Running `[hooks]` commands: `sh -c` in the pipeline file's directory, the run's outcome
//! in `RUNNER_*` variables, output logged, killed with its process group at the timeout.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::config::{HookPoint, OnHookError, Pipeline};

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("hooks.{hook} command failed: {reason}")]
    Failed { hook: &'static str, reason: String },
}

/// Runs the hook at `point`, if the pipeline has one, with `env` added to the runner's
/// own environment (hooks are the operator's commands, like cron's). `Ok` when it
/// succeeded, is absent, or failed under `on_error = "warn"`.
pub async fn run(
    pipeline: &Pipeline,
    point: HookPoint,
    env: &[(&'static str, String)],
) -> Result<(), HookError> {
    let Some(command) = pipeline.hooks.command(point) else {
        return Ok(());
    };
    let hook = point.name();
    tracing::info!(hook, "running hook");
    let result = execute(pipeline, command, hook, env).await;
    match (result, pipeline.hooks.on_error) {
        (Ok(()), _) => Ok(()),
        (Err(reason), OnHookError::Warn) => {
            tracing::warn!(hook, "hook failed (on_error = \"warn\"): {reason}");
            Ok(())
        }
        (Err(reason), OnHookError::Fail) => Err(HookError::Failed { hook, reason }),
    }
}

async fn execute(
    pipeline: &Pipeline,
    command: &str,
    hook: &'static str,
    env: &[(&'static str, String)],
) -> Result<(), String> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .current_dir(pipeline.base_dir())
        .env("RUNNER_HOOK", hook)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills what the shell started too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start /bin/sh: {e}"))?;
    let pid = child.id();
    let stdout = log_lines(child.stdout.take(), hook, false);
    let stderr = log_lines(child.stderr.take(), hook, true);
    let timeout = pipeline.hooks.timeout;
    let waited = tokio::time::timeout(timeout, async {
        let (status, _, last_error) = tokio::join!(child.wait(), stdout, stderr);
        (status, last_error)
    })
    .await;
    match waited {
        Ok((Ok(status), _)) if status.success() => Ok(()),
        Ok((Ok(status), last_error)) => Err(match (status.code(), last_error) {
            (Some(code), Some(line)) => format!("exit status {code}: {line}"),
            (Some(code), None) => format!("exit status {code}"),
            (None, _) => format!("killed by a signal ({status})"),
        }),
        Ok((Err(e), _)) => Err(format!("cannot wait for it: {e}")),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            let _ = child.wait().await;
            Err(format!(
                "timed out after {}s (hooks.timeout) and was killed",
                timeout.as_secs_f64()
            ))
        }
    }
}

/// Logs a hook's output line by line; returns the last line of stderr, for the error.
async fn log_lines(
    pipe: Option<impl tokio::io::AsyncRead + Unpin>,
    hook: &'static str,
    stderr: bool,
) -> Option<String> {
    let mut lines = BufReader::new(pipe?).lines();
    let mut last = None;
    while let Ok(Some(line)) = lines.next_line().await {
        if stderr {
            tracing::info!(hook, stream = "stderr", "{line}");
            if !line.trim().is_empty() {
                last = Some(line);
            }
        } else {
            tracing::info!(hook, stream = "stdout", "{line}");
        }
    }
    last
}
