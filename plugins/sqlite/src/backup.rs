//! Backup: finds the databases `paths` names in the granted directories, has the host
//! snapshot each one when it is opened, and streams the copy with its facts.

use std::io::Read;
use std::rc::Rc;

use globset::{GlobBuilder, GlobMatcher};
use runner_sdk::files::{self, FileKind};
use runner_sdk::{Artifact, ArtifactReader, BackupSession, Error, Metadata, Result, SizeEstimate};

use crate::{MEDIA_TYPE, SCHEMA_VERSION, Settings, database};

/// Largest chunk handed to the host per read.
const MAX_READ: usize = 1 << 20;
/// Files next to a database that belong to it; a glob never selects them.
const SIDE_FILES: &[&str] = &["-wal", "-shm", "-journal"];

/// A `paths` entry split at its first glob component: the literal directory (granted by
/// the host) and what is matched below it. Also checks the entry.
pub fn split_entry(entry: &str) -> std::result::Result<(String, String), String> {
    let components: Vec<&str> = entry.split('/').collect();
    if entry.is_empty() || entry.ends_with('/') {
        return Err(format!("{entry:?} does not name a database file"));
    }
    let literal = components
        .iter()
        .position(|c| c.contains(['*', '?', '[', '{']))
        .unwrap_or(components.len() - 1);
    // The directory part may climb (`../var/app.db`): the host resolves and grants it.
    // Below it, every component names one entry.
    if components[literal..]
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return Err(format!(
            "{entry:?}: below its directory, write the path without `.`, `..` or empty components"
        ));
    }
    Ok((
        components[..literal].join("/"),
        components[literal..].join("/"),
    ))
}

/// One database found: where it is and the artifact it becomes.
struct Database {
    /// The artifact name: its path below its entry's directory.
    name: String,
    /// The granted root it is under, and its path there.
    root: String,
    relative: String,
}

impl Database {
    fn path(&self) -> String {
        format!("{}/{}", self.root.trim_end_matches('/'), self.relative)
    }
}

/// One backup: the databases found when it began, each snapshotted when opened.
pub struct SqliteBackup {
    settings: Rc<Settings>,
    databases: Vec<Database>,
    /// Original journal mode per artifact, learned at listing.
    listed: Vec<Artifact>,
}

impl SqliteBackup {
    pub fn begin(settings: Rc<Settings>) -> Result<Self> {
        let roots = files::roots();
        let entries = settings.paths.len();
        // The host grants one directory per entry, in order, then the scratch directory.
        if roots.len() < entries + 1 {
            return Err(Error::config_field(
                "paths",
                format!(
                    "the host granted {} directories for {entries} entries and the scratch directory",
                    roots.len()
                ),
            ));
        }
        let entry_roots = &roots[roots.len() - 1 - entries..roots.len() - 1];
        let mut databases: Vec<Database> = Vec::new();
        for (i, (entry, root)) in settings.paths.iter().zip(entry_roots).enumerate() {
            let (_, pattern) = split_entry(entry)
                .map_err(|why| Error::config_field(format!("paths[{i}]"), why))?;
            let found = find(root, &pattern).map_err(|e| match e {
                Error::Config(_) => e,
                e => Error::config_field(
                    format!("paths[{i}]"),
                    format!("{entry:?}: {}", describe(&e)),
                ),
            })?;
            if found.is_empty() {
                return Err(Error::config_field(
                    format!("paths[{i}]"),
                    format!("{entry:?} matches no file in {root}"),
                ));
            }
            for relative in found {
                if let Some(other) = databases.iter().find(|d| d.name == relative) {
                    return Err(Error::config_field(
                        "paths",
                        format!(
                            "{} and {root}/{relative} would both be stored as artifact {relative:?}; back them up in separate pipelines",
                            other.path()
                        ),
                    ));
                }
                databases.push(Database {
                    name: relative.clone(),
                    root: root.clone(),
                    relative,
                });
            }
        }
        let listed = databases
            .iter()
            .map(|db| Artifact {
                name: db.name.clone(),
                media_type: MEDIA_TYPE.to_string(),
                // The copy is about the file's size (a WAL's pages fold into it).
                size: files::stat(&db.root, db.relative.as_bytes())
                    .ok()
                    .map(|m| SizeEstimate {
                        exact: false,
                        ..SizeEstimate::bytes(m.size)
                    }),
                schema_version: SCHEMA_VERSION,
                metadata: vec![("path".to_string(), db.path())],
            })
            .collect();
        Ok(SqliteBackup {
            settings,
            databases,
            listed,
        })
    }
}

fn describe(e: &Error) -> String {
    match e {
        Error::NotFound(m)
        | Error::AccessDenied(m)
        | Error::InvalidInput(m)
        | Error::Internal(m) => m.clone(),
        other => format!("{other:?}"),
    }
}

