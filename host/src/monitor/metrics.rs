//! Pipelines' state as Prometheus metrics (text exposition via `prometheus-client`): for the
//! daemon's `GET /metrics` and the node-exporter textfile `runner run` writes.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::{encode, encode_registry};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::config::MonitorConfig;
use crate::monitor::PipelineState;
use crate::repository::history::Outcome;

type Labels = Vec<(String, String)>;
type Gauges = Family<Labels, Gauge<f64, AtomicU64>>;

/// Every metric, each a gauge per pipeline (label `pipeline`). All are gauges: the values
/// come from the repository, not from counting in this process. (Help texts end without a
/// period: the encoder adds one.)
const METRICS: &[(&str, &str)] = &[
    (
        "runner_last_success_timestamp_seconds",
        "Start of the newest run that committed a snapshot (Unix time)",
    ),
    (
        "runner_last_run_timestamp_seconds",
        "Start of the newest run (Unix time)",
    ),
    (
        "runner_last_run_success",
        "1 when the newest run committed a snapshot, else 0",
    ),
    ("runner_last_run_exit_code", "Exit code of the newest run"),
    (
        "runner_last_run_duration_seconds",
        "Duration of the newest run",
    ),
    (
        "runner_last_run_read_bytes",
        "Bytes the newest run read from its source",
    ),
    (
        "runner_last_run_stored_bytes",
        "Bytes the newest run stored",
    ),
    (
        "runner_newest_snapshot_timestamp_seconds",
        "Start of the newest snapshot (Unix time)",
    ),
    ("runner_snapshots", "Snapshots in the repository"),
    (
        "runner_repository_stored_bytes",
        "Bytes the snapshots store",
    ),
    ("runner_runs", "Runs in the history"),
    (
        "runner_failed_runs",
        "Failed or interrupted runs in the history",
    ),
    (
        "runner_stale",
        "1 when the newest snapshot is older than max_age (or there is none), else 0",
    ),
];

/// What only the daemon knows: its schedule and whether a run is going on.
const DAEMON_METRICS: &[(&str, &str)] = &[
    (
        "runner_next_run_timestamp_seconds",
        "Next scheduled run (Unix time)",
    ),
    (
        "runner_run_in_progress",
        "1 while the daemon runs the pipeline, else 0",
    ),
];

/// The metrics of `pipelines` (with their `[monitor]` settings) at `now`.
pub struct Metrics {
    registry: Registry,
    daemon: Vec<(&'static str, Gauges)>,
}

impl Metrics {
    pub fn new(pipelines: &[(&PipelineState, &MonitorConfig)], now: jiff::Timestamp) -> Self {
        let mut registry = Registry::default();
        let families: Vec<(&str, Gauges)> = METRICS
            .iter()
            .map(|(name, help)| {
                let family = Gauges::default();
                registry.register(*name, *help, family.clone());
                (*name, family)
            })
            .collect();
        let set = |name: &str, pipeline: &str, value: f64| {
            let (_, family) = families
                .iter()
                .find(|(n, _)| *n == name)
                .expect("a known metric");
            family
                .get_or_create(&vec![("pipeline".to_string(), pipeline.to_string())])
                .set(value);
        };
        for (state, monitor) in pipelines {
            let p = state.pipeline.as_str();
            let seconds = |rfc3339: &str| {
                rfc3339
                    .parse::<jiff::Timestamp>()
                    .map_or(0.0, |t| t.as_millisecond() as f64 / 1000.0)
            };
            if let Some(run) = state.last_success() {
                set(
                    "runner_last_success_timestamp_seconds",
                    p,
                    seconds(&run.started),
                );
            }
            if let Some(run) = state.last_run() {
                set(
                    "runner_last_run_timestamp_seconds",
                    p,
                    seconds(&run.started),
                );
                let committed = matches!(run.outcome, Outcome::Success | Outcome::Partial);
                set("runner_last_run_success", p, f64::from(u8::from(committed)));
                set("runner_last_run_exit_code", p, f64::from(run.exit_code));
                set("runner_last_run_duration_seconds", p, run.seconds);
                set("runner_last_run_read_bytes", p, run.bytes_read as f64);
                set("runner_last_run_stored_bytes", p, run.bytes_stored as f64);
            }
            if let Some(newest) = state.newest_snapshot {
                set(
                    "runner_newest_snapshot_timestamp_seconds",
                    p,
                    newest.as_millisecond() as f64 / 1000.0,
                );
            }
            set("runner_snapshots", p, state.snapshots as f64);
            set(
                "runner_repository_stored_bytes",
                p,
                state.stored_bytes as f64,
            );
            set("runner_runs", p, state.runs_total as f64);
            set("runner_failed_runs", p, state.failures_total as f64);
            let stale = state
                .problems(monitor, now)
                .iter()
                .any(|problem| matches!(problem, crate::monitor::Problem::Stale { .. }));
            set("runner_stale", p, f64::from(u8::from(stale)));
        }
        Metrics {
            registry,
            daemon: Vec::new(),
        }
    }

    /// Adds the daemon's view of `pipeline`: its next scheduled run, a run in progress.
    pub fn add_daemon(&mut self, pipeline: &str, next_run: Option<jiff::Timestamp>, running: bool) {
        if self.daemon.is_empty() {
            for (name, help) in DAEMON_METRICS {
                let family = Gauges::default();
                self.registry.register(*name, *help, family.clone());
                self.daemon.push((*name, family));
            }
        }
        let labels = vec![("pipeline".to_string(), pipeline.to_string())];
        let [(_, next), (_, in_progress)] = self.daemon.as_slice() else {
            unreachable!("both daemon metrics are registered")
        };
        if let Some(next_run) = next_run {
            next.get_or_create(&labels)
                .set(next_run.as_millisecond() as f64 / 1000.0);
        }
        in_progress
            .get_or_create(&labels)
            .set(f64::from(u8::from(running)));
    }

    /// The OpenMetrics text exposition a scrape gets (ends with `# EOF`).
    pub fn exposition(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// The text for node-exporter's textfile collector (no EOF marker).
    pub fn textfile(&self) -> String {
        let mut out = String::new();
        encode_registry(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Content type of [`exposition`](Self::exposition).
    pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// Content type of [`textfile`](Self::textfile): Prometheus' classic text format (the
    /// gauges read the same in both).
    pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
}

/// Replaces `path` with the metrics atomically (a temporary file renamed over it), so
/// node-exporter never reads half a file.
pub fn write_textfile(path: &std::path::Path, metrics: &Metrics) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut file, metrics.textfile().as_bytes())?;
    // Readable by the exporter's user, as a file written without a temporary would be.
    file.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}
