//! The artifact stream format (version 1): encoding entries, and an incremental decoder
//! that checks every header and the tree's shape before anything is restored.

use std::collections::HashSet;

use runner_sdk::{Error, Result};

pub const MAGIC: &[u8; 8] = b"RUNFILES";
pub const VERSION: u32 = 1;
pub const MEDIA_TYPE: &str = "application/x-runner-files";

const TAG_ENTRY: u8 = b'E';
const TAG_TRAILER: u8 = b'T';
/// tag (1) + body length (4).
const FRAME_START: usize = 5;
/// The crc32 after each body.
const FRAME_END: usize = 4;
/// Largest header body accepted: paths and link targets fit many times over, and a
/// corrupt length can never make the decoder allocate more.
pub const MAX_BODY: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File = 1,
    Directory = 2,
    Symlink = 3,
    /// Another name for a regular file emitted earlier; `link` holds that file's path.
    HardLink = 4,
}

/// One item of the tree, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Raw bytes, `/`-separated, relative to the artifact's root; empty for the root.
    pub path: Vec<u8>,
    /// Permission bits with setuid, setgid and sticky (mode & 0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub user: Option<String>,
    pub group: Option<String>,
    pub mtime_seconds: i64,
    pub mtime_nanoseconds: u32,
    /// Content bytes that follow the header (regular files only).
    pub size: u64,
    /// Link count at backup: a file with more than one may be the target of later
    /// hard-link entries, which a filtered restore must still be able to create.
    pub links: u64,
    /// Symlink target (raw, relative or absolute) or the hard link's first path.
    pub link: Vec<u8>,
}

/// Counts of what a stream holds; the trailer carries them so truncation and dropped
/// entries are detected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub bytes: u64,
    /// Special files the backup met and left out (informational, not checked).
    pub skipped: u64,
}

impl Totals {
    /// Saturating: sizes come from untrusted headers, and a huge one must end in a
    /// `corrupt` error (truncation, trailer mismatch), not an overflow.
    pub fn count(&mut self, entry: &Entry) {
        match entry.kind {
            Kind::File => {
                self.files = self.files.saturating_add(1);
                self.bytes = self.bytes.saturating_add(entry.size);
            }
            Kind::Directory => self.directories = self.directories.saturating_add(1),
            Kind::Symlink => self.symlinks = self.symlinks.saturating_add(1),
            Kind::HardLink => self.hardlinks = self.hardlinks.saturating_add(1),
        }
    }

    /// Entries of every kind.
    pub fn entries(&self) -> u64 {
        [self.files, self.directories, self.symlinks, self.hardlinks]
            .into_iter()
            .fold(0, u64::saturating_add)
    }

