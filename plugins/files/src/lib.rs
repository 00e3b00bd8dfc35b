//! The `files` source: backs up directory trees with their POSIX metadata (mode, owner,
//! mtime), symlinks, hard links and raw names, and restores them exactly.
//!
//! # Configuration
//!
//! ```toml
//! [source]
//! type = "files"
//! paths = ["/srv/www", "/etc"]   # each is granted read-only; one artifact per path
//! include = ["www/htdocs/**"]    # globs on `artifact/relative/path`; empty = everything
//! exclude = ["**/*.tmp"]         # wins over include; an excluded directory loses its subtree
//! one_file_system = false        # true: do not descend into directories on other devices
//! ```
//!
//! Symlinks are never followed: they are stored as links. Sockets, fifos and devices
//! are skipped, counted (`skipped`) and logged. Files and directories the backup is
//! refused (permissions) are logged and left out like restic does: the snapshot commits
//! with `incomplete` metadata counting them, and `runner run` exits 3 (partial).
//!
//! # Artifacts
//!
//! One per granted root, named by the root's final path component (`/srv/www` → `www`),
//! media type `application/x-runner-files`, schema version 1. Each is listed with the
//! bytes its stream will hold, counted by a metadata-only walk with the same rules (not
//! exact; none past 200 000 entries), which gives the progress bar its total and ETA.
//! Metadata after reading:
//! `root`, `files`, `directories`, `symlinks`, `hardlinks`, `bytes`, `skipped`, and
//! `incomplete` when something could not be read.
//!
//! # Stream format, version 1
//!
//! All integers are little-endian. `blob` is a u32 length followed by that many bytes.
//!
//! ```text
//! stream   = "RUNFILES" version:u32=1  record*  trailer
//! record   = frame('E', entry-body)  content
//! trailer  = frame('T', counts-body)
//! frame(t, body) = tag:u8=t  length:u32  body  crc32:u32      (crc over tag, length, body;
//!                                                              length ≤ 1 MiB)
//! entry-body  = kind:u8 (1 file, 2 directory, 3 symlink, 4 hard link)
//!               mode:u32 (mode & 0o7777)  uid:u32  gid:u32
//!               mtime-seconds:i64  mtime-nanoseconds:u32
//!               size:u64   (content bytes that follow; 0 unless a file)
//!               links:u64  (link count at backup)
//!               path:blob  (raw bytes, '/'-separated, relative to the root; empty = the root)
//!               link:blob  (symlink target as stored, or a hard link's first path; else empty)
//!               user:opt-name  group:opt-name      (opt-name = 0 | 1 blob(UTF-8))
//! content     = exactly `size` bytes, for files only
//! counts-body = files:u64 directories:u64 symlinks:u64 hardlinks:u64 bytes:u64 skipped:u64
//! ```
//!
//! Entries come depth-first, each directory before its children, children in byte
//! order of their names; the first entry is the root directory. A regular file whose
//! (device, inode) was already stored becomes a hard-link entry naming the first path.
//! The decoder rejects, as `corrupt`, a bad magic or version, a header whose crc does
//! not match, an entry outside its parent or out of order, a hard link to a path not
//! stored before it, a trailer whose counts differ from the stream, truncation and
//! bytes after the trailer. File content has no digest of its own: the host digests
//! every stage boundary and commits a restore only when they all match.
//!
//! # Restore
//!
//! `target` must be a granted directory; it must be empty unless overwriting is
//! allowed. Each artifact is rebuilt in `target/.runner-staging-<random>/data/<artifact>`
//! and moved to `target/<artifact>` on commit; abort removes staging. With an existing
//! `target/<artifact>`, `merge` moves entries into it (same names replaced, directories
//! merged) and `replace` swaps the whole directory. Owners are restored by number when
//! the runner is root; otherwise each one not restored is a warning in the report.
//! `only` keeps the items whose `artifact/path` a glob matches (a directory brings its
//! subtree, parents are created). A dry run writes nothing and reports the same counts.
//! Report metadata: `files`, `directories`, `symlinks`, `hardlinks`, `bytes` restored,
//! `skipped` (special files the backup left out) and, with `only`, `excluded`.

