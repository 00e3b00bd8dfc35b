//! What a running command reports as it goes — start, per-artifact progress, artifacts
//! done — for whoever watches: progress bars, `--json` lines, nothing under cron.

use std::sync::Arc;

use serde::Serialize;

/// One thing that happened. Serialized as `{"event": "<kind>", ...}` for `--json`.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The command started working on a pipeline.
    Start {
        command: &'static str,
        pipeline: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        snapshot: Option<String>,
    },
    /// The source listed what it will produce; `bytes_hint` is the sum of the sizes it
    /// expects, when it expects one for every artifact.
    Listed {
        artifacts: usize,
        bytes_hint: Option<u64>,
    },
    ArtifactStart {
        artifact: String,
        size_hint: Option<u64>,
    },
    /// Bytes of `artifact` read so far; `total_bytes` across every artifact of the command.
    Progress {
        artifact: String,
        bytes: u64,
        total_bytes: u64,
    },
    ArtifactDone {
        artifact: String,
        bytes: u64,
        stored: u64,
        objects: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        incomplete: Option<u64>,
    },
}

/// Receives events; implementations decide what to show and how often.
pub trait Observer: Send + Sync {
    fn event(&self, event: &Event);
}

/// Where a command sends its events; by default nowhere.
#[derive(Clone)]
pub struct Events(Arc<dyn Observer>);

struct Nobody;

impl Observer for Nobody {
    fn event(&self, _: &Event) {}
}

impl Default for Events {
    fn default() -> Self {
        Events(Arc::new(Nobody))
    }
}

impl Events {
    pub fn new(observer: Arc<dyn Observer>) -> Self {
        Events(observer)
    }

    pub fn emit(&self, event: Event) {
        self.0.event(&event);
    }
}
