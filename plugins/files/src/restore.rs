//! Restore: decodes artifacts into a staging directory inside the target, then moves
//! them into place on commit (or removes staging on abort).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::rc::Rc;

use runner_sdk::files::{self, FileKind, FileMeta, FileWriter, Timestamp};
use runner_sdk::{
    Artifact, ArtifactWriter, Error, RestoreMode, RestoreOptions, RestoreReport, RestoreSession,
    Result,
};

use crate::format::{self, Decoder, Entry, Event, Kind, Totals};
use crate::select::{Globs, child_path};

/// Prefix of the staging directory a restore creates inside its target.
pub const STAGING_PREFIX: &str = ".runner-staging-";
/// Individual warnings kept per artifact; the rest are counted.
const MAX_WARNINGS: usize = 50;

/// One restore into one granted target directory.
pub struct FilesRestore {
    session: Rc<RefCell<Session>>,
}

struct Session {
    target: String,
    /// `.runner-staging-…` inside the target; None in a dry run, which writes nothing.
    staging: Option<Vec<u8>>,
    mode: RestoreMode,
    overwrite: bool,
    only: Option<Rc<Globs>>,
    artifacts: Vec<StagedArtifact>,
    closed: bool,
    /// Staging holds the only copy of something (a failed replace): never remove it.
    keep_staging: bool,
}

struct StagedArtifact {
    name: String,
    /// Set when the artifact's stream was written completely.
    report: Option<RestoreReport>,
    /// Whether anything of it was restored (with `only`, possibly nothing).
    restored: bool,
}

impl Session {
    fn staged_path(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut path = self.staging.clone().unwrap_or_default();
        for part in parts {
            path = child_path(&path, part);
        }
        path
    }
}

impl FilesRestore {
    pub fn begin(options: RestoreOptions) -> Result<Self> {
        let target = options.target.ok_or_else(|| {
            Error::config("restoring files needs a target directory (restore --target DIR)")
        })?;
        let roots = files::roots();
        let Some(target) = roots
            .iter()
            .find(|r| r.trim_end_matches('/') == target.trim_end_matches('/'))
            .cloned()
        else {
            return Err(Error::config(format!(
                "the restore target {target:?} is not a directory granted to this stage (granted: {roots:?})"
            )));
        };
        let only = Globs::new("only", &options.only)?.map(Rc::new);
        // Staging directories of other restores (running, or killed before they could
        // clean up) do not make a target occupied.
        let occupied = files::read_dir(&target, &[])?
            .iter()
            .any(|entry| !entry.name.starts_with(STAGING_PREFIX.as_bytes()));
        if occupied && !options.overwrite {
            return Err(Error::AlreadyExists(format!(
                "the restore target {target} is not empty; restore into an empty directory or allow overwriting"
            )));
        }
        let staging = if options.dry_run {
            None
        } else {
            Some(create_staging(&target)?)
        };
        Ok(FilesRestore {
            session: Rc::new(RefCell::new(Session {
                target,
                staging,
                mode: options.mode,
                overwrite: options.overwrite,
                only,
                artifacts: Vec::new(),
                closed: false,
                keep_staging: false,
            })),
        })
    }
}

/// Creates `.runner-staging-<random>` with `data/` (artifacts) and `links/` (content
/// kept only so hard links outside an `only` selection can still be made).
fn create_staging(target: &str) -> Result<Vec<u8>> {
    let random = std::collections::hash_map::RandomState::new();
    for attempt in 0u32..16 {
        let name = format!("{STAGING_PREFIX}{:016x}", random.hash_one(attempt)).into_bytes();
        match files::stat(target, &name) {
            Err(Error::NotFound(_)) => {}
            Ok(_) => continue,
            Err(e) => return Err(e),
        }
        files::create_dir(target, &name)?;
        files::create_dir(target, &child_path(&name, b"data"))?;
        files::create_dir(target, &child_path(&name, b"links"))?;
        return Ok(name);
    }
    Err(Error::internal(format!(
        "cannot find a free staging directory name in {target}"
    )))
}

fn valid_artifact_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

impl RestoreSession for FilesRestore {
    type Writer = FilesWriter;

