//! The SQLite snapshot service: transaction-consistent copies of live databases in granted
//! directories, taken by the host into the stage's scratch directory.
//!
//! A guest cannot do this itself: WASI has no fcntl locks or shared memory, so SQLite in
//! a guest neither sees other processes' locks nor can open a WAL database. The host opens
//! the database read-only with the system's locking, starts a read transaction (waiting
//! up to the plugin's busy timeout for writers), and copies every page with the online
//! backup API in one step inside that transaction. One step matters: a stepwise backup
//! restarts whenever another connection writes, so a constant stream of writers would
//! keep it from ever finishing. In WAL mode writers carry on while the copy is made; in
//! rollback-journal mode they wait for the copy (their busy timeout must cover it).
//!
//! The copy is converted to rollback-journal mode (a copy of a WAL database says "WAL"
//! in its header, which a guest cannot open); the original's journal mode is returned so
//! the plugin can record it and put it back on restore.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, ffi};

use crate::capabilities::HostState;
use crate::engine::bindings::services::runner::plugin::sqlite::{DatabaseCopy, Host};
use crate::engine::bindings::services::runner::plugin::types::Error;

/// Name prefix of the copies in the scratch directory.
const COPY_PREFIX: &str = "snapshot-";

/// A private directory the host writes snapshot copies into and the plugin may only read.
/// Removed, with whatever is left in it, when the last stage instance holding it ends.
pub struct Scratch {
    dir: tempfile::TempDir,
    /// The directory's canonical path: also the plugin's name for it (its preopen).
    path: PathBuf,
    copies: AtomicU64,
}

