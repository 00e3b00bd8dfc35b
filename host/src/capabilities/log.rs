//! Plugin logging and progress, forwarded to `tracing` with the plugin's name.

use crate::capabilities::HostState;
use crate::engine::bindings::services::runner::plugin::log::{Host, Level};

/// Longest message a plugin may log in one call; longer ones are cut.
const MAX_MESSAGE: usize = 4096;

impl Host for HostState {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let mut message = self.scrub(&message);
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }

    async fn progress(
        &mut self,
        done: u64,
        total: Option<u64>,
        unit: String,
    ) -> wasmtime::Result<()> {
        tracing::trace!(plugin = &*self.plugin, done, total, unit, "progress");
        Ok(())
    }
}