    fn write_artifact(&mut self, artifact: Artifact) -> Result<FilesWriter> {
        let mut session = self.session.borrow_mut();
        if session.closed {
            return Err(Error::invalid_input("write-artifact after commit or abort"));
        }
        if !valid_artifact_name(&artifact.name) {
            return Err(Error::invalid_input(format!(
                "{:?} is not a files artifact name",
                artifact.name
            )));
        }
        if artifact.media_type != format::MEDIA_TYPE || artifact.schema_version != format::VERSION {
            return Err(Error::unsupported(format!(
                "artifact {} is {} version {}; this plugin restores {} version {}",
                artifact.name,
                artifact.media_type,
                artifact.schema_version,
                format::MEDIA_TYPE,
                format::VERSION
            )));
        }
        if session.artifacts.iter().any(|a| a.name == artifact.name) {
            return Err(Error::invalid_input(format!(
                "artifact {} is written twice",
                artifact.name
            )));
        }
        let index = session.artifacts.len();
        session.artifacts.push(StagedArtifact {
            name: artifact.name.clone(),
            report: None,
            restored: false,
        });
        let tree = Tree {
            target: session.target.clone(),
            dry_run: session.staging.is_none(),
            base: session.staged_path(&[b"data", artifact.name.as_bytes()]),
            links_dir: session.staged_path(&[b"links"]),
            artifact: artifact.name,
            artifact_index: index,
            only: session.only.clone(),
            dirs: Vec::new(),
            file: None,
            link_paths: HashMap::new(),
            orphans: 0,
            restored: Totals::default(),
            stream: Totals::default(),
            warnings: Warnings::default(),
        };
        Ok(FilesWriter {
            session: self.session.clone(),
            index,
            decoder: Decoder::default(),
            tree: Some(tree),
        })
    }

    fn commit(&mut self) -> Result<Vec<RestoreReport>> {
        let mut session = self.session.borrow_mut();
        if session.closed {
            return Err(Error::invalid_input("commit after commit or abort"));
        }
        if let Some(unfinished) = session.artifacts.iter().find(|a| a.report.is_none()) {
            return Err(Error::invalid_input(format!(
                "artifact {} was not completely written; nothing was committed",
                unfinished.name
            )));
        }
        session.closed = true;
        let moved = match session.staging {
            Some(_) => files::sync(&session.target).and_then(|()| move_into_place(&mut session)),
            None => {
                describe_dry_run(&mut session);
                Ok(())
            }
        };
        let removed = remove_staging(&session);
        moved?;
        removed?;
        Ok(session
            .artifacts
            .iter_mut()
            .filter_map(|a| a.report.take())
            .collect())
    }

    fn abort(&mut self) {
        let mut session = self.session.borrow_mut();
        if !session.closed {
            session.closed = true;
            if let Err(e) = remove_staging(&session) {
                runner_sdk::warn!("could not remove the staging directory: {e:?}");
            }
        }
    }
}

fn remove_staging(session: &Session) -> Result<()> {
    match &session.staging {
        Some(_) if session.keep_staging => Ok(()),
        Some(staging) => match files::remove(&session.target, staging) {
            Err(Error::NotFound(_)) => Ok(()),
            other => other,
        },
        None => Ok(()),
    }
}

/// A dry run reports, per artifact, whether it would land in an existing directory.
fn describe_dry_run(session: &mut Session) {
    let (target, mode) = (session.target.clone(), session.mode);
    for artifact in &mut session.artifacts {
        if files::stat(&target, artifact.name.as_bytes()).is_ok() {
            let how = match mode {
                RestoreMode::Merge => "would be merged into",
                RestoreMode::Replace => "would replace",
            };
            if let Some(report) = artifact.report.as_mut() {
                report.warnings.push(format!(
                    "{how} the existing {}/{}",
                    target.trim_end_matches('/'),
                    artifact.name
                ));
            }
        }
    }
}