    /// As artifact metadata and report lines.
    pub fn metadata(&self) -> Vec<(String, String)> {
        [
            ("files", self.files),
            ("directories", self.directories),
            ("symlinks", self.symlinks),
            ("hardlinks", self.hardlinks),
            ("bytes", self.bytes),
            ("skipped", self.skipped),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

pub fn encode_start(out: &mut Vec<u8>) {
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
}

pub fn encode_entry(entry: &Entry, out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(64 + entry.path.len() + entry.link.len());
    body.push(entry.kind as u8);
    body.extend_from_slice(&entry.mode.to_le_bytes());
    body.extend_from_slice(&entry.uid.to_le_bytes());
    body.extend_from_slice(&entry.gid.to_le_bytes());
    body.extend_from_slice(&entry.mtime_seconds.to_le_bytes());
    body.extend_from_slice(&entry.mtime_nanoseconds.to_le_bytes());
    body.extend_from_slice(&entry.size.to_le_bytes());
    body.extend_from_slice(&entry.links.to_le_bytes());
    put_blob(&mut body, &entry.path);
    put_blob(&mut body, &entry.link);
    for name in [&entry.user, &entry.group] {
        match name {
            Some(name) => {
                body.push(1);
                put_blob(&mut body, name.as_bytes());
            }
            None => body.push(0),
        }
    }
    frame(TAG_ENTRY, &body, out);
}

pub fn encode_trailer(totals: &Totals, out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(48);
    for n in [
        totals.files,
        totals.directories,
        totals.symlinks,
        totals.hardlinks,
        totals.bytes,
        totals.skipped,
    ] {
        body.extend_from_slice(&n.to_le_bytes());
    }
    frame(TAG_TRAILER, &body, out);
}

fn put_blob(body: &mut Vec<u8>, bytes: &[u8]) {
    body.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    body.extend_from_slice(bytes);
}

fn frame(tag: u8, body: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.push(tag);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Whether `path` is a valid relative path in a stream: components that are not empty,
/// `.` or `..`, no NUL. The empty path (the root) is valid.
pub fn valid_path(path: &[u8]) -> bool {
    path.is_empty()
        || (!path.contains(&0)
            && path
                .split(|&b| b == b'/')
                .all(|part| !matches!(part, b"" | b"." | b"..")))
}

/// The parent of a non-empty path (`""` for a top-level item) and its final name.
pub fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// What the decoder found, in stream order.
#[derive(Debug)]
pub enum Event<'a> {
    /// A checked entry; its parent directory was announced before it.
    Entry(Entry),
    /// Content of the current regular file, in pieces.
    Content(&'a [u8]),
    /// The current regular file's content is complete (right after `Entry` when empty).
    ContentEnd,
    /// The most recently announced open directory has no more entries.
    DirEnd,
    /// The trailer matched what was decoded; nothing may follow.
    End(Totals),
}

enum State {
    Start,
    Header,
    Content { remaining: u64 },
    Done,
}

/// An open directory of the tree being decoded.
struct OpenDir {
    path: Vec<u8>,
    last_child: Option<Vec<u8>>,
}

/// Decodes a stream pushed in arbitrary pieces. Buffers at most one header; content
/// is handed on as slices of the input.
pub struct Decoder {
    state: State,
    buf: Vec<u8>,
    open_dirs: Vec<OpenDir>,
    seen_root: bool,
    /// Paths of regular files with more than one link: what a hard-link entry may name.
    link_targets: HashSet<Vec<u8>>,
    totals: Totals,
    entries: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            state: State::Start,
            buf: Vec::new(),
            open_dirs: Vec::new(),
            seen_root: false,
            link_targets: HashSet::new(),
            totals: Totals::default(),
            entries: 0,
        }
    }
}

impl Decoder {
    pub fn push(
        &mut self,
        mut input: &[u8],
        mut on_event: impl FnMut(Event<'_>) -> Result<()>,
    ) -> Result<()> {
        while !input.is_empty() {
            match self.state {
                State::Start => {
                    let header_len = MAGIC.len() + 4;
                    input = self.fill(input, header_len);
                    if self.buf.len() == header_len {
                        if &self.buf[..MAGIC.len()] != MAGIC {
                            return Err(Error::corrupt(
                                "not a runner files stream (bad magic bytes)",
                            ));
                        }
                        let version =
                            u32::from_le_bytes(self.buf[MAGIC.len()..].try_into().unwrap());
                        if version != VERSION {
                            return Err(Error::corrupt(format!(
                                "unknown files stream version {version} (this plugin reads version {VERSION})"
                            )));
                        }
                        self.buf.clear();
                        self.state = State::Header;
                    }
                }
                State::Header => {
                    input = self.fill(input, FRAME_START);
                    if self.buf.len() < FRAME_START {
                        continue;
                    }
                    let tag = self.buf[0];
                    if tag != TAG_ENTRY && tag != TAG_TRAILER {
                        return Err(self.corrupt(format!("unknown record tag {tag:#04x}")));
                    }
                    let body_len = u32::from_le_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                    if body_len > MAX_BODY {
                        return Err(self.corrupt(format!(
                            "header of {body_len} bytes exceeds the {MAX_BODY}-byte limit"
                        )));
                    }
                    let frame_len = FRAME_START + body_len + FRAME_END;
                    input = self.fill(input, frame_len);
                    if self.buf.len() < frame_len {
                        continue;
                    }
                    let (framed, crc) = self.buf.split_at(FRAME_START + body_len);
                    if crc32fast::hash(framed) != u32::from_le_bytes(crc.try_into().unwrap()) {
                        return Err(self.corrupt("header checksum mismatch"));
                    }
                    let body = &self.buf[FRAME_START..FRAME_START + body_len];
                    if tag == TAG_TRAILER {
                        let trailer = parse_trailer(body).map_err(|m| self.corrupt(m))?;
                        self.buf.clear();
                        self.end(trailer, &mut on_event)?;
                    } else {
                        let entry = parse_entry(body).map_err(|m| self.corrupt(m))?;
                        self.buf.clear();
                        self.entry(entry, &mut on_event)?;
                    }
                }
                State::Content { remaining } => {
                    let n = remaining.min(input.len() as u64) as usize;
                    let (piece, rest) = input.split_at(n);
                    on_event(Event::Content(piece))?;
                    input = rest;
                    if remaining == n as u64 {
                        self.state = State::Header;
                        on_event(Event::ContentEnd)?;
                    } else {
                        self.state = State::Content {
                            remaining: remaining - n as u64,
                        };
                    }
                }
                State::Done => {
                    return Err(Error::corrupt("data follows the end of the files stream"));
                }
            }
        }
        Ok(())
    }

    /// After the last byte: the stream must have ended with its trailer.
    pub fn finish(&self) -> Result<()> {
        match self.state {
            State::Done => Ok(()),
            State::Content { remaining } => Err(Error::corrupt(format!(
                "the files stream is truncated: {remaining} bytes of a file's content are missing"
            ))),
            _ => Err(Error::corrupt(
                "the files stream is truncated: it ends before its trailer",
            )),
        }
    }

    /// Moves up to `want - buf.len()` bytes from `input` into the header buffer.
    fn fill<'a>(&mut self, input: &'a [u8], want: usize) -> &'a [u8] {
        let n = want.saturating_sub(self.buf.len()).min(input.len());
        self.buf.extend_from_slice(&input[..n]);
        &input[n..]
    }

    fn corrupt(&self, message: impl std::fmt::Display) -> Error {
        Error::corrupt(format!(
            "files stream, record {}: {message}",
            self.entries + 1
        ))
    }

    /// Checks where the entry sits in the tree, closing directories it has left.
    fn entry(
        &mut self,
        entry: Entry,
        on_event: &mut impl FnMut(Event<'_>) -> Result<()>,
    ) -> Result<()> {
        let shown = String::from_utf8_lossy(&entry.path).into_owned();
        if entry.path.is_empty() {
            if self.seen_root || entry.kind != Kind::Directory {
                return Err(self.corrupt("a second root, or a root that is not a directory"));
            }
            self.seen_root = true;
        } else {
            if !self.seen_root {
                return Err(self.corrupt(format!("{shown:?} comes before the root directory")));
            }
            let (parent, name) = split_parent(&entry.path);
            while self.open_dirs.last().is_some_and(|dir| dir.path != parent) {
                self.open_dirs.pop();
                on_event(Event::DirEnd)?;
            }
            let Some(dir) = self.open_dirs.last_mut() else {
                return Err(self.corrupt(format!(
                    "{shown:?} is outside the directory being listed (entries out of order)"
                )));
            };
            if dir.last_child.as_deref().is_some_and(|last| last >= name) {
                return Err(self.corrupt(format!("{shown:?} is out of order or repeated")));
            }
            dir.last_child = Some(name.to_vec());
        }
        match entry.kind {
            Kind::Directory => self.open_dirs.push(OpenDir {
                path: entry.path.clone(),
                last_child: None,
            }),
            Kind::File if entry.links > 1 => {
                self.link_targets.insert(entry.path.clone());
            }
            Kind::HardLink if !self.link_targets.contains(&entry.link) => {
                return Err(self.corrupt(format!(
                    "hard link {shown:?} names a file not stored before it"
                )));
            }
            _ => {}
        }
        self.totals.count(&entry);
        self.entries += 1;
        let content = (entry.kind == Kind::File).then_some(entry.size);
        on_event(Event::Entry(entry))?;
        match content {
            Some(0) => on_event(Event::ContentEnd)?,
            Some(size) => self.state = State::Content { remaining: size },
            None => {}
        }
        Ok(())
    }

    fn end(
        &mut self,
        trailer: Totals,
        on_event: &mut impl FnMut(Event<'_>) -> Result<()>,
    ) -> Result<()> {
        let decoded = Totals {
            skipped: trailer.skipped,
            ..self.totals
        };
        if decoded != trailer {
            return Err(self.corrupt(format!(
                "the trailer says {trailer:?} but the stream holds {decoded:?}"
            )));
        }
        if !self.seen_root {
            return Err(self.corrupt("the stream has no root directory"));
        }
        while self.open_dirs.pop().is_some() {
            on_event(Event::DirEnd)?;
        }
        self.state = State::Done;
        on_event(Event::End(trailer))
    }
}

/// Reads fields from a header body; running out is corruption, never a panic.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err("a header field runs past the end of its header".into());
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().unwrap())
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn blob(&mut self) -> Result<&'a [u8], String> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    fn name(&mut self) -> Result<Option<String>, String> {
        match self.u8()? {
            0 => Ok(None),
            1 => String::from_utf8(self.blob()?.to_vec())
                .map(Some)
                .map_err(|_| "an owner name is not UTF-8".into()),
            flag => Err(format!("bad owner-name flag {flag}")),
        }
    }
}

