//! Notifications: a webhook POST (a Slack-compatible `text` plus the whole event) or a
//! command with the event JSON on stdin, each attempt bounded by a timeout and retried
//! with backoff. A notification that cannot be delivered is logged; it never changes the
//! outcome of the run it reports.

use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::config::{NotifyConfig, NotifyOn, NotifyTarget, Pipeline, SecretResolver};
use crate::monitor::Problem;
use crate::repository::history::RunRecord;

/// What happened, as every notification target receives it.
#[derive(Clone, Debug, Serialize)]
pub struct Notification {
    /// "failure", "success" or "stale".
    pub event: NotifyOn,
    pub pipeline: String,
    pub host: String,
    /// RFC 3339.
    pub time: String,
    /// One line for humans (the webhook's `text`).
    pub summary: String,
    /// The run, for "failure" and "success".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunRecord>,
    /// What is wrong, for "stale".
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

impl Notification {
    /// For a finished run: "success" (also a partial one: it committed) or "failure".
    pub fn of_run(record: &RunRecord) -> Self {
        use crate::repository::history::Outcome;
        let event = match record.outcome {
            Outcome::Success | Outcome::Partial => NotifyOn::Success,
            Outcome::Failure | Outcome::Interrupted => NotifyOn::Failure,
        };
        let summary = match (&record.snapshot, &record.error) {
            (_, Some(error)) => format!(
                "runner: backup {} on {} failed (exit {}): {error}",
                record.pipeline, record.host, record.exit_code
            ),
            (Some(snapshot), None) => format!(
                "runner: backup {} on {} {}: snapshot {}, {} bytes read, {} stored in {:.1}s",
                record.pipeline,
                record.host,
                record.outcome.as_str(),
                &snapshot[..8.min(snapshot.len())],
                record.bytes_read,
                record.bytes_stored,
                record.seconds
            ),
            (None, None) => format!(
                "runner: backup {} {}",
                record.pipeline,
                record.outcome.as_str()
            ),
        };
        Notification {
            event,
            pipeline: record.pipeline.clone(),
            host: record.host.clone(),
            time: record.finished.clone(),
            summary,
            run: Some(record.clone()),
            problems: Vec::new(),
        }
    }

    /// For a pipeline that needs attention.
    pub fn stale(pipeline: &str, problems: Vec<Problem>) -> Self {
        let reasons: Vec<String> = problems.iter().map(Problem::describe).collect();
        Notification {
            event: NotifyOn::Stale,
            pipeline: pipeline.to_string(),
            host: crate::pipeline::backup::hostname(),
            time: jiff::Timestamp::now().to_string(),
            summary: format!("runner: backup {pipeline} is stale: {}", reasons.join("; ")),
            run: None,
            problems,
        }
    }

    /// The JSON every target gets: `text` for chat webhooks, `event` for everything else.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "text": self.summary, "event": self })
    }
}

/// Sends `notification` to every `[[notify]]` of the pipeline that wants its event.
/// Returns how many targets got it; failures are logged, never returned.
pub async fn send(
    pipeline: &Pipeline,
    secrets: &SecretResolver,
    notification: &Notification,
) -> usize {
    let mut delivered = 0;
    for (index, target) in pipeline.notify.iter().enumerate() {
        if !target.on.contains(&notification.event) {
            continue;
        }
        let what = format!("notify #{} ({})", index + 1, kind(target));
        match deliver(pipeline, secrets, target, notification).await {
            Ok(()) => {
                tracing::info!(notify = %what, event = notification.event.name(), "notification sent");
                delivered += 1;
            }
            Err(reason) => tracing::warn!(
                "{what}: the {} notification was not delivered: {reason}",
                notification.event.name()
            ),
        }
    }
    delivered
}

fn kind(target: &NotifyConfig) -> &'static str {
    match target.target {
        NotifyTarget::Webhook { .. } => "webhook",
        NotifyTarget::Command { .. } => "command",
    }
}

/// Every attempt of one target; the last attempt's error.
async fn deliver(
    pipeline: &Pipeline,
    secrets: &SecretResolver,
    target: &NotifyConfig,
    notification: &Notification,
) -> Result<(), String> {
    let body = notification.body();
    let mut attempt = 0;
    loop {
        let result = match &target.target {
            NotifyTarget::Webhook { url } => {
                let url = url.resolve(secrets).map_err(|e| e.to_string())?;
                post(url.expose(), &body, target.timeout).await
            }
            NotifyTarget::Command { command } => {
                run_command(pipeline, command, &body, target.timeout).await
            }
        };
        match result {
            Ok(()) => return Ok(()),
            Err(reason) if attempt >= target.retries => return Err(reason),
            Err(reason) => {
                let delay = Duration::from_millis(500 << attempt.min(6));
                tracing::debug!(
                    attempt,
                    "notification failed ({reason}); retrying in {delay:?}"
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

/// POSTs the body; any 2xx is delivered. Errors never show the URL (it may hold a token).
async fn post(url: &str, body: &serde_json::Value, timeout: Duration) -> Result<(), String> {
    crate::sinks::http::install_tls_provider();
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| e.without_url().to_string())?;
    let response = client
        .post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| crate::pipeline::job::error_chain(&e.without_url()))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the webhook answered {status}"))
    }
}

/// `/bin/sh -c COMMAND` in the pipeline's directory with the body on stdin.
async fn run_command(
    pipeline: &Pipeline,
    command: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<(), String> {
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .current_dir(pipeline.base_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start /bin/sh: {e}"))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = body.to_string();
    let finished = tokio::time::timeout(timeout, async {
        // A command that does not read its input is fine: ignore a closed pipe.
        let _ = stdin.write_all(input.as_bytes()).await;
        drop(stdin);
        child.wait_with_output().await
    })
    .await;
    match finished {
        Err(_) => Err(format!("timed out after {:?}", timeout)),
        Ok(Err(e)) => Err(format!("cannot wait for it: {e}")),
        Ok(Ok(output)) if output.status.success() => Ok(()),
        Ok(Ok(output)) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            Err(format!(
                "{}{}",
                output.status,
                stderr
                    .lines()
                    .rfind(|l| !l.trim().is_empty())
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default()
            ))
        }
    }
}