/// Moves each staged artifact directory to `target/<artifact>`.
fn move_into_place(session: &mut Session) -> Result<()> {
    let target = session.target.clone();
    for i in 0..session.artifacts.len() {
        if !session.artifacts[i].restored {
            continue;
        }
        let name = session.artifacts[i].name.clone().into_bytes();
        let staged = session.staged_path(&[b"data", &name]);
        let staged_meta = files::stat(&target, &staged)?;
        match files::stat(&target, &name) {
            Err(Error::NotFound(_)) => {
                files::rename(&target, &staged, &name)?;
                refresh_dir(&target, &name, &staged_meta)?;
            }
            Err(e) => return Err(e),
            Ok(_) if !session.overwrite => {
                return Err(Error::AlreadyExists(format!(
                    "{}/{} appeared during the restore; nothing more was moved into place",
                    target.trim_end_matches('/'),
                    session.artifacts[i].name
                )));
            }
            Ok(existing)
                if session.mode == RestoreMode::Merge
                    && matches!(existing.kind, FileKind::Directory) =>
            {
                merge(&target, &staged, &name)?;
            }
            Ok(_) => {
                // Replace: move the old tree aside into staging, move the new one in,
                // then delete the old one; if the new one cannot go in, the old one goes
                // back, and if even that fails staging is kept so nothing is lost.
                let aside = session.staged_path(&[b"replaced"]);
                files::create_dir(&target, &aside)?;
                let old = child_path(&aside, &name);
                files::rename(&target, &name, &old)?;
                if let Err(e) = files::rename(&target, &staged, &name) {
                    if files::rename(&target, &old, &name).is_err() {
                        session.keep_staging = true;
                        return Err(Error::internal(format!(
                            "cannot move the restored {} into place ({e:?}) nor the previous one back: it is kept in {}/{}",
                            session.artifacts[i].name,
                            target.trim_end_matches('/'),
                            String::from_utf8_lossy(&old)
                        )));
                    }
                    return Err(e);
                }
                files::remove(&target, &old)?;
                refresh_dir(&target, &name, &staged_meta)?;
            }
        }
    }
    Ok(())
}

/// Moves the staged directory's entries into the existing `dest`, replacing entries
/// with the same name and merging directories, then gives `dest` the staged metadata.
fn merge(target: &str, staged: &[u8], dest: &[u8]) -> Result<()> {
    // Taken first: moving the entries out changes the staged directory's mtime.
    let meta = files::stat(target, staged)?;
    for entry in files::read_dir(target, staged)? {
        let from = child_path(staged, &entry.name);
        let to = child_path(dest, &entry.name);
        let is_dir = matches!(entry.meta.kind, FileKind::Directory);
        match files::stat(target, &to) {
            Ok(existing) if is_dir && matches!(existing.kind, FileKind::Directory) => {
                merge(target, &from, &to)?;
                continue;
            }
            Ok(existing) => {
                // rename replaces one non-directory by another in one step; when either
                // side is a directory the existing one has to go first.
                if is_dir || matches!(existing.kind, FileKind::Directory) {
                    files::remove(target, &to)?;
                }
            }
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        files::rename(target, &from, &to)?;
        if is_dir {
            refresh_dir(target, &to, &entry.meta)?;
        }
    }
    // The existing directory takes the snapshot's metadata. An owner that cannot be
    // set was already reported when the staged copy was made.
    apply_meta(
        target,
        dest,
        meta.mode,
        (meta.uid, meta.gid),
        meta.mtime,
        &mut || {},
    )
}

/// Moving entries into a directory (or moving the directory) may change its mtime: put
/// it back. The owner moved with it.
fn refresh_dir(target: &str, path: &[u8], meta: &FileMeta) -> Result<()> {
    files::set_meta(target, path, meta.mode, None, meta.mtime)
}

/// Sets mode, owner and mtime. An owner the host may not set (it does not run as root)
/// is reported through `owner_refused` and the rest is applied without it.
fn apply_meta(
    target: &str,
    path: &[u8],
    mode: u32,
    owner: (u32, u32),
    mtime: Timestamp,
    owner_refused: &mut dyn FnMut(),
) -> Result<()> {
    match files::set_meta(target, path, mode, Some(owner), mtime) {
        Err(Error::AccessDenied(_)) => {
            // Refused for any other reason, the retry fails too and says why.
            files::set_meta(target, path, mode, None, mtime)?;
            owner_refused();
            Ok(())
        }
        other => other,
    }
}

/// Warnings of one artifact, kept to a readable number.
#[derive(Default)]
struct Warnings {
    kept: Vec<String>,
    dropped: u64,
}

impl Warnings {
    fn push(&mut self, warning: String) {
        if self.kept.len() < MAX_WARNINGS {
            self.kept.push(warning);
        } else {
            self.dropped += 1;
        }
    }

    fn into_lines(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.kept
                .push(format!("… and {} more warnings like these", self.dropped));
        }
        self.kept
    }
}

