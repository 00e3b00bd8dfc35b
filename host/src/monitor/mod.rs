//! Watching pipelines: their state from the repository (snapshots, run history),
//! staleness, notifications and Prometheus metrics.

pub mod metrics;
pub mod notify;
pub mod state;

pub use state::{PipelineState, Problem};
