//! Consistent copies of live SQLite databases, taken by the host (a guest cannot take
//! SQLite's locks): `snapshot` copies a database in a granted directory into the stage's
//! scratch directory, where the plugin opens it read-only; `discard` removes the copy;
//! `integrity_check` runs `PRAGMA integrity_check` natively on a file in a granted directory.

pub use crate::bindings::host::runner::plugin::sqlite::{
    DatabaseCopy, discard, integrity_check, snapshot,
};
