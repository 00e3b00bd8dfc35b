//! Backup: walks one granted root depth-first in name order and streams it, one entry
//! at a time, in the artifact format; file content is read in bounded chunks.

use std::collections::HashMap;
use std::rc::Rc;

use runner_sdk::files::{self, DirEntry, FileKind, FileMeta, FileReader};
use runner_sdk::{ArtifactReader, Error, Metadata, Result, SizeEstimate};

use crate::Settings;
use crate::format::{self, Entry, Kind, Totals};
use crate::select::child_path;

/// Most content bytes asked of the host in one call (the host's own cap).
const MAX_READ: usize = 1 << 20;
/// How often, in content bytes, progress is reported.
const PROGRESS_EVERY: u64 = 64 << 20;

/// One granted root and the artifact it becomes.
pub struct RootArtifact {
    /// The final component of the root's path.
    pub name: String,
    /// The root as the host names it.
    pub root: String,
}

/// Names each root's artifact after its final path component.
pub fn root_artifacts(roots: Vec<String>) -> Result<Vec<RootArtifact>> {
    let mut artifacts: Vec<RootArtifact> = Vec::with_capacity(roots.len());
    for root in roots {
        let name = root
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        if name.is_empty() || name == "." || name == ".." {
            return Err(Error::config_field(
                "paths",
                format!(
                    "{root:?} has no final path component to name its artifact after; back up the directories below it"
                ),
            ));
        }
        if let Some(other) = artifacts.iter().find(|a| a.name == name) {
            return Err(Error::config_field(
                "paths",
                format!(
                    "{:?} and {root:?} would both be stored as artifact {name:?}; back up their common parent instead",
                    other.root
                ),
            ));
        }
        artifacts.push(RootArtifact { name, root });
    }
    Ok(artifacts)
}

/// Most entries the size estimate looks at: past that, the tree is too large to count
/// before the backup starts (counting walks the metadata a second time) and the artifact
/// is listed without a size.
const ESTIMATE_ENTRIES: u64 = 200_000;

/// The bytes the artifact's stream will hold, counted the way the backup walks (the same
/// include, exclude and one-file-system rules, a hard-linked file's content once), so the
/// progress bar has a total. Not exact: the tree may change before it is read. None when
/// the tree has more than [`ESTIMATE_ENTRIES`] entries or cannot be listed.
pub fn estimate(settings: &Settings, artifact: &RootArtifact) -> Option<SizeEstimate> {
    let root = &artifact.root;
    let top = files::stat(root, &[]).ok()?;
    let mut bytes = (format::MAGIC.len() + 4) as u64;
    let mut header = Vec::new();
    let mut counted = |kind, path: &[u8], meta: &FileMeta, link_len: u64| {
        header.clear();
        format::encode_entry(
            &entry_of(kind, path.to_vec(), meta, Vec::new()),
            &mut header,
        );
        header.len() as u64 + link_len
    };
    bytes += counted(Kind::Directory, &[], &top, 0);
    let mut seen_links = std::collections::HashSet::new();
    let mut entries = 0u64;
    // (directory, everything below it selected)
    let mut pending = vec![(Vec::new(), false)];
    while let Some((dir, dir_selected)) = pending.pop() {
        for child in files::read_dir(root, &dir).ok()? {
            entries += 1;
            if entries > ESTIMATE_ENTRIES {
                return None;
            }
            let path = child_path(&dir, &child.name);
            let Some(selected) = settings.selection(&artifact.name, &path, dir_selected) else {
                continue;
            };
            let meta = &child.meta;
            match meta.kind {
                FileKind::Directory => {
                    if selected {
                        bytes += counted(Kind::Directory, &path, meta, 0);
                    }
                    if !settings.one_file_system || meta.device == top.device {
                        pending.push((path, selected));
                    }
                }
                FileKind::Regular if selected => {
                    if meta.links > 1 && !seen_links.insert((meta.device, meta.inode)) {
                        // A hard link: a header naming the first path, no content.
                        bytes += counted(Kind::HardLink, &path, meta, path.len() as u64);
                    } else {
                        bytes += counted(Kind::File, &path, meta, 0) + meta.size;
                    }
                }
                // A symlink's size is the length of its target.
                FileKind::Symlink if selected => {
                    bytes += counted(Kind::Symlink, &path, meta, meta.size);
                }
                _ => {}
            }
        }
    }
    let mut trailer = Vec::new();
    format::encode_trailer(&Totals::default(), &mut trailer);
    Some(SizeEstimate {
        amount: bytes + trailer.len() as u64,
        unit: "bytes".into(),
        exact: false,
    })
}

