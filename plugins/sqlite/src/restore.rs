//! Restore: each database goes to a temporary file next to its destination, is synced
//! and integrity-checked as soon as its bytes are in, and is renamed into place on commit.

use std::cell::RefCell;
use std::hash::BuildHasher;
use std::io::Write;
use std::rc::Rc;

use runner_sdk::{
    Artifact, ArtifactWriter, Error, Metadata, MetadataExt, RestoreOptions, RestoreReport,
    RestoreSession, Result,
};

use crate::{MEDIA_TYPE, SCHEMA_VERSION, database};

/// Where the databases go.
enum Destination {
    /// `--target DIR`: each database at its artifact name below it.
    Directory(String),
    /// `--target FILE`: the one database restored.
    File(String),
    /// `--in-place`: each database back at its recorded `path`.
    InPlace,
}

pub struct SqliteRestore {
    session: Rc<RefCell<Session>>,
}

struct Session {
    destination: Destination,
    roots: Vec<String>,
    dry_run: bool,
    overwrite: bool,
    staged: Vec<Staged>,
    closed: bool,
}

/// One database written and checked, waiting for commit.
struct Staged {
    artifact: String,
    /// The temporary file (none in a dry run).
    temp: Option<String>,
    destination: String,
    replaces: bool,
    report: Metadata,
}

impl SqliteRestore {
    pub fn begin(options: RestoreOptions) -> Result<Self> {
        let roots = runner_sdk::files::roots();
        let is_root = |path: &str| {
            roots
                .iter()
                .any(|r| r.trim_end_matches('/') == path.trim_end_matches('/'))
        };
        let destination = match options.target {
            None => Destination::InPlace,
            Some(target) if is_root(&target) => {
                Destination::Directory(target.trim_end_matches('/').to_string())
            }
            Some(target) => match target.rsplit_once('/') {
                Some((dir, name)) if is_root(dir) && !name.is_empty() => Destination::File(target),
                _ => {
                    return Err(Error::config(format!(
                        "the restore target {target:?} is neither a granted directory nor a file in one (granted: {roots:?})"
                    )));
                }
            },
        };
        Ok(SqliteRestore {
            session: Rc::new(RefCell::new(Session {
                destination,
                roots,
                dry_run: options.dry_run,
                overwrite: options.overwrite,
                staged: Vec::new(),
                closed: false,
            })),
        })
    }
}

impl Session {
    /// The granted root `path` is inside.
    fn root_of(&self, path: &str) -> Result<&str> {
        self.roots
            .iter()
            .find(|r| path.starts_with(&format!("{}/", r.trim_end_matches('/'))))
            .map(String::as_str)
            .ok_or_else(|| {
                Error::AccessDenied(format!(
                    "{path} is not inside a directory granted to this restore"
                ))
            })
    }

    /// Where `artifact` is restored to.
    fn destination_of(&self, artifact: &Artifact) -> Result<String> {
        let path = match &self.destination {
            Destination::Directory(dir) => {
                if artifact
                    .name
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == "..")
                {
                    return Err(Error::corrupt(format!(
                        "artifact name {:?} is not a relative path",
                        artifact.name
                    )));
                }
                format!("{dir}/{}", artifact.name)
            }
            Destination::File(file) => {
                if let Some(first) = self.staged.first() {
                    return Err(Error::invalid_input(format!(
                        "--target {file} names one file, but more than one database is restored ({} and {}); give a directory, or select one with --only",
                        first.artifact, artifact.name
                    )));
                }
                file.clone()
            }
            Destination::InPlace => artifact
                .metadata
                .value("path")
                .ok_or_else(|| {
                    Error::corrupt(format!(
                        "artifact {:?} records no original path",
                        artifact.name
                    ))
                })?
                .to_string(),
        };
        self.root_of(&path)?;
        if self.staged.iter().any(|s| s.destination == path) {
            return Err(Error::invalid_input(format!(
                "two databases would be restored to {path}"
            )));
        }
        Ok(path)
    }
}

impl RestoreSession for SqliteRestore {
    type Writer = DatabaseWriter;

