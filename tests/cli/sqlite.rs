//! The sqlite source end to end through the real binary, on real SQLite files: snapshots
//! under a constant writer (WAL and rollback journal), exact round trips, in-place and
//! overwrite rules, locked and foreign files.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::Connection;

use crate::stderr;

/// A directory holding `db/`, a pipeline backing up `paths` from it, and a repository.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(source_options: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("db")).unwrap();
        let pipeline = format!(
            "[source]\ntype = \"sqlite\"\n{source_options}\n\n[[transform]]\ntype = \"checksum\"\n\n[[transform]]\ntype = \"zstd\"\nlevel = 3\n\n[sink]\ntype = \"local\"\npath = \"repo\"\n"
        );
        std::fs::write(dir.path().join("pipeline.toml"), pipeline).unwrap();
        Setup { dir }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn runner(&self, args: &[&str]) -> Output {
        crate::runner(args, self.dir.path())
    }

    fn ok(&self, args: &[&str]) -> String {
        crate::succeeded(&self.runner(args), args)
    }

    fn snapshot_count(&self) -> usize {
        let listed = self.ok(&["snapshots", "pipeline.toml", "--json"]);
        serde_json::from_str::<Vec<serde_json::Value>>(&listed)
            .unwrap()
            .len()
    }
}

/// A database with a `rows` table and a `total` row that every writer transaction keeps
/// equal to the sum of `rows.v`, plus padding so a copy takes a moment.
fn ledger(path: &Path, journal_mode: &str) {
    let db = Connection::open(path).unwrap();
    db.pragma_update(None, "journal_mode", journal_mode)
        .unwrap();
    db.execute_batch(
        "CREATE TABLE rows(id INTEGER PRIMARY KEY, v INTEGER NOT NULL, pad BLOB);
         CREATE INDEX rows_v ON rows(v);
         CREATE TABLE total(id INTEGER PRIMARY KEY CHECK (id = 1), sum INTEGER NOT NULL);
         INSERT INTO total VALUES (1, 0);",
    )
    .unwrap();
    let tx = db.unchecked_transaction().unwrap();
    for i in 0..3000i64 {
        tx.execute(
            "INSERT INTO rows(v, pad) VALUES (?1, zeroblob(500))",
            [i % 97],
        )
        .unwrap();
    }
    tx.execute("UPDATE total SET sum = (SELECT sum(v) FROM rows)", [])
        .unwrap();
    tx.commit().unwrap();
}