mod backup;
mod format;
mod restore;
mod select;

use std::rc::Rc;

use runner_sdk::{Artifact, BackupSession, Error, Plugin, RestoreOptions, Result, Source};

use crate::backup::{FilesReader, RootArtifact};
use crate::restore::FilesRestore;
use crate::select::Globs;

/// The stage's table.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directories to back up. The host grants each read-only; the plugin backs up every
    /// root the host granted, so this list is what the user writes, not what is read.
    paths: Vec<String>,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    one_file_system: bool,
}

/// The configuration, compiled.
pub struct Settings {
    include: Option<Globs>,
    exclude: Option<Globs>,
    one_file_system: bool,
}

impl Settings {
    /// Whether the backup takes `artifact/path`: None when excluded (with its subtree),
    /// otherwise whether it is selected itself (a directory that is not may still lead to
    /// something that is). Below a selected directory everything is selected.
    fn selection(&self, artifact: &str, path: &[u8], parent_selected: bool) -> Option<bool> {
        if self
            .exclude
            .as_ref()
            .is_some_and(|g| g.matches(artifact, path))
        {
            return None;
        }
        Some(
            parent_selected
                || self
                    .include
                    .as_ref()
                    .is_none_or(|g| g.matches(artifact, path)),
        )
    }
}

struct Files {
    settings: Rc<Settings>,
}

impl Plugin for Files {
    const NAME: &'static str = "files";
    const DESCRIPTION: &'static str =
        "directory trees with modes, owners, times, links and raw names";
    type Config = Config;

    fn new(config: Config) -> Result<Self> {
        if config.paths.is_empty() {
            return Err(Error::config_field(
                "paths",
                "list at least one directory to back up",
            ));
        }
        let settings = Settings {
            include: Globs::new("include", &config.include)?,
            exclude: Globs::new("exclude", &config.exclude)?,
            one_file_system: config.one_file_system,
        };
        Ok(Files {
            settings: Rc::new(settings),
        })
    }
}

impl Source for Files {
    type Backup = FilesBackup;
    type Restore = FilesRestore;

    fn begin_backup(&self, _share_token: Option<String>) -> Result<FilesBackup> {
        let roots = runner_sdk::files::roots();
        if roots.is_empty() {
            return Err(Error::config_field(
                "paths",
                "no directory is granted to this stage",
            ));
        }
        Ok(FilesBackup {
            settings: self.settings.clone(),
            artifacts: backup::root_artifacts(roots)?,
        })
    }

    fn begin_restore(&self, options: RestoreOptions) -> Result<FilesRestore> {
        FilesRestore::begin(options)
    }
}

/// A backup of every granted root. The view is the live file system: there is no
/// snapshot to share, and a file that changes size while being read fails its artifact.
struct FilesBackup {
    settings: Rc<Settings>,
    artifacts: Vec<RootArtifact>,
}

impl BackupSession for FilesBackup {
    type Reader = FilesReader;

    fn artifacts(&mut self) -> Result<Vec<Artifact>> {
        Ok(self
            .artifacts
            .iter()
            .map(|a| Artifact {
                name: a.name.clone(),
                media_type: format::MEDIA_TYPE.to_string(),
                size: backup::estimate(&self.settings, a),
                schema_version: format::VERSION,
                metadata: vec![("root".to_string(), a.root.clone())],
            })
            .collect())
    }

    fn open(&mut self, name: &str) -> Result<FilesReader> {
        let artifact = self
            .artifacts
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| {
                Error::not_found(format!("no artifact named {name:?} in this backup"))
            })?;
        FilesReader::open(self.settings.clone(), artifact)
    }
}

runner_sdk::export_source!(Files);