/// A directory of the stream that is open (its entries are still coming).
struct OpenDir {
    entry: Entry,
    /// Created in staging (selected itself, or above something selected).
    created: bool,
    /// Everything below it is selected.
    selected: bool,
}

/// Where the current regular file's content goes.
struct OpenFile {
    entry: Entry,
    /// Staging path and writer; none when the content is not kept (or in a dry run).
    writer: Option<(Vec<u8>, FileWriter)>,
    selected: bool,
}

/// Rebuilds one artifact's tree in staging from its decoded entries.
struct Tree {
    target: String,
    dry_run: bool,
    /// `staging/data/<artifact>`: where the artifact's root is restored.
    base: Vec<u8>,
    links_dir: Vec<u8>,
    artifact: String,
    artifact_index: usize,
    only: Option<Rc<Globs>>,
    dirs: Vec<OpenDir>,
    file: Option<OpenFile>,
    /// Stream path of each file with several links → where it is in staging, for the
    /// hard links that name it.
    link_paths: HashMap<Vec<u8>, Vec<u8>>,
    orphans: u64,
    restored: Totals,
    /// What the stream held, from its verified trailer.
    stream: Totals,
    warnings: Warnings,
}

impl Tree {
    fn dest(&self, path: &[u8]) -> Vec<u8> {
        child_path(&self.base, path)
    }

    fn item(&self, path: &[u8]) -> String {
        if path.is_empty() {
            self.artifact.clone()
        } else {
            format!("{}/{}", self.artifact, String::from_utf8_lossy(path))
        }
    }

    fn selected(&self, path: &[u8]) -> bool {
        let parent_selected = self.dirs.last().is_some_and(|d| d.selected);
        parent_selected
            || self
                .only
                .as_ref()
                .is_none_or(|only| only.matches(&self.artifact, path))
    }

    /// Creates the open directories not created yet, outermost first.
    fn create_parents(&mut self) -> Result<()> {
        let first = self
            .dirs
            .iter()
            .position(|d| !d.created)
            .unwrap_or(self.dirs.len());
        for i in first..self.dirs.len() {
            if !self.dry_run {
                files::create_dir(&self.target, &self.dest(&self.dirs[i].entry.path))?;
            }
            self.dirs[i].created = true;
            self.restored.directories += 1;
        }
        Ok(())
    }

    fn set_meta(&mut self, dest: &[u8], entry: &Entry) -> Result<()> {
        if self.dry_run {
            return Ok(());
        }
        let mtime = Timestamp {
            seconds: entry.mtime_seconds,
            nanoseconds: entry.mtime_nanoseconds,
        };
        let item = self.item(&entry.path);
        let warnings = &mut self.warnings;
        let names = match (&entry.user, &entry.group) {
            (Some(user), Some(group)) => format!(" ({user}:{group})"),
            _ => String::new(),
        };
        apply_meta(
            &self.target,
            dest,
            entry.mode,
            (entry.uid, entry.gid),
            mtime,
            &mut || {
                warnings.push(format!(
                "{item}: owner {}:{}{names} not restored (changing owners needs the runner to run as root)",
                entry.uid, entry.gid
            ));
            },
        )
    }

    fn apply(&mut self, event: Event<'_>) -> Result<()> {
        match event {
            Event::Entry(entry) => self.entry(entry),
            Event::Content(bytes) => {
                if let Some(OpenFile {
                    writer: Some((_, writer)),
                    ..
                }) = &self.file
                {
                    writer.write(bytes)?;
                }
                Ok(())
            }
            Event::ContentEnd => {
                let file = self
                    .file
                    .take()
                    .expect("the decoder ends only a file it started");
                if let Some((dest, writer)) = file.writer {
                    writer.close()?;
                    self.set_meta(&dest, &file.entry)?;
                }
                if file.selected {
                    self.restored.count(&file.entry);
                }
                Ok(())
            }
            Event::DirEnd => {
                // Directories get their metadata after their content, deepest first, so
                // adding entries does not change their mtime afterwards.
                let dir = self
                    .dirs
                    .pop()
                    .expect("the decoder ends only a directory it opened");
                if dir.created {
                    let dest = self.dest(&dir.entry.path);
                    self.set_meta(&dest, &dir.entry)?;
                }
                Ok(())
            }
            Event::End(totals) => {
                self.restored.skipped = totals.skipped;
                self.stream = totals;
                Ok(())
            }
        }
    }