/// Commits continuously until stopped: one row inserted and the total updated per
/// transaction, counted in `commits`.
fn writer(
    path: PathBuf,
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let db = Connection::open(&path).unwrap();
        db.busy_timeout(Duration::from_secs(30)).unwrap();
        let mut v = 1i64;
        while !stop.load(Ordering::Relaxed) {
            let tx = db.unchecked_transaction().and_then(|tx| {
                tx.execute("INSERT INTO rows(v, pad) VALUES (?1, randomblob(200))", [v])?;
                tx.execute("UPDATE total SET sum = sum + ?1", [v])?;
                tx.commit()
            });
            tx.unwrap();
            commits.fetch_add(1, Ordering::Relaxed);
            v = v % 1000 + 1;
            // A breath between commits, as applications have: SQLite's locks are not
            // fair, and in rollback-journal mode a writer committing back to back in a
            // tight loop starves every reader, whoever it is.
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

/// `PRAGMA integrity_check` of a database file, and whether its total equals its rows.
fn check_ledger(path: &Path) -> (String, i64, i64, i64) {
    let db = Connection::open(path).unwrap();
    let integrity: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    let total: i64 = db
        .query_row("SELECT sum FROM total", [], |r| r.get(0))
        .unwrap();
    let (rows, sum): (i64, i64) = db
        .query_row("SELECT count(*), sum(v) FROM rows", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    (integrity, total, sum, rows)
}

fn consistent_snapshots_under_a_constant_writer(journal_mode: &str) {
    let setup = Setup::new("paths = [\"db/app.db\"]\nbusy_timeout = \"30s\"");
    let db = setup.path("db/app.db");
    ledger(&db, journal_mode);
    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let handle = writer(db.clone(), stop.clone(), commits.clone());

    // 20 runs in each journal mode, as the issue asks (about 8 s for both); SQLITE_RUNS overrides.
    let runs: usize = std::env::var("SQLITE_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let mut seen_rows = Vec::new();
    for run in 0..runs {
        let before = commits.load(Ordering::Relaxed);
        setup.ok(&["run", "pipeline.toml"]);
        // The writer kept committing around (and, in WAL mode, during) the run.
        while commits.load(Ordering::Relaxed) == before {
            std::thread::sleep(Duration::from_millis(5));
        }
        let target = setup.path(&format!("restored/{run}.db"));
        let out = setup.ok(&[
            "restore",
            "pipeline.toml",
            "--target",
            target.to_str().unwrap(),
        ]);
        assert!(out.contains("integrity_check=ok"), "{out}");
        assert!(
            out.contains(&format!("journal_mode={journal_mode}")),
            "{out}"
        );
        let (integrity, total, sum, rows) = check_ledger(&target);
        assert_eq!(integrity, "ok", "run {run} ({journal_mode})");
        assert_eq!(
            total, sum,
            "run {run} ({journal_mode}): total is not the sum of the rows"
        );
        assert!(rows >= 3000);
        seen_rows.push(rows);
        let restored = Connection::open(&target).unwrap();
        let mode: String = restored
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(
            mode, journal_mode,
            "the restored database keeps its journal mode"
        );
    }
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
    assert!(
        seen_rows.windows(2).all(|w| w[0] < w[1]),
        "every snapshot saw the writer's progress: {seen_rows:?}"
    );
    let (integrity, total, sum, _) = check_ledger(&db);
    assert_eq!(
        (integrity.as_str(), total),
        ("ok", sum),
        "the original is intact"
    );
}

#[test]
fn wal_snapshots_under_a_constant_writer_are_consistent() {
    consistent_snapshots_under_a_constant_writer("wal");
}

#[test]
fn rollback_journal_snapshots_under_a_constant_writer_are_consistent() {
    consistent_snapshots_under_a_constant_writer("delete");
}

/// A database with a bit of everything SQLite stores.
fn rich(path: &Path) {
    let db = Connection::open(path).unwrap();
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA user_version = 42;
         PRAGMA application_id = 1234567;
         CREATE TABLE people(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, born REAL, photo BLOB, note);
         CREATE UNIQUE INDEX people_name ON people(name);
         CREATE INDEX people_born ON people(born) WHERE born IS NOT NULL;
         CREATE TABLE tags(person INTEGER REFERENCES people(id), tag TEXT, PRIMARY KEY (person, tag)) WITHOUT ROWID;
         CREATE TABLE audit(at INTEGER, what TEXT);
         CREATE TRIGGER people_audit AFTER INSERT ON people BEGIN INSERT INTO audit VALUES (new.id, 'added ' || new.name); END;
         CREATE VIEW tagged AS SELECT p.name, t.tag FROM people p JOIN tags t ON t.person = p.id;
         INSERT INTO people(name, born, photo, note) VALUES ('ada', 1815.9, x'00ff10', NULL), ('grace', NULL, NULL, 7), ('é \"quoted\" ''x''', -1.5, zeroblob(3000), 'text');
         INSERT INTO tags VALUES (1, 'math'), (1, 'engines'), (2, 'cobol');
         CREATE TABLE \"odd name\"(\"col\"\"q\" TEXT);
         INSERT INTO \"odd name\" VALUES ('x');",
    )
    .unwrap();
}

/// Everything a `.dump` would show, read through SQLite: schema, every table's rows, and
/// the header values a dump leaves out.
fn contents(path: &Path) -> Vec<String> {
    let db = Connection::open(path).unwrap();
    let mut out = Vec::new();
    for pragma in [
        "user_version",
        "application_id",
        "page_size",
        "journal_mode",
    ] {
        let value: rusqlite::types::Value =
            db.pragma_query_value(None, pragma, |r| r.get(0)).unwrap();
        out.push(format!("{pragma} = {value:?}"));
    }
    let mut stmt = db
        .prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name")
        .unwrap();
    let schema: Vec<(String, String, String, Option<String>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (kind, name, table, sql) in &schema {
        out.push(format!("{kind} {name} on {table}: {sql:?}"));
        if kind == "table" {
            let quoted = name.replace('"', "\"\"");
            let columns = db
                .prepare(&format!("SELECT * FROM \"{quoted}\""))
                .unwrap()
                .column_count();
            let order: Vec<String> = (1..=columns).map(|i| i.to_string()).collect();
            let mut rows = db
                .prepare(&format!(
                    "SELECT * FROM \"{quoted}\" ORDER BY {}",
                    order.join(", ")
                ))
                .unwrap();
            let mut query = rows.query([]).unwrap();
            while let Some(row) = query.next().unwrap() {
                let values: Vec<String> = (0..columns)
                    .map(|i| format!("{:?}", row.get::<_, rusqlite::types::Value>(i).unwrap()))
                    .collect();
                out.push(format!("  {name}: {}", values.join(", ")));
            }
        }
    }
    out
}

/// `sqlite3 FILE .dump`, when the sqlite3 shell is installed (.ci/setup installs it).
fn dump(path: &Path) -> Option<String> {
    let output = std::process::Command::new("sqlite3")
        .arg(path)
        .arg(".dump")
        .output()
        .ok()?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8(output.stdout).unwrap())
}

#[test]
fn schema_and_data_round_trip_and_existing_files_need_overwrite() {
    let setup = Setup::new("paths = [\"db/*.db\", \"db/*.sqlite\"]\nbusy_timeout = \"2s\"");
    rich(&setup.path("db/app.db"));
    ledger(&setup.path("db/other.sqlite"), "delete");
    // An open connection keeps app.db's -wal and -shm files (which the glob must skip).
    let holder = Connection::open(setup.path("db/app.db")).unwrap();
    holder
        .execute("INSERT INTO audit VALUES (0, 'in the wal')", [])
        .unwrap();
    assert!(setup.path("db/app.db-wal").exists());
    let out = setup.ok(&["run", "pipeline.toml"]);
    assert!(out.contains("2 artifact"), "{out}");
    drop(holder);
    let original = contents(&setup.path("db/app.db"));
    let original_dump = dump(&setup.path("db/app.db"));

    // Into a directory: every database at its artifact name.
    let out = setup.ok(&["restore", "pipeline.toml", "--target", "restored/"]);
    assert!(
        out.contains("app.db") && out.contains("other.sqlite"),
        "{out}"
    );
    assert_eq!(contents(&setup.path("restored/app.db")), original);
    assert_eq!(dump(&setup.path("restored/app.db")), original_dump);
    let (integrity, total, sum, _) = check_ledger(&setup.path("restored/other.sqlite"));
    assert_eq!((integrity.as_str(), total), ("ok", sum));
    let names: Vec<String> = std::fs::read_dir(setup.path("restored"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with("-wal") && !n.ends_with("-shm"))
        .collect();
    assert_eq!(names.len(), 2, "no temporary files are left: {names:?}");

    // Into one file: refused while it exists, replaced with --overwrite.
    let file = setup.path("copy.db");
    std::fs::write(&file, "precious").unwrap();
    let refused = setup.runner(&[
        "restore",
        "pipeline.toml",
        "--only",
        "app.db",
        "--target",
        "copy.db",
    ]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("--overwrite"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
    let several = setup.runner(&["restore", "pipeline.toml", "--target", "new.db"]);
    assert!(!several.status.success());
    assert!(
        stderr(&several).contains("more than one database"),
        "{}",
        stderr(&several)
    );
    assert!(!setup.path("new.db").exists());
    setup.ok(&[
        "restore",
        "pipeline.toml",
        "--only",
        "app.db",
        "--target",
        "copy.db",
        "--overwrite",
    ]);
    assert_eq!(contents(&file), original);

    // In place: needs the flag, and --overwrite for a database that exists; a stale WAL
    // of the replaced database is removed, not replayed into the restored one.
    let needs_flag = setup.runner(&["restore", "pipeline.toml"]);
    assert!(!needs_flag.status.success());
    assert!(
        stderr(&needs_flag).contains("--in-place"),
        "{}",
        stderr(&needs_flag)
    );
    let app = setup.path("db/app.db");
    {
        let db = Connection::open(&app).unwrap();
        db.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        db.execute("DELETE FROM audit", []).unwrap();
        std::fs::copy(setup.path("db/app.db-wal"), setup.path("stale-wal")).unwrap();
    }
    std::fs::copy(setup.path("stale-wal"), setup.path("db/app.db-wal")).unwrap();
    let no_overwrite =
        setup.runner(&["restore", "pipeline.toml", "--only", "app.db", "--in-place"]);
    assert!(!no_overwrite.status.success());
    assert!(
        stderr(&no_overwrite).contains("--overwrite"),
        "{}",
        stderr(&no_overwrite)
    );
    setup.ok(&[
        "restore",
        "pipeline.toml",
        "--only",
        "app.db",
        "--in-place",
        "--overwrite",
    ]);
    assert_eq!(contents(&app), original);
}

#[test]
fn a_database_locked_past_the_timeout_fails_clearly_without_a_snapshot() {
    let setup = Setup::new("paths = [\"db/app.db\"]\nbusy_timeout = \"300ms\"");
    ledger(&setup.path("db/app.db"), "delete");
    let holder = Connection::open(setup.path("db/app.db")).unwrap();
    holder
        .execute_batch("BEGIN EXCLUSIVE; UPDATE total SET sum = sum;")
        .unwrap();
    let output = setup.runner(&["run", "pipeline.toml"]);
    holder.execute_batch("COMMIT").unwrap();
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("locked") && message.contains("busy timeout (300 ms)"),
        "{message}"
    );
    assert!(message.contains("app.db"), "{message}");
    assert_eq!(setup.snapshot_count(), 0);
    // Once the lock is gone the same pipeline succeeds.
    setup.ok(&["run", "pipeline.toml"]);
    assert_eq!(setup.snapshot_count(), 1);
}

#[test]
fn a_file_that_is_not_sqlite_is_a_clear_error() {
    let setup = Setup::new("paths = [\"db/notes.txt\"]");
    std::fs::write(
        setup.path("db/notes.txt"),
        "these are notes, not a database; long enough to fill a header ......................................................",
    )
    .unwrap();
    let output = setup.runner(&["run", "pipeline.toml"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("is not an SQLite database"), "{message}");
    assert!(message.contains("notes.txt"), "{message}");
    assert_eq!(setup.snapshot_count(), 0);

    let missing = Setup::new("paths = [\"db/*.db\"]");
    let output = missing.runner(&["run", "pipeline.toml"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("matches no file"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_corrupt_database_is_backed_up_as_is_but_never_restored() {
    let setup = Setup::new("paths = [\"db/app.db\"]");
    let db = setup.path("db/app.db");
    ledger(&db, "delete");
    // Damage one page of the `rows_v` index in the middle of the file: SQLite reads the
    // schema fine, so the snapshot is taken faithfully, damage included.
    let page_size = 4096u64;
    let root: i64 = Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT rootpage FROM sqlite_schema WHERE name = 'rows_v'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        file.seek(SeekFrom::Start((root as u64 - 1) * page_size + 8))
            .unwrap();
        file.write_all(&[0xff; 64]).unwrap();
    }
    // Counting rows reads the damaged index: the run fails and says what to do.
    let output = setup.runner(&["run", "pipeline.toml"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("damaged") && message.contains("count_rows = false"),
        "{message}"
    );
    let pipeline = std::fs::read_to_string(setup.path("pipeline.toml")).unwrap();
    std::fs::write(
        setup.path("pipeline.toml"),
        pipeline.replace("paths = [", "count_rows = false\npaths = ["),
    )
    .unwrap();
    setup.ok(&["run", "pipeline.toml"]);
    let target = setup.path("restored.db");
    let output = setup.runner(&[
        "restore",
        "pipeline.toml",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("integrity_check failed"), "{message}");
    assert!(!target.exists(), "nothing reaches the target");
    let leftovers: Vec<_> = std::fs::read_dir(setup.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("runner-restore"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files are removed: {leftovers:?}"
    );
}
