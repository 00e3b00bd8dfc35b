//! Logging and progress through the host (`tracing` on the host side).

use crate::bindings::host::runner::plugin::log as wit;

pub use wit::Level;

pub fn log(level: Level, message: &str) {
    wit::log(level, message);
}

/// Progress of the current call's work in `unit`s ("bytes", "rows", …).
pub fn progress(done: u64, total: Option<u64>, unit: &str) {
    wit::progress(done, total, unit);
}

/// `runner_sdk::info!("copied {n} rows")`: formats and sends at the given level.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Info, &format!($($arg)*)) };
}
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Warn, &format!($($arg)*)) };
}
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Debug, &format!($($arg)*)) };
}