/// A directory being walked.
struct Frame {
    path: Vec<u8>,
    meta: FileMeta,
    children: std::vec::IntoIter<DirEntry>,
    /// Its entry is in the stream already (an unselected directory is emitted only
    /// when something below it is).
    emitted: bool,
    /// Everything below it is selected.
    selected: bool,
}

/// A regular file whose content is being streamed.
struct Content {
    reader: FileReader,
    path: Vec<u8>,
    size: u64,
    remaining: u64,
}

/// What one step of the walk produced.
enum Step {
    /// Headers were written; no content follows.
    Headers,
    /// A regular file's header was written; its content follows.
    File(Content),
    Finished,
}

/// The depth-first walk of one root.
struct Walk {
    settings: Rc<Settings>,
    root: String,
    artifact: String,
    device: u64,
    stack: Vec<Frame>,
    /// (device, inode) of every emitted file with more than one link → its path.
    first_links: HashMap<(u64, u64), Vec<u8>>,
    totals: Totals,
    /// Files and directories the backup was refused (permissions): the snapshot commits
    /// without them and says so (`incomplete` metadata; the run exits "partial").
    unreadable: u64,
}

impl Walk {
    fn item(&self, path: &[u8]) -> String {
        format!(
            "{}/{}",
            self.root.trim_end_matches('/'),
            String::from_utf8_lossy(path)
        )
    }