    fn entry(&mut self, entry: Entry) -> Result<()> {
        let selected = self.selected(&entry.path);
        let dest = self.dest(&entry.path);
        match entry.kind {
            Kind::Directory => {
                self.dirs.push(OpenDir {
                    entry,
                    created: false,
                    selected,
                });
                if selected {
                    self.create_parents()?;
                }
            }
            Kind::File => {
                let keep_for_links = entry.links > 1;
                let writer_path = if selected {
                    self.create_parents()?;
                    Some(dest)
                } else if keep_for_links {
                    self.orphans += 1;
                    Some(child_path(
                        &self.links_dir,
                        format!("{}-{}", self.artifact_index, self.orphans).as_bytes(),
                    ))
                } else {
                    None
                };
                if keep_for_links && let Some(path) = &writer_path {
                    self.link_paths.insert(entry.path.clone(), path.clone());
                }
                let writer = match writer_path {
                    Some(path) if !self.dry_run => {
                        let writer = files::open_write(&self.target, &path)?;
                        Some((path, writer))
                    }
                    _ => None,
                };
                self.file = Some(OpenFile {
                    entry,
                    writer,
                    selected,
                });
            }
            Kind::Symlink if selected => {
                self.create_parents()?;
                if !self.dry_run {
                    files::symlink(&self.target, &dest, &entry.link)?;
                    self.set_meta(&dest, &entry)?;
                }
                self.restored.count(&entry);
            }
            Kind::HardLink if selected => {
                self.create_parents()?;
                let existing = self.link_paths.get(&entry.link).ok_or_else(|| {
                    Error::corrupt(format!(
                        "hard link {} names a file not stored before it",
                        self.item(&entry.path)
                    ))
                })?;
                if !self.dry_run {
                    files::hard_link(&self.target, existing, &dest)?;
                }
                self.restored.count(&entry);
            }
            Kind::Symlink | Kind::HardLink => {}
        }
        Ok(())
    }

    /// The report line, and whether anything was restored.
    fn report(self) -> (RestoreReport, bool) {
        let (stream, restored) = (self.stream, self.restored.directories > 0);
        let mut metadata = self.restored.metadata();
        if self.only.is_some() {
            let excluded = stream.entries().saturating_sub(self.restored.entries());
            metadata.push(("excluded".into(), excluded.to_string()));
        }
        let report = RestoreReport {
            artifact: self.artifact,
            metadata,
            warnings: self.warnings.into_lines(),
        };
        (report, restored)
    }
}

/// Receives one artifact's stream and rebuilds it in staging as it arrives.
pub struct FilesWriter {
    session: Rc<RefCell<Session>>,
    index: usize,
    decoder: Decoder,
    /// None once finished or failed: a writer is not usable after either.
    tree: Option<Tree>,
}

impl FilesWriter {
    fn tree(&mut self) -> Result<&mut Tree> {
        if self.session.borrow().closed {
            return Err(Error::invalid_input(
                "the restore was already committed or aborted",
            ));
        }
        self.tree
            .as_mut()
            .ok_or_else(|| Error::invalid_input("this artifact already finished or failed"))
    }
}

impl ArtifactWriter for FilesWriter {
    fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.tree()?;
        let FilesWriter { decoder, tree, .. } = self;
        let result = decoder.push(chunk, |event| {
            tree.as_mut().expect("checked above").apply(event)
        });
        if result.is_err() {
            self.tree = None;
        }
        result
    }

    fn finish(&mut self) -> Result<()> {
        self.tree()?;
        let tree = self.tree.take().expect("checked above");
        self.decoder.finish()?;
        let (report, restored) = tree.report();
        let mut session = self.session.borrow_mut();
        let staged = &mut session.artifacts[self.index];
        staged.report = Some(report);
        staged.restored = restored;
        Ok(())
    }
}
