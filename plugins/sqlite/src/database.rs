//! SQLite inside the guest, on files no other process touches (the host's snapshot
//! copies, a restore's temporary file): facts for the metadata, the integrity check (by
//! the host, natively),
//! and the header bytes that make a database WAL again.

use std::io::{Seek, SeekFrom, Write};

use runner_sdk::{Error, Metadata, Result};
use rusqlite::{Connection, OpenFlags};

/// Opens `path` read-only without locking: `immutable=1` tells SQLite nobody changes the
/// file, true of every file this plugin opens, and WASI has no locks to take anyway.
pub fn open_immutable(path: &str) -> Result<Connection> {
    let mut uri = String::from("file:");
    for c in path.chars() {
        match c {
            '%' | '?' | '#' => uri.push_str(&format!("%{:02X}", c as u32)),
            c => uri.push(c),
        }
    }
    uri.push_str("?immutable=1");
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Connection::open_with_flags(&uri, flags).map_err(|e| failed(path, e))
}

/// An SQLite error about `path` as the contract's error.
pub fn failed(path: &str, e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
            Error::corrupt(format!("{path}: {e}"))
        }
        _ => Error::internal(format!("{path}: {e}")),
    }
}

/// Page size, page count, user_version, application_id and the number of tables.
pub fn facts(db: &Connection, path: &str) -> Result<Metadata> {
    let pragma = |name: &str| -> Result<i64> {
        db.pragma_query_value(None, name, |row| row.get(0))
            .map_err(|e| failed(path, e))
    };
    let tables: i64 = db
        .query_row("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'", [], |row| row.get(0))
        .map_err(|e| failed(path, e))?;
    Ok(vec![
        ("page_size".to_string(), pragma("page_size")?.to_string()),
        ("page_count".to_string(), pragma("page_count")?.to_string()),
        (
            "user_version".to_string(),
            pragma("user_version")?.to_string(),
        ),
        (
            "application_id".to_string(),
            pragma("application_id")?.to_string(),
        ),
        ("tables".to_string(), tables.to_string()),
    ])
}

/// `PRAGMA integrity_check` of `path` (in the granted directory `root`), run natively by
/// the host: `Ok` when SQLite says "ok", else `corrupt` with its first findings.
pub fn integrity_check(root: &str, path: &str) -> Result<()> {
    let relative = path
        .strip_prefix(root.trim_end_matches('/'))
        .and_then(|p| p.strip_prefix('/'))
        .ok_or_else(|| Error::internal(format!("{path} is not under {root}")))?;
    let findings = runner_sdk::sqlite::integrity_check(root, relative.as_bytes(), 20)?;
    if findings == ["ok"] {
        return Ok(());
    }
    Err(Error::corrupt(format!(
        "{path}: PRAGMA integrity_check failed: {}",
        findings.join("; ")
    )))
}

/// Marks a rollback-mode database file as WAL, as `PRAGMA journal_mode=WAL` does: the
/// file format read and write versions (header bytes 18 and 19) become 2. The next
/// SQLite that opens it runs it in WAL mode.
pub fn mark_wal(file: &mut std::fs::File, path: &str) -> Result<()> {
    file.seek(SeekFrom::Start(18))
        .and_then(|_| file.write_all(&[2, 2]))
        .map_err(|e| Error::internal(format!("{path}: cannot set WAL mode in the header: {e}")))
}
