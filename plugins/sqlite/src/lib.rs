//! The `sqlite` source: transaction-consistent backups of live SQLite databases (rollback
//! journal or WAL) and atomic, integrity-checked restores.
//!
//! # Configuration
//!
//! ```toml
//! [source]
//! type = "sqlite"
//! paths = ["app.db", "tenants/*.sqlite"]  # files or globs; their directories are granted read-only
//! busy_timeout = "5s"      # how long a snapshot waits for writers' locks (ms, s or m)
//! count_rows = true        # per-table row counts in the metadata (counted by the host on the copy)
//! scratch_dir = "/var/tmp" # where the host puts snapshot copies (default: the system temp dir)
//! ```
//!
//! # Backup
//!
//! The guest cannot take SQLite's locks (WASI has no fcntl locks, shared memory or WAL),
//! so each database is copied by the host's `sqlite` service: a read transaction and
//! the online backup API in one step, into a scratch directory this plugin reads. The
//! copy is one committed state of the database, whatever writers do meanwhile.
//!
//! Entries of `paths` are paired with the directories the host granted, in order: the
//! literal part of an entry (up to the last `/` before any glob character) is granted,
//! the rest is matched below it (`*` and `?` within a name, `**` across directories).
//! A glob skips `-wal`, `-shm` and `-journal` files; an entry that matches nothing fails.
//!
//! # Artifacts
//!
//! One per database, named by its path below its entry's directory (`app.db`,
//! `tenants/a.sqlite`), media type `application/vnd.sqlite3`, schema version 1: the
//! snapshot file itself, in rollback-journal mode. Metadata: `path` (the original),
//! `journal_mode` (the original's), then after reading `bytes`, `page_size`,
//! `page_count`, `user_version`, `application_id`, `tables` and `rows:<table>` per table.
//!
//! # Restore
//!
//! `--target` names a file (one database) or a directory (each database at its artifact
//! name below it); `--in-place` writes each database back to its `path`. An existing
//! database is replaced only with `--overwrite`. Each database is written to a temporary
//! file next to its destination, synced, checked with `PRAGMA integrity_check`, given its
//! original journal mode back, and renamed over the destination on commit (after the
//! replaced database's `-wal`, `-shm` and `-journal` files are removed: they belong to
//! the old file and would corrupt the new one). Stop the application first: a process
//! holding the old file open keeps writing to it. `--mode` does not apply: a database
//! is always restored whole. Report metadata: `path`, `bytes`,
//! `integrity_check`, `page_size`, `page_count`, `journal_mode`, `replaced`.

mod backup;
mod database;
mod restore;

use runner_sdk::{Error, Plugin, RestoreOptions, Result, Source};

use crate::backup::SqliteBackup;
use crate::restore::SqliteRestore;

/// Media type of an artifact: one SQLite database file.
pub const MEDIA_TYPE: &str = "application/vnd.sqlite3";
/// Version of the artifact format (the database file as SQLite writes it).
pub const SCHEMA_VERSION: u32 = 1;

/// The stage's table.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Database files or globs; the host grants the directory of each.
    paths: Vec<String>,
    #[serde(default = "default_busy_timeout")]
    busy_timeout: String,
    #[serde(default = "yes")]
    count_rows: bool,
    /// Read by the host (where the scratch directory is created); nothing for the plugin.
    #[serde(default)]
    #[allow(dead_code)]
    scratch_dir: Option<String>,
}

fn default_busy_timeout() -> String {
    "5s".into()
}

fn yes() -> bool {
    true
}

/// The configuration, checked.
pub struct Settings {
    paths: Vec<String>,
    busy_timeout_ms: u32,
    count_rows: bool,
}

struct Sqlite {
    settings: std::rc::Rc<Settings>,
}

impl Plugin for Sqlite {
    const NAME: &'static str = "sqlite";
    const DESCRIPTION: &'static str = "live SQLite databases: consistent snapshots (WAL or rollback journal), verified atomic restore";
    type Config = Config;

    fn new(config: Config) -> Result<Self> {
        if config.paths.is_empty() {
            return Err(Error::config_field(
                "paths",
                "list at least one database file or glob",
            ));
        }
        for (i, path) in config.paths.iter().enumerate() {
            backup::split_entry(path)
                .map_err(|why| Error::config_field(format!("paths[{i}]"), why))?;
        }
        let busy_timeout_ms = parse_duration_ms(&config.busy_timeout).ok_or_else(|| {
            Error::config_field(
                "busy_timeout",
                "expected a duration such as \"500ms\", \"5s\" or \"1m\" (at most 1h)",
            )
        })?;
        Ok(Sqlite {
            settings: std::rc::Rc::new(Settings {
                paths: config.paths,
                busy_timeout_ms,
                count_rows: config.count_rows,
            }),
        })
    }
}

/// `500ms`, `5s`, `2m` as milliseconds; at most an hour.
fn parse_duration_ms(text: &str) -> Option<u32> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let number: u64 = number.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => number,
        "s" => number.checked_mul(1000)?,
        "m" => number.checked_mul(60_000)?,
        _ => return None,
    };
    (ms <= 3_600_000).then_some(ms as u32)
}

impl Source for Sqlite {
    type Backup = SqliteBackup;
    type Restore = SqliteRestore;

    fn begin_backup(&self, _share_token: Option<String>) -> Result<SqliteBackup> {
        SqliteBackup::begin(self.settings.clone())
    }

    fn begin_restore(&self, options: RestoreOptions) -> Result<SqliteRestore> {
        SqliteRestore::begin(options)
    }
}

runner_sdk::export_source!(Sqlite);

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        assert_eq!(super::parse_duration_ms("250ms"), Some(250));
        assert_eq!(super::parse_duration_ms("5s"), Some(5000));
        assert_eq!(super::parse_duration_ms("2m"), Some(120_000));
        assert_eq!(super::parse_duration_ms("5"), None);
        assert_eq!(super::parse_duration_ms("2h"), None);
    }
}