/// Paths below `root` that `pattern` selects: the file itself when it holds no glob,
/// else every regular file whose relative path matches (symlinks are not followed).
fn find(root: &str, pattern: &str) -> Result<Vec<String>> {
    if !pattern.contains(['*', '?', '[', '{']) {
        let meta = files::stat(root, pattern.as_bytes())?;
        if !matches!(meta.kind, FileKind::Regular) {
            return Err(Error::invalid_input(format!(
                "{root}/{pattern} is not a regular file"
            )));
        }
        return Ok(vec![pattern.to_string()]);
    }
    let glob = GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| Error::config_field("paths", format!("invalid glob {pattern:?}: {e}")))?
        .compile_matcher();
    // Without `**` nothing deeper than the pattern's components can match.
    let max_depth = if pattern.contains("**") {
        usize::MAX
    } else {
        pattern.split('/').count()
    };
    let mut found = Vec::new();
    walk(root, "", 1, max_depth, &glob, &mut found)?;
    found.sort();
    Ok(found)
}

fn walk(
    root: &str,
    dir: &str,
    depth: usize,
    max_depth: usize,
    glob: &GlobMatcher,
    found: &mut Vec<String>,
) -> Result<()> {
    for entry in files::read_dir(root, dir.as_bytes())? {
        let Ok(name) = String::from_utf8(entry.name) else {
            continue;
        };
        let relative = if dir.is_empty() {
            name.clone()
        } else {
            format!("{dir}/{name}")
        };
        match entry.meta.kind {
            FileKind::Directory if depth < max_depth => {
                walk(root, &relative, depth + 1, max_depth, glob, found)?
            }
            FileKind::Regular
                if glob.is_match(&relative) && !SIDE_FILES.iter().any(|s| name.ends_with(s)) =>
            {
                found.push(relative)
            }
            _ => {}
        }
    }
    Ok(())
}

impl BackupSession for SqliteBackup {
    type Reader = SnapshotReader;

    fn artifacts(&mut self) -> Result<Vec<Artifact>> {
        Ok(self.listed.clone())
    }

    fn open(&mut self, name: &str) -> Result<SnapshotReader> {
        let db = self
            .databases
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| {
                Error::not_found(format!("no artifact named {name:?} in this backup"))
            })?;
        let snapshot = runner_sdk::sqlite::snapshot(
            &db.root,
            db.relative.as_bytes(),
            self.settings.busy_timeout_ms,
            self.settings.count_rows,
        )?;
        let reader = SnapshotReader::open(&db.path(), &snapshot);
        if reader.is_err() {
            let _ = runner_sdk::sqlite::discard(&snapshot.path);
        }
        reader
    }
}

/// Streams one snapshot copy; its facts were read before the first byte.
pub struct SnapshotReader {
    copy: String,
    file: std::fs::File,
    metadata: Metadata,
}

impl SnapshotReader {
    fn open(original: &str, snapshot: &runner_sdk::sqlite::DatabaseCopy) -> Result<Self> {
        let db = database::open_immutable(&snapshot.path)?;
        let mut metadata = vec![
            ("path".to_string(), original.to_string()),
            ("journal_mode".to_string(), snapshot.journal_mode.clone()),
            ("bytes".to_string(), snapshot.size.to_string()),
        ];
        metadata.extend(database::facts(&db, original)?);
        metadata.extend(
            snapshot
                .row_counts
                .iter()
                .map(|(table, rows)| (format!("rows:{table}"), rows.to_string())),
        );
        drop(db);
        let file = std::fs::File::open(&snapshot.path).map_err(|e| {
            Error::internal(format!(
                "cannot read the snapshot copy {}: {e}",
                snapshot.path
            ))
        })?;
        Ok(SnapshotReader {
            copy: snapshot.path.clone(),
            file,
            metadata,
        })
    }
}

impl ArtifactReader for SnapshotReader {
    fn read(&mut self, max: usize) -> Result<Option<Vec<u8>>> {
        let mut buf = vec![0; max.clamp(1, MAX_READ)];
        let mut filled = 0;
        while filled < buf.len() {
            match self.file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::internal(format!(
                        "reading the snapshot copy {}: {e}",
                        self.copy
                    )));
                }
            }
        }
        buf.truncate(filled);
        Ok((filled > 0).then_some(buf))
    }

    fn finish(&mut self) -> Result<Metadata> {
        runner_sdk::sqlite::discard(&self.copy)?;
        Ok(self.metadata.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::split_entry;

    #[test]
    fn entries_split_at_the_first_glob_component() {
        let split = |e: &str| split_entry(e).unwrap();
        assert_eq!(split("app.db"), ("".into(), "app.db".into()));
        assert_eq!(split("data/app.db"), ("data".into(), "app.db".into()));
        assert_eq!(
            split("/srv/db/*.sqlite"),
            ("/srv/db".into(), "*.sqlite".into())
        );
        assert_eq!(split("t/**/x-*.db"), ("t".into(), "**/x-*.db".into()));
        assert!(split_entry("data/").is_err());
        assert_eq!(split("../var/app.db"), ("../var".into(), "app.db".into()));
        assert!(split_entry("data/*/../y.db").is_err());
    }
}
