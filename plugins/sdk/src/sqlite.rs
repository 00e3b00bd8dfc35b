//! Consistent copies of live SQLite databases, taken by the host (a guest cannot take
//! SQLite's locks): `snapshot` copies a database in a granted directory into the stage's
//! scratch directory, where the plugin opens it read-only; `discard` removes the copy.

pub use crate::bindings::host::runner::plugin::sqlite::{DatabaseCopy, discard, snapshot};