    fn write_artifact(&mut self, artifact: Artifact) -> Result<DatabaseWriter> {
        if artifact.media_type != MEDIA_TYPE || artifact.schema_version != SCHEMA_VERSION {
            return Err(Error::unsupported(format!(
                "artifact {:?} is {} version {}; this plugin restores {MEDIA_TYPE} version {SCHEMA_VERSION}",
                artifact.name, artifact.media_type, artifact.schema_version
            )));
        }
        let session = self.session.borrow();
        let destination = session.destination_of(&artifact)?;
        let replaces = match std::fs::symlink_metadata(&destination) {
            Ok(meta) if meta.is_file() => true,
            Ok(_) => {
                return Err(Error::invalid_input(format!(
                    "{destination} exists and is not a regular file"
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::internal(format!("{destination}: {e}"))),
        };
        if replaces && !session.overwrite {
            return Err(Error::AlreadyExists(format!(
                "{destination} exists; restore with --overwrite to replace it (stop the application using it first)"
            )));
        }
        let wal = artifact.metadata.value("journal_mode") == Some("wal");
        let (temp, file) = if session.dry_run {
            (None, None)
        } else {
            let (dir, name) = destination
                .rsplit_once('/')
                .expect("destinations are inside a root");
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::internal(format!("cannot create {dir}: {e}")))?;
            let (temp, file) = create_temp(dir, name)?;
            (Some(temp), Some(file))
        };
        drop(session);
        Ok(DatabaseWriter {
            session: self.session.clone(),
            artifact: artifact.name,
            destination,
            replaces,
            wal,
            temp,
            file,
            bytes: 0,
        })
    }

    fn commit(&mut self) -> Result<Vec<RestoreReport>> {
        let mut session = self.session.borrow_mut();
        session.closed = true;
        let mut reports = Vec::new();
        let mut synced_roots: Vec<String> = Vec::new();
        for staged in std::mem::take(&mut session.staged) {
            if let Some(temp) = &staged.temp {
                // The replaced database's journal and WAL would be replayed into the new
                // file by the next SQLite to open it: they go first.
                for side in ["-journal", "-wal", "-shm"] {
                    let side = format!("{}{side}", staged.destination);
                    match std::fs::remove_file(&side) {
                        Ok(()) => runner_sdk::info!(
                            "removed {side}, which belonged to the replaced database"
                        ),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(Error::internal(format!("cannot remove {side}: {e}")));
                        }
                    }
                }
                std::fs::rename(temp, &staged.destination).map_err(|e| {
                    Error::internal(format!("cannot move {temp} to {}: {e}", staged.destination))
                })?;
                let root = session.root_of(&staged.destination)?.to_string();
                if !synced_roots.contains(&root) {
                    // The rename is durable only once the directory is synced.
                    runner_sdk::files::sync(&root)?;
                    synced_roots.push(root);
                }
            }
            let mut metadata = vec![
                ("path".to_string(), staged.destination.clone()),
                ("replaced".to_string(), staged.replaces.to_string()),
            ];
            metadata.extend(staged.report);
            reports.push(RestoreReport {
                artifact: staged.artifact,
                metadata,
                warnings: Vec::new(),
            });
        }
        Ok(reports)
    }

    fn abort(&mut self) {
        let mut session = self.session.borrow_mut();
        session.closed = true;
        for staged in std::mem::take(&mut session.staged) {
            if let Some(temp) = staged.temp {
                let _ = std::fs::remove_file(temp);
            }
        }
    }
}

/// Creates `.<name>.runner-restore-<random>` next to the destination, never an existing file.
fn create_temp(dir: &str, name: &str) -> Result<(String, std::fs::File)> {
    let random = std::collections::hash_map::RandomState::new();
    for attempt in 0u32..16 {
        let temp = format!(
            "{dir}/.{name}.runner-restore-{:016x}",
            random.hash_one(attempt)
        );
        match std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::internal(format!("cannot create {temp}: {e}"))),
        }
    }
    Err(Error::internal(format!(
        "cannot find a free temporary file name in {dir}"
    )))
}

/// Receives one database's bytes.
pub struct DatabaseWriter {
    session: Rc<RefCell<Session>>,
    artifact: String,
    destination: String,
    replaces: bool,
    /// The original ran in WAL mode: the restored file is marked so after the check.
    wal: bool,
    temp: Option<String>,
    file: Option<std::fs::File>,
    bytes: u64,
}

impl ArtifactWriter for DatabaseWriter {
    fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.bytes += chunk.len() as u64;
        if let (Some(file), Some(temp)) = (&mut self.file, &self.temp) {
            file.write_all(chunk)
                .map_err(|e| Error::internal(format!("writing {temp}: {e}")))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let mut report = vec![("bytes".to_string(), self.bytes.to_string())];
        let temp = self.temp.take();
        if let (Some(mut file), Some(temp)) = (self.file.take(), temp.clone()) {
            let root = self.session.borrow().root_of(&temp).map(str::to_string);
            let checked = root.and_then(|root| check(&mut file, &root, &temp, self.wal));
            match checked {
                Ok(facts) => report.extend(facts),
                Err(e) => {
                    drop(file);
                    let _ = std::fs::remove_file(&temp);
                    return Err(e);
                }
            }
        } else {
            report.push((
                "integrity_check".to_string(),
                "not run (dry run)".to_string(),
            ));
        }
        let mut session = self.session.borrow_mut();
        if session.closed {
            if let Some(temp) = temp {
                let _ = std::fs::remove_file(temp);
            }
            return Err(Error::invalid_input(
                "the restore session is already committed or aborted",
            ));
        }
        session.staged.push(Staged {
            artifact: self.artifact.clone(),
            temp,
            destination: self.destination.clone(),
            replaces: self.replaces,
            report,
        });
        Ok(())
    }
}

/// Syncs the written file, has the host run `PRAGMA integrity_check` on it, restores WAL mode, and
/// syncs again; returns the facts for the report.
fn check(file: &mut std::fs::File, root: &str, temp: &str, wal: bool) -> Result<Metadata> {
    let sync = |file: &std::fs::File| {
        file.sync_all()
            .map_err(|e| Error::internal(format!("syncing {temp}: {e}")))
    };
    sync(file)?;
    database::integrity_check(root, temp)?;
    let db = database::open_immutable(temp)?;
    let mut facts = vec![("integrity_check".to_string(), "ok".to_string())];
    let all = database::facts(&db, temp)?;
    facts.extend(
        all.into_iter()
            .filter(|(k, _)| k == "page_size" || k == "page_count"),
    );
    drop(db);
    if wal {
        database::mark_wal(file, temp)?;
        sync(file)?;
    }
    facts.push((
        "journal_mode".to_string(),
        if wal { "wal" } else { "delete" }.to_string(),
    ));
    Ok(facts)
}