impl Scratch {
    /// A new directory under `parent` (the system's temporary directory when none).
    pub fn create(parent: Option<&Path>) -> std::io::Result<Arc<Scratch>> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("runner-sqlite-");
        let dir = match parent {
            Some(parent) => builder.tempdir_in(parent)?,
            None => builder.tempdir()?,
        };
        let path = dir.path().canonicalize()?;
        Ok(Arc::new(Scratch {
            dir,
            path,
            copies: AtomicU64::new(0),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn next_copy(&self) -> PathBuf {
        let n = self.copies.fetch_add(1, Ordering::Relaxed);
        self.path.join(format!("{COPY_PREFIX}{n}.db"))
    }

    /// A copy this scratch directory holds, named as the plugin names it.
    fn copy(&self, path: &str) -> Option<PathBuf> {
        let path = Path::new(path);
        let name = path.file_name()?.to_str()?;
        (path.parent() == Some(&self.path) && name.starts_with(COPY_PREFIX))
            .then(|| self.dir.path().join(name))
    }
}

impl Host for HostState {
    async fn snapshot(
        &mut self,
        root: String,
        path: Vec<u8>,
        busy_timeout_ms: u32,
        count_rows: bool,
    ) -> wasmtime::Result<Result<DatabaseCopy, Error>> {
        let Some(scratch) = self.sqlite_scratch.clone() else {
            return Ok(Err(Error::AccessDenied(
                "this stage has no scratch directory for SQLite snapshots (only the built-in sqlite source has one)".into(),
            )));
        };
        let source = match self.files.regular_file(&root, &path).await {
            Ok(source) => source,
            Err(e) => return Ok(Err(e)),
        };
        let dest = scratch.next_copy();
        let timeout = Duration::from_millis(busy_timeout_ms.into());
        let taken = tokio::task::spawn_blocking(move || {
            let taken = copy_database(&source, &dest, timeout, count_rows);
            if taken.is_err() {
                // No partial copy is left behind for the plugin to read.
                let _ = std::fs::remove_file(&dest);
            }
            taken
        })
        .await
        .unwrap_or_else(|e| Err(Error::Internal(format!("SQLite snapshot failed: {e}"))));
        Ok(taken)
    }

    async fn integrity_check(
        &mut self,
        root: String,
        path: Vec<u8>,
        max_findings: u32,
    ) -> wasmtime::Result<Result<Vec<String>, Error>> {
        let file = match self.files.regular_file(&root, &path).await {
            Ok(file) => file,
            Err(e) => return Ok(Err(e)),
        };
        Ok(
            tokio::task::spawn_blocking(move || check_integrity(&file, max_findings))
                .await
                .unwrap_or_else(|e| Err(Error::Internal(format!("integrity check failed: {e}")))),
        )
    }

    async fn discard(&mut self, path: String) -> wasmtime::Result<Result<(), Error>> {
        let Some(copy) = self.sqlite_scratch.as_ref().and_then(|s| s.copy(&path)) else {
            return Ok(Err(Error::AccessDenied(format!(
                "{path} is not a snapshot copy of this stage"
            ))));
        };
        Ok(match std::fs::remove_file(&copy) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Internal(format!("cannot remove {path}: {e}"))),
        })
    }
}

/// Copies `source` into the new file `dest` as one consistent state; returns what the
/// plugin needs to know about the copy.
fn copy_database(
    source: &Path,
    dest: &Path,
    busy_timeout: Duration,
    count_rows: bool,
) -> Result<DatabaseCopy, Error> {
    let shown = source.display().to_string();
    let failed = |e: rusqlite::Error| sqlite_error(e, &shown, busy_timeout);
    // Read-only: the snapshot never writes to the original, and closing the last
    // connection to a WAL database does not checkpoint it. NOFOLLOW: the path was
    // checked component by component; a symlink swapped in since is refused.
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NOFOLLOW
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let original = Connection::open_with_flags(source, flags).map_err(failed)?;
    original.busy_timeout(busy_timeout).map_err(failed)?;
    // The read transaction starts at the first read: reading the schema takes the shared
    // lock (waiting for writers up to the timeout) and proves the file is a database.
    original.execute_batch("BEGIN").map_err(failed)?;
    original
        .query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
        .map_err(failed)?;
    let journal_mode: String = original
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .map_err(failed)?;

    let dest_shown = dest.display().to_string();
    let dest_failed = |e: rusqlite::Error| Error::Internal(format!("{dest_shown}: {e}"));
    let mut copy = Connection::open_with_flags(
        dest,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NOFOLLOW
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(dest_failed)?;
    // A scratch copy is rewritten from scratch if anything fails: no journal, no syncs.
    copy.pragma_update(None, "journal_mode", "OFF")
        .map_err(dest_failed)?;
    copy.pragma_update(None, "synchronous", "OFF")
        .map_err(dest_failed)?;
    {
        let backup = rusqlite::backup::Backup::new(&original, &mut copy).map_err(dest_failed)?;
        // -1: every page in this one step, inside the read transaction opened above.
        match backup.step(-1).map_err(failed)? {
            rusqlite::backup::StepResult::Done => {}
            other => {
                return Err(Error::Remote(crate::engine::bindings::RemoteError {
                    message: format!(
                        "{shown}: the backup did not complete in one step ({other:?})"
                    ),
                    retryable: true,
                }));
            }
        }
    }
    original.execute_batch("COMMIT").map_err(failed)?;
    drop(original);
    // The copy's header still says WAL when the original is in WAL mode; rollback mode
    // makes it a self-contained file any SQLite (also one without shared memory) opens.
    copy.pragma_update(None, "journal_mode", "DELETE")
        .map_err(dest_failed)?;
    // Counted on the copy: the same rows, and writers of the original need not wait.
    let row_counts = if count_rows {
        count_rows_of(&copy).map_err(|e| match e.sqlite_error_code() {
            Some(ffi::ErrorCode::DatabaseCorrupt) => Error::Corrupt(format!(
                "{shown}: counting rows: {e}: the database is damaged (see PRAGMA integrity_check); \
                 with count_rows = false it is backed up as it is"
            )),
            _ => dest_failed(e),
        })?
    } else {
        Vec::new()
    };
    drop(copy);
    let size = std::fs::metadata(dest)
        .map_err(|e| Error::Internal(format!("{dest_shown}: {e}")))?
        .len();
    Ok(DatabaseCopy {
        path: dest_shown,
        size,
        journal_mode: journal_mode.to_ascii_lowercase(),
        row_counts,
    })
}

/// `count(*)` of every ordinary table, in name order (virtual tables are skipped: their
/// module may be missing, and their data lives in ordinary tables that are counted).
fn count_rows_of(db: &Connection) -> rusqlite::Result<Vec<(String, u64)>> {
    let tables: Vec<String> = db
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             AND sql NOT LIKE 'CREATE VIRTUAL%' ORDER BY name",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    tables
        .into_iter()
        .map(|table| {
            let sql = format!("SELECT count(*) FROM \"{}\"", table.replace('"', "\"\""));
            let rows: i64 = db.query_row(&sql, [], |row| row.get(0))?;
            Ok((table, rows as u64))
        })
        .collect()
}

/// `PRAGMA integrity_check(max)` of `file`, opened read-only: SQLite's findings.
fn check_integrity(file: &Path, max_findings: u32) -> Result<Vec<String>, Error> {
    let shown = file.display().to_string();
    let failed = |e: rusqlite::Error| sqlite_error(e, &shown, Duration::ZERO);
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NOFOLLOW
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let db = Connection::open_with_flags(file, flags).map_err(failed)?;
    let mut check = db
        .prepare(&format!("PRAGMA integrity_check({})", max_findings.max(1)))
        .map_err(failed)?;
    let findings = check
        .query_map([], |row| row.get(0))
        .and_then(|rows| rows.collect::<Result<Vec<String>, _>>());
    match findings {
        // Damage bad enough to stop the check is a finding too.
        Err(e) if e.sqlite_error_code() == Some(ffi::ErrorCode::DatabaseCorrupt) => {
            Ok(vec![e.to_string()])
        }
        other => other.map_err(failed),
    }
}

/// SQLite's error as the contract's, with what happened in words an operator acts on.
fn sqlite_error(e: rusqlite::Error, shown: &str, busy_timeout: Duration) -> Error {
    let code = e.sqlite_error_code();
    match code {
        Some(ffi::ErrorCode::DatabaseBusy | ffi::ErrorCode::DatabaseLocked) => {
            Error::Remote(crate::engine::bindings::RemoteError {
                message: format!(
                    "{shown}: the database stayed locked by another connection for longer than the busy timeout ({} ms); no snapshot was taken",
                    busy_timeout.as_millis()
                ),
                retryable: true,
            })
        }
        Some(ffi::ErrorCode::NotADatabase) => Error::InvalidInput(format!(
            "{shown} is not an SQLite database (its header is not \"SQLite format 3\")"
        )),
        Some(ffi::ErrorCode::DatabaseCorrupt) => {
            Error::Corrupt(format!("{shown}: the database is corrupt: {e}"))
        }
        Some(ffi::ErrorCode::CannotOpen | ffi::ErrorCode::PermissionDenied) => {
            Error::AccessDenied(format!("{shown}: cannot open: {e}"))
        }
        _ => Error::Internal(format!("{shown}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(path: &Path, wal: bool) -> Connection {
        let db = Connection::open(path).unwrap();
        if wal {
            db.pragma_update(None, "journal_mode", "WAL").unwrap();
        }
        db.execute_batch(
            "CREATE TABLE t(x INTEGER PRIMARY KEY, y TEXT); INSERT INTO t(y) VALUES ('a'), ('b');",
        )
        .unwrap();
        db
    }

    #[test]
    fn a_wal_database_is_copied_in_rollback_mode_with_uncheckpointed_commits() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("live.db");
        let writer = database(&source, true);
        writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        writer
            .execute("INSERT INTO t(y) VALUES ('in the wal')", [])
            .unwrap();
        let dest = dir.path().join("copy.db");
        let snapshot = copy_database(&source, &dest, Duration::from_millis(100), true).unwrap();
        assert_eq!(snapshot.row_counts, [("t".to_string(), 3)]);
        assert_eq!(snapshot.journal_mode, "wal");
        assert_eq!(snapshot.size, std::fs::metadata(&dest).unwrap().len());
        let header = std::fs::read(&dest).unwrap();
        assert_eq!((header[18], header[19]), (1, 1), "rollback-mode header");
        let copy = Connection::open(&dest).unwrap();
        let rows: i64 = copy
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 3);
    }

    #[test]
    fn a_lock_held_past_the_timeout_and_a_foreign_file_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("locked.db");
        let holder = database(&source, false);
        holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let dest = dir.path().join("copy.db");
        match copy_database(&source, &dest, Duration::from_millis(50), false) {
            Err(Error::Remote(e)) => {
                assert!(e.message.contains("busy timeout (50 ms)"), "{}", e.message)
            }
            other => panic!("expected a busy error, got {other:?}"),
        }
        holder.execute_batch("COMMIT").unwrap();

        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "not a database, but long enough to have a header ....................................................................").unwrap();
        assert!(matches!(
            check_integrity(&text, 5),
            Err(Error::InvalidInput(_))
        ));
        assert_eq!(check_integrity(&source, 5).unwrap(), ["ok"]);
        match copy_database(
            &text,
            &dir.path().join("copy2.db"),
            Duration::from_millis(50),
            false,
        ) {
            Err(Error::InvalidInput(m)) => assert!(m.contains("is not an SQLite database"), "{m}"),
            other => panic!("expected invalid-input, got {other:?}"),
        }
    }
}
