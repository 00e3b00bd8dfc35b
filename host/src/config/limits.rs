//! Per-stage resource caps (memory, time, chunk size) and their defaults.

use std::time::Duration;

/// What one plugin instance may use before the engine stops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory cap, bytes.
    pub memory: u64,
    /// Wall clock for one call into the plugin.
    pub call_timeout: Duration,
    /// Wall clock for the whole run of this stage.
    pub run_timeout: Duration,
    /// Bytes a single call may return.
    pub max_chunk: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 256 << 20,
            call_timeout: Duration::from_secs(300),
            run_timeout: Duration::from_secs(24 * 3600),
            max_chunk: 16 << 20,
        }
    }
}