fn parse_entry(body: &[u8]) -> Result<Entry, String> {
    let mut f = Fields(body);
    let kind = match f.u8()? {
        1 => Kind::File,
        2 => Kind::Directory,
        3 => Kind::Symlink,
        4 => Kind::HardLink,
        other => return Err(format!("unknown entry kind {other}")),
    };
    let entry = Entry {
        kind,
        mode: f.u32()?,
        uid: f.u32()?,
        gid: f.u32()?,
        mtime_seconds: f.i64()?,
        mtime_nanoseconds: f.u32()?,
        size: f.u64()?,
        links: f.u64()?,
        path: f.blob()?.to_vec(),
        link: f.blob()?.to_vec(),
        user: f.name()?,
        group: f.name()?,
    };
    if !f.0.is_empty() {
        return Err("an entry header has trailing bytes".into());
    }
    let shown = String::from_utf8_lossy(&entry.path);
    if !valid_path(&entry.path) {
        return Err(format!("invalid path {shown:?}"));
    }
    if entry.mode > 0o7777 || entry.mtime_nanoseconds >= 1_000_000_000 {
        return Err(format!("{shown:?}: mode or mtime out of range"));
    }
    if kind != Kind::File && entry.size != 0 {
        return Err(format!("{shown:?}: only regular files carry content"));
    }
    let link_ok = match kind {
        Kind::Symlink => !entry.link.is_empty() && !entry.link.contains(&0),
        Kind::HardLink => !entry.link.is_empty() && valid_path(&entry.link),
        Kind::File | Kind::Directory => entry.link.is_empty(),
    };
    if !link_ok {
        return Err(format!("{shown:?}: invalid link target"));
    }
    if entry.path.is_empty() && kind != Kind::Directory {
        return Err("the root entry is not a directory".into());
    }
    Ok(entry)
}

fn parse_trailer(body: &[u8]) -> Result<Totals, String> {
    let mut f = Fields(body);
    let totals = Totals {
        files: f.u64()?,
        directories: f.u64()?,
        symlinks: f.u64()?,
        hardlinks: f.u64()?,
        bytes: f.u64()?,
        skipped: f.u64()?,
    };
    if !f.0.is_empty() {
        return Err("the trailer has trailing bytes".into());
    }
    Ok(totals)
}