    /// The children of a directory, sorted by name; a directory removed since it was
    /// listed is empty.
    fn list(&self, path: &[u8]) -> Result<std::vec::IntoIter<DirEntry>> {
        match files::read_dir(&self.root, path) {
            Ok(entries) => Ok(entries.into_iter()),
            Err(Error::NotFound(_)) => {
                runner_sdk::warn!(
                    "{} disappeared during the backup; stored as empty",
                    self.item(path)
                );
                Ok(Vec::new().into_iter())
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the entries of the directories above the next item that are not in the
    /// stream yet, outermost first.
    fn emit_ancestors(&mut self, out: &mut Vec<u8>) {
        let first_pending = self
            .stack
            .iter()
            .position(|f| !f.emitted)
            .unwrap_or(self.stack.len());
        for frame in &mut self.stack[first_pending..] {
            let entry = entry_of(Kind::Directory, frame.path.clone(), &frame.meta, Vec::new());
            format::encode_entry(&entry, out);
            self.totals.count(&entry);
            frame.emitted = true;
        }
    }

    fn emit(&mut self, entry: Entry, out: &mut Vec<u8>) {
        self.emit_ancestors(out);
        format::encode_entry(&entry, out);
        self.totals.count(&entry);
    }

    fn refused(&mut self, path: &[u8], why: &str) {
        self.unreadable += 1;
        runner_sdk::warn!(
            "could not read {}: {why}; it is not in this snapshot",
            self.item(path)
        );
    }

    fn skip(&mut self, path: &[u8], why: &str) {
        self.totals.skipped += 1;
        runner_sdk::warn!("skipped {}: {why}", self.item(path));
    }

    fn step(&mut self, out: &mut Vec<u8>) -> Result<Step> {
        loop {
            let Some(frame) = self.stack.last_mut() else {
                return Ok(Step::Finished);
            };
            let Some(child) = frame.children.next() else {
                self.stack.pop();
                continue;
            };
            let path = child_path(&frame.path, &child.name);
            let Some(selected) = self
                .settings
                .selection(&self.artifact, &path, frame.selected)
            else {
                continue;
            };
            match child.meta.kind {
                FileKind::Directory => {
                    if selected {
                        self.emit(
                            entry_of(Kind::Directory, path.clone(), &child.meta, Vec::new()),
                            out,
                        );
                    }
                    if self.settings.one_file_system && child.meta.device != self.device {
                        if selected {
                            runner_sdk::info!(
                                "{} is another file system; its content is not backed up",
                                self.item(&path)
                            );
                        }
                    } else {
                        let children = match self.list(&path) {
                            Ok(children) => children,
                            Err(Error::AccessDenied(why)) => {
                                self.refused(&path, &why);
                                Vec::new().into_iter()
                            }
                            Err(e) => return Err(e),
                        };
                        self.stack.push(Frame {
                            path,
                            meta: child.meta,
                            children,
                            emitted: selected,
                            selected,
                        });
                    }
                    if selected {
                        return Ok(Step::Headers);
                    }
                }
                FileKind::Regular if selected => {
                    if let Some(step) = self.regular_file(path, &child.meta, out)? {
                        return Ok(step);
                    }
                }
                FileKind::Symlink if selected => match files::read_link(&self.root, &path) {
                    Ok(target) => {
                        self.emit(entry_of(Kind::Symlink, path, &child.meta, target), out);
                        return Ok(Step::Headers);
                    }
                    Err(Error::NotFound(_) | Error::InvalidInput(_)) => {
                        self.skip(&path, "it changed during the backup")
                    }
                    Err(e) => return Err(e),
                },
                FileKind::Fifo
                | FileKind::Socket
                | FileKind::BlockDevice
                | FileKind::CharDevice
                    if selected =>
                {
                    let kind = match child.meta.kind {
                        FileKind::Fifo => "a fifo",
                        FileKind::Socket => "a socket",
                        _ => "a device",
                    };
                    self.skip(&path, &format!("{kind} has no content to back up"));
                }
                _ => {}
            }
        }
    }

    /// A regular file: a hard link to an earlier path, or a header and open content.
    /// None when the file vanished since its directory was listed.
    fn regular_file(
        &mut self,
        path: Vec<u8>,
        listed: &FileMeta,
        out: &mut Vec<u8>,
    ) -> Result<Option<Step>> {
        if listed.links > 1
            && let Some(first) = self.first_links.get(&(listed.device, listed.inode))
        {
            let first = first.clone();
            self.emit(entry_of(Kind::HardLink, path, listed, first), out);
            return Ok(Some(Step::Headers));
        }
        let reader = match files::open_read(&self.root, &path) {
            Ok(reader) => reader,
            Err(Error::NotFound(_) | Error::InvalidInput(_)) => {
                self.skip(&path, "it disappeared or changed kind during the backup");
                return Ok(None);
            }
            Err(Error::AccessDenied(why)) => {
                self.refused(&path, &why);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        // Metadata taken after opening describes the file being read, should it have
        // been replaced since the listing.
        let meta = match files::stat(&self.root, &path) {
            Ok(meta) if matches!(meta.kind, FileKind::Regular) => meta,
            Ok(_) | Err(Error::NotFound(_)) => {
                self.skip(&path, "it disappeared or changed kind during the backup");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if meta.links > 1 {
            self.first_links
                .insert((meta.device, meta.inode), path.clone());
        }
        let size = meta.size;
        self.emit(entry_of(Kind::File, path.clone(), &meta, Vec::new()), out);
        Ok(Some(Step::File(Content {
            reader,
            path,
            size,
            remaining: size,
        })))
    }
}

fn entry_of(kind: Kind, path: Vec<u8>, meta: &FileMeta, link: Vec<u8>) -> Entry {
    Entry {
        kind,
        path,
        mode: meta.mode & 0o7777,
        uid: meta.uid,
        gid: meta.gid,
        user: meta.user.clone(),
        group: meta.group.clone(),
        mtime_seconds: meta.mtime.seconds,
        mtime_nanoseconds: meta.mtime.nanoseconds,
        size: if kind == Kind::File { meta.size } else { 0 },
        links: meta.links,
        link,
    }
}

/// Streams one root as an artifact.
pub struct FilesReader {
    walk: Walk,
    /// Encoded headers not yet handed out.
    pending: Vec<u8>,
    pending_pos: usize,
    content: Option<Content>,
    finished: bool,
    content_bytes: u64,
    next_progress: u64,
}

impl FilesReader {
    pub fn open(settings: Rc<Settings>, artifact: &RootArtifact) -> Result<Self> {
        let root_meta = files::stat(&artifact.root, &[])?;
        if !matches!(root_meta.kind, FileKind::Directory) {
            return Err(Error::unsupported(format!(
                "{} is not a directory",
                artifact.root
            )));
        }
        let mut walk = Walk {
            settings,
            root: artifact.root.clone(),
            artifact: artifact.name.clone(),
            device: root_meta.device,
            stack: Vec::new(),
            first_links: HashMap::new(),
            totals: Totals::default(),
            unreadable: 0,
        };
        let selected = walk
            .settings
            .include
            .as_ref()
            .is_none_or(|g| g.matches(&walk.artifact, &[]));
        let children = walk.list(&[])?;
        // The root is always stored: it is the artifact's directory.
        walk.stack.push(Frame {
            path: Vec::new(),
            meta: root_meta,
            children,
            emitted: false,
            selected,
        });
        let mut pending = Vec::new();
        format::encode_start(&mut pending);
        walk.emit_ancestors(&mut pending);
        Ok(FilesReader {
            walk,
            pending,
            pending_pos: 0,
            content: None,
            finished: false,
            content_bytes: 0,
            next_progress: PROGRESS_EVERY,
        })
    }

    fn changed_error(&self, content: &Content, read: &str) -> Error {
        // The header already promised `size` bytes; padding or cutting the content would
        // store a file that never existed, so the artifact fails instead and says which
        // file to retry or exclude.
        Error::internal(format!(
            "{} changed size while being read ({} bytes when listed, {read}); run the backup again or exclude the file",
            self.walk.item(&content.path),
            content.size
        ))
    }

    /// Moves up to `want` content bytes of the current file into `chunk`.
    fn read_content(&mut self, chunk: &mut Vec<u8>, want: usize) -> Result<()> {
        let Some(content) = self.content.as_mut() else {
            return Ok(());
        };
        if content.remaining == 0 {
            // Everything promised was read; one more byte means the file grew.
            let grew = content
                .reader
                .read(1)?
                .is_some_and(|extra| !extra.is_empty());
            let content = self.content.take().unwrap();
            if grew {
                return Err(self.changed_error(&content, "more when read"));
            }
            return Ok(());
        }
        let ask = want
            .min(MAX_READ)
            .min(usize::try_from(content.remaining).unwrap_or(usize::MAX));
        match content.reader.read(ask as u32)? {
            Some(data) if !data.is_empty() && data.len() <= ask => {
                content.remaining -= data.len() as u64;
                self.content_bytes += data.len() as u64;
                if chunk.is_empty() {
                    *chunk = data;
                } else {
                    chunk.extend_from_slice(&data);
                }
            }
            Some(data) if data.len() > ask => {
                return Err(Error::internal(format!(
                    "the host returned {} bytes for a read of {ask}",
                    data.len()
                )));
            }
            _ => {
                let content = self.content.take().unwrap();
                let read = format!("{} when read", content.size - content.remaining);
                return Err(self.changed_error(&content, &read));
            }
        }
        if self.content_bytes >= self.next_progress {
            runner_sdk::log::progress(self.content_bytes, None, "bytes");
            self.next_progress += PROGRESS_EVERY;
        }
        Ok(())
    }
}

impl ArtifactReader for FilesReader {
    fn read(&mut self, max: usize) -> Result<Option<Vec<u8>>> {
        if max == 0 {
            return Err(Error::invalid_input("read with max = 0"));
        }
        let mut chunk = Vec::new();
        while chunk.len() < max {
            if self.pending_pos < self.pending.len() {
                let n = (max - chunk.len()).min(self.pending.len() - self.pending_pos);
                chunk.extend_from_slice(&self.pending[self.pending_pos..self.pending_pos + n]);
                self.pending_pos += n;
                if self.pending_pos == self.pending.len() {
                    self.pending.clear();
                    self.pending_pos = 0;
                }
            } else if self.content.is_some() {
                let want = max - chunk.len();
                self.read_content(&mut chunk, want)?;
            } else if self.finished {
                break;
            } else {
                match self.walk.step(&mut self.pending)? {
                    Step::Headers => {}
                    Step::File(content) => self.content = Some(content),
                    Step::Finished => {
                        format::encode_trailer(&self.walk.totals, &mut self.pending);
                        self.finished = true;
                    }
                }
            }
        }
        Ok((!chunk.is_empty()).then_some(chunk))
    }

    fn finish(&mut self) -> Result<Metadata> {
        if !self.finished || self.pending_pos < self.pending.len() || self.content.is_some() {
            return Err(Error::invalid_input(
                "finish before the artifact was read to its end",
            ));
        }
        let mut metadata = vec![("root".to_string(), self.walk.root.clone())];
        metadata.extend(self.walk.totals.metadata());
        if self.walk.unreadable > 0 {
            // The host's convention for "committed, but not everything": exit code 3.
            metadata.push(("incomplete".to_string(), self.walk.unreadable.to_string()));
        }
        Ok(metadata)
    }
}
