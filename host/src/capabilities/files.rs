//! The file-metadata service for the files source: POSIX metadata, raw names and links,
//! scoped to the stage's granted directories.
//!
//! Every call names a granted root and a relative path of raw bytes. The path is walked
//! one component at a time from a capability handle on the root, never following a
//! symlink, so neither `..` nor a symlink (inside the root, pointing anywhere) can reach
//! outside it. The final component is acted on through its parent's handle with the
//! `*at` calls and `AT_SYMLINK_NOFOLLOW`: a symlink is always the object itself.
//! Calls on a root that lies wholly on local filesystems run inline; on any other root
//! (network, FUSE) they run on tokio's blocking pool, so a hung server cannot stall the
//! executor and the engine's per-call timeout still fires (see [`Calls`]).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::{Arc, OnceLock};

use cap_fs_ext::DirExt;
use cap_std::fs::{Dir, PermissionsExt};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use wasmtime::component::Resource;

use crate::capabilities::HostState;
use crate::config::{DirAccess, Grants};
use crate::engine::bindings::services::runner::plugin::files::{
    DirEntry, FileKind, FileMeta, Host, HostFileReader, HostFileWriter, Timestamp,
};
use crate::engine::bindings::services::runner::plugin::types::Error;

/// Most bytes one `file-reader.read` returns, whatever the plugin asks for.
const MAX_READ: u32 = 1 << 20;
/// Modes of what the service creates, until the plugin applies the real ones: private,
/// so restored data is not readable by others while it sits in staging.
const NEW_DIR_MODE: u32 = 0o700;
const NEW_FILE_MODE: u32 = 0o600;

/// The directories a stage was granted, by guest name (their host path as text).
#[derive(Default)]
pub struct FileRoots {
    roots: Vec<FileRoot>,
    /// User and group names, read from /etc/passwd and /etc/group on first use.
    accounts: Arc<OnceLock<AccountNames>>,
}

struct FileRoot {
    name: String,
    dir: Arc<Dir>,
    access: DirAccess,
    calls: Calls,
}

/// Where a root's filesystem calls run.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Calls {
    /// On the calling thread. A local filesystem answers in microseconds, less than the
    /// hop to the blocking pool and back: with hops, restoring 20 000 small files spent
    /// half its time waiting for them.
    Inline,
    /// On tokio's blocking pool: the root is, or has below it, a filesystem that may wait
    /// on a network (NFS, SMB, FUSE, or one `mounts` does not know).
    Pool,
}

impl FileRoots {
    /// Opens every granted directory once; each handle is the boundary of what the
    /// plugin can reach under that root.
    pub fn new(grants: &Grants) -> anyhow::Result<Self> {
        let mut roots = Vec::with_capacity(grants.dirs.len());
        for grant in &grants.dirs {
            let dir =
                Dir::open_ambient_dir(&grant.path, cap_std::ambient_authority()).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot open granted directory {}: {e}",
                        grant.path.display()
                    )
                })?;
            let calls = if super::mounts::wholly_local(&grant.path) {
                Calls::Inline
            } else {
                Calls::Pool
            };
            roots.push(FileRoot {
                name: grant.path.to_string_lossy().into_owned(),
                dir: Arc::new(dir),
                access: grant.access,
                calls,
            });
        }
        Ok(FileRoots {
            roots,
            accounts: Arc::default(),
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.roots.iter().map(|root| root.name.as_str())
    }

    /// Checks a call's root and path; `write` calls need a read-write grant.
    fn locate(&self, root: &str, path: &[u8], write: bool) -> Result<Location, Error> {
        let granted = self.roots.iter().find(|r| r.name == root).ok_or_else(|| {
            Error::AccessDenied(format!("{root:?} is not a directory granted to this stage"))
        })?;
        let shown = shown_path(root, path);
        if write && granted.access != DirAccess::ReadWrite {
            return Err(Error::AccessDenied(format!(
                "{shown}: {root} is granted read-only"
            )));
        }
        let components = checked_components(path)
            .map_err(|why| Error::AccessDenied(format!("{shown}: {why}")))?;
        Ok(Location {
            root: granted.dir.clone(),
            calls: granted.calls,
            components,
            shown,
        })
    }
}

impl FileRoots {
    /// Two writable paths under one root for a two-path operation (`what` the first,
    /// replacing the second); neither may be the root itself.
    fn locate_pair(
        &self,
        root: &str,
        from: &[u8],
        to: &[u8],
        what: &str,
    ) -> Result<(Location, Location), Error> {
        let from = self.locate(root, from, true)?;
        let to = self.locate(root, to, true)?;
        from.not_root(what)?;
        to.not_root("replace")?;
        Ok((from, to))
    }
}

impl FileRoots {
    /// The host path of a regular file under a granted root, checked like every call of
    /// this service (no `..`, no symlink on the way or at the end), for host services that
    /// must open a file by name (SQLite opens a database, its journal and its WAL by path).
    pub(crate) async fn regular_file(
        &self,
        root: &str,
        path: &[u8],
    ) -> Result<std::path::PathBuf, Error> {
        let at = self.locate(root, path, false)?;
        at.not_root("open")?;
        let mut host = std::path::PathBuf::from(root);
        host.extend(&at.components);
        blocking(at.calls, move || {
            let (parent, name) = at.parent()?;
            let st = lstat(&parent, &name).map_err(|e| io_error(e, &at.shown))?;
            if file_type(&st) != FileType::RegularFile {
                return Err(Error::InvalidInput(format!(
                    "{} is not a regular file",
                    at.shown
                )));
            }
            Ok(host)
        })
        .await
    }
}

/// A checked path under a root: what the blocking calls act on.
struct Location {
    root: Arc<Dir>,
    calls: Calls,
    /// Never empty, `.` or `..`, never containing `/` or NUL.
    components: Vec<OsString>,
    /// `root/path` (lossy) for error messages.
    shown: String,
}

impl Location {
    fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The directory holding the final component and that component's name; the root
    /// itself is addressed as `.` in its own handle.
    fn parent(&self) -> Result<(Dir, OsString), Error> {
        match self.components.split_last() {
            None => Ok((
                self.root
                    .try_clone()
                    .map_err(|e| io_error(e, &self.shown))?,
                OsString::from("."),
            )),
            Some((name, parents)) => Ok((walk(&self.root, parents, &self.shown)?, name.clone())),
        }
    }

    /// The directory this location names, opened without following symlinks.
    fn dir(&self) -> Result<Dir, Error> {
        walk(&self.root, &self.components, &self.shown)
    }

    /// Refuses operations that would replace or remove a granted root itself.
    fn not_root(&self, what: &str) -> Result<(), Error> {
        if self.is_root() {
            return Err(Error::AccessDenied(format!(
                "{}: cannot {what} a granted root itself",
                self.shown
            )));
        }
        Ok(())
    }
}

fn shown_path(root: &str, path: &[u8]) -> String {
    if path.is_empty() {
        root.to_string()
    } else {
        format!(
            "{}/{}",
            root.trim_end_matches('/'),
            String::from_utf8_lossy(path)
        )
    }
}

/// Splits a `/`-separated relative path into components, refusing anything that could
/// name a place outside the root or something other than one entry per component.
fn checked_components(path: &[u8]) -> Result<Vec<OsString>, &'static str> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    if path.starts_with(b"/") {
        return Err("absolute paths are not allowed");
    }
    if path.contains(&0) {
        return Err("paths cannot contain NUL bytes");
    }
    path.split(|&b| b == b'/')
        .map(|part| match part {
            b"" => Err("empty path components are not allowed"),
            b"." | b".." => Err("`.` and `..` path components are not allowed"),
            _ => Ok(OsStr::from_bytes(part).to_os_string()),
        })
        .collect()
}

/// Opens the directory `components` name under `root`: a symlink anywhere on the way is
/// refused, not followed. One `openat2` resolves the whole path beneath the root (a file
/// call used to cost a dup, an open and a close per component); where it fails, or the
/// kernel lacks it, the walk goes one component at a time, each opened with O_NOFOLLOW,
/// which also says precisely what is wrong.
fn walk(root: &Dir, components: &[OsString], shown: &str) -> Result<Dir, Error> {
    if !components.is_empty() {
        use rustix::fs::ResolveFlags;
        let path = components.join(OsStr::new("/"));
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        if let Ok(fd) = rustix::fs::openat2(root, &path, flags, Mode::empty(), resolve) {
            return Ok(Dir::from_std_file(std::fs::File::from(fd)));
        }
    }
    let mut dir = root.try_clone().map_err(|e| io_error(e, shown))?;
    for name in components {
        dir = match dir.open_dir_nofollow(name) {
            Ok(next) => next,
            Err(e) => {
                return Err(match lstat(&dir, name).map(|st| file_type(&st)) {
                    Ok(FileType::Symlink) => Error::AccessDenied(format!(
                        "{shown}: the path crosses a symbolic link, which is never followed"
                    )),
                    Ok(FileType::Directory) | Err(_) => io_error(e, shown),
                    Ok(_) => Error::InvalidInput(format!(
                        "{shown}: a component of the path is not a directory"
                    )),
                });
            }
        };
    }
    Ok(dir)
}

fn lstat(dir: &Dir, name: &OsStr) -> io::Result<rustix::fs::Stat> {
    Ok(rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

fn file_type(st: &rustix::fs::Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode as _)
}

/// Maps an io error onto the contract's variants, naming the path.
fn io_error(e: io::Error, shown: &str) -> Error {
    use io::ErrorKind as Kind;
    let message = format!("{shown}: {e}");
    match e.kind() {
        Kind::NotFound => Error::NotFound(message),
        Kind::PermissionDenied | Kind::ReadOnlyFilesystem => Error::AccessDenied(message),
        Kind::AlreadyExists | Kind::DirectoryNotEmpty => Error::AlreadyExists(message),
        Kind::NotADirectory | Kind::IsADirectory | Kind::InvalidInput | Kind::CrossesDevices => {
            Error::InvalidInput(message)
        }
        _ if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            Error::AccessDenied(format!(
                "{shown} is a symbolic link, which is never followed"
            ))
        }
        _ => Error::Internal(message),
    }
}

/// Runs filesystem work as the root's [`Calls`] say: on the blocking pool, a call stuck in
/// the kernel (a dead network mount) still lets the plugin's call timeout fail the run
/// instead of hanging it.
async fn blocking<T: Send + 'static>(
    calls: Calls,
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    if calls == Calls::Inline {
        return work();
    }
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(Error::Internal(format!("file operation failed: {e}"))))
}

/// uid → user name and gid → group name, as the host's account files say.
#[derive(Default)]
struct AccountNames {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl AccountNames {
    /// Unreadable or missing files give no names, which the contract allows.
    fn load() -> Self {
        let read = |path: &str| {
            std::fs::read(path)
                .map(|bytes| parse_account_file(&bytes))
                .unwrap_or_default()
        };
        AccountNames {
            users: read("/etc/passwd"),
            groups: read("/etc/group"),
        }
    }
}

/// `name:password:id:…` lines (passwd and group share the first three fields); the
/// first name listed for an id wins, as getpwuid would return.
fn parse_account_file(bytes: &[u8]) -> HashMap<u32, String> {
    let mut names = HashMap::new();
    for line in String::from_utf8_lossy(bytes).lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        if let Ok(id) = id.trim().parse::<u32>() {
            names.entry(id).or_insert_with(|| name.to_string());
        }
    }
    names
}

fn meta_of(st: &rustix::fs::Stat, accounts: &OnceLock<AccountNames>) -> FileMeta {
    let accounts = accounts.get_or_init(AccountNames::load);
    let kind = match file_type(st) {
        FileType::RegularFile => FileKind::Regular,
        FileType::Directory => FileKind::Directory,
        FileType::Symlink => FileKind::Symlink,
        FileType::Fifo => FileKind::Fifo,
        FileType::Socket => FileKind::Socket,
        FileType::BlockDevice => FileKind::BlockDevice,
        FileType::CharacterDevice => FileKind::CharDevice,
        // stat on Linux always reports one of the kinds above; should another appear,
        // calling it a device makes the plugin skip it like any special file.
        FileType::Unknown => FileKind::CharDevice,
    };
    #[allow(clippy::unnecessary_cast)] // field widths differ between architectures
    FileMeta {
        kind,
        size: st.st_size as u64,
        mode: st.st_mode as u32 & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        user: accounts.users.get(&st.st_uid).cloned(),
        group: accounts.groups.get(&st.st_gid).cloned(),
        mtime: Timestamp {
            seconds: st.st_mtime as i64,
            nanoseconds: st.st_mtime_nsec as u32,
        },
        device: st.st_dev as u64,
        inode: st.st_ino as u64,
        links: st.st_nlink as u64,
    }
}

/// Removes a file, symlink or directory tree, never following a symlink.
fn remove_tree(parent: &Dir, name: &OsStr) -> io::Result<()> {
    if file_type(&lstat(parent, name)?) != FileType::Directory {
        return Ok(rustix::fs::unlinkat(parent, name, AtFlags::empty())?);
    }
    let dir = parent.open_dir_nofollow(name)?;
    for entry in dir.entries()? {
        remove_tree(&dir, &entry?.file_name())?;
    }
    Ok(rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)?)
}

/// Opens a regular file for reading without following a symlink. O_NONBLOCK keeps a
/// fifo from blocking the open; O_NOATIME keeps a backup from touching access times
/// where the kernel allows it (the owner or root).
fn open_regular(parent: &Dir, name: &OsStr, shown: &str) -> Result<std::fs::File, Error> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = match rustix::fs::openat(parent, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(rustix::io::Errno::PERM) => rustix::fs::openat(parent, name, flags, Mode::empty()),
        other => other,
    }
    .map_err(|e| io_error(e.into(), shown))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| io_error(e.into(), shown))?;
    if file_type(&st) != FileType::RegularFile {
        return Err(Error::InvalidInput(format!(
            "{shown} is not a regular file"
        )));
    }
    Ok(std::fs::File::from(fd))
}

/// An open file being read for a plugin.
pub struct FileReader {
    file: Arc<std::fs::File>,
    shown: String,
    calls: Calls,
}

/// A file being written for a plugin; `None` once closed.
pub struct FileWriter {
    file: Option<Arc<std::fs::File>>,
    shown: String,
    calls: Calls,
    /// Bytes written, and how many of them were handed to writeback already.
    written: u64,
    flushed: u64,
}

/// Written bytes handed to the kernel's writeback at a time.
const WRITEBACK_STEP: u64 = 8 << 20;

/// Has the kernel start writing `len` bytes of `file` at `offset` (0: to the end) out to
/// the disk, on a background thread, without waiting for it.
///
/// Durability still comes from one `sync` of the root before a restore commits (an fsync
/// per file dominated restores of many small files). Starting writeback as files are
/// written lets the disk work while the restore goes on, so that sync finds little left:
/// it waited 1.3-2.5 s at the end of a 1.2 GiB restore without, 0.08 s with. The calls
/// themselves submit I/O, which on the restore's one writer thread slowed many small
/// files down by as much as the sync saved, hence the thread. A hint: when the thread
/// lags, hints are dropped, and errors are ignored.
fn start_writeback(file: Arc<std::fs::File>, offset: u64, len: u64) {
    use std::sync::mpsc::{SyncSender, sync_channel};
    static HINTS: OnceLock<Option<SyncSender<(Arc<std::fs::File>, u64, u64)>>> = OnceLock::new();
    let hints = HINTS.get_or_init(|| {
        let (sender, hints) = sync_channel::<(Arc<std::fs::File>, u64, u64)>(1024);
        std::thread::Builder::new()
            .name("runner-writeback".into())
            .spawn(move || {
                use std::os::fd::AsRawFd;
                for (file, offset, len) in hints {
                    // SAFETY: sync_file_range reads nothing but its integer arguments;
                    // `file` keeps the descriptor open for the duration of the call.
                    unsafe {
                        libc::sync_file_range(
                            file.as_raw_fd(),
                            offset as libc::off64_t,
                            len as libc::off64_t,
                            libc::SYNC_FILE_RANGE_WRITE,
                        );
                    }
                }
            })
            .ok()
            .map(|_| sender)
    });
    if let Some(hints) = hints {
        let _ = hints.try_send((file, offset, len));
    }
}

impl Host for HostState {
    async fn roots(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.files.names().map(str::to_string).collect())
    }

    async fn stat(
        &mut self,
        root: String,
        path: Vec<u8>,
    ) -> wasmtime::Result<Result<FileMeta, Error>> {
        let accounts = self.files.accounts.clone();
        let at = match self.files.locate(&root, &path, false) {
            Ok(at) => at,
            Err(e) => return Ok(Err(e)),
        };
        Ok(blocking(at.calls, move || {
            let (parent, name) = at.parent()?;
            let st = lstat(&parent, &name).map_err(|e| io_error(e, &at.shown))?;
            Ok(meta_of(&st, &accounts))
        })
        .await)
    }

    async fn read_dir(
        &mut self,
        root: String,
        path: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<DirEntry>, Error>> {
        let accounts = self.files.accounts.clone();
        let at = match self.files.locate(&root, &path, false) {
            Ok(at) => at,
            Err(e) => return Ok(Err(e)),
        };
        Ok(blocking(at.calls, move || {
            let dir = at.dir()?;
            let failed = |e| io_error(e, &at.shown);
            let mut entries = Vec::new();
            for entry in dir.entries().map_err(failed)? {
                let name = entry.map_err(failed)?.file_name();
                let st = match lstat(&dir, &name) {
                    Ok(st) => st,
                    // Removed between listing and stat: it is simply not there any more.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_error(e, &shown_path(&at.shown, name.as_bytes()))),
                };
                entries.push(DirEntry {
                    meta: meta_of(&st, &accounts),
                    name: name.into_vec(),
                });
            }
            entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
            Ok(entries)
        })
        .await)
    }

    async fn read_link(
        &mut self,
        root: String,
        path: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        let at = match self.files.locate(&root, &path, false) {
            Ok(at) => at,
            Err(e) => return Ok(Err(e)),
        };
        Ok(blocking(at.calls, move || {
            let (parent, name) = at.parent()?;
            let target =
                rustix::fs::readlinkat(&parent, &name, Vec::new()).map_err(|e| match e {
                    rustix::io::Errno::INVAL => {
                        Error::InvalidInput(format!("{} is not a symbolic link", at.shown))
                    }
                    e => io_error(e.into(), &at.shown),
                })?;
            Ok(target.into_bytes())
        })
        .await)
    }

    async fn open_read(
        &mut self,
        root: String,
        path: Vec<u8>,
    ) -> wasmtime::Result<Result<Resource<FileReader>, Error>> {
        let at = match self.files.locate(&root, &path, false) {
            Ok(at) => at,
            Err(e) => return Ok(Err(e)),
        };
        let opened = blocking(at.calls, move || {
            let (parent, name) = at.parent()?;
            let file = open_regular(&parent, &name, &at.shown)?;
            Ok(FileReader {
                calls: at.calls,
                file: Arc::new(file),
                shown: at.shown,
            })
        })
        .await;
        Ok(match opened {
            Ok(reader) => Ok(self.table.push(reader)?),
            Err(e) => Err(e),
        })
    }

    async fn create_dir(
        &mut self,
        root: String,
        path: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let at = match self.files.locate(&root, &path, true) {
            Ok(at) => at,
            Err(e) => return Ok(Err(e)),
        };
        if at.is_root() {
            return Ok(Ok(()));
        }
        Ok(blocking(at.calls, move || {
            let (parent, name) = at.parent()?;
            match rustix::fs::mkdirat(&parent, &name, Mode::from_raw_mode(NEW_DIR_MODE as _)) {
                Ok(()) => Ok(()),
                Err(rustix::io::Errno::EXIST) => match lstat(&parent, &name) {
                    Ok(st) if file_type(&st) == FileType::Directory => Ok(()),
                    _ => Err(Error::AlreadyExists(format!(
                        "{} exists and is not a directory",
                        at.shown
                    ))),
                },
                Err(e) => Err(io_error(e.into(), &at.shown)),
            }
        })
        .await)
    }

    async fn open_write(
        &mut self,
        root: String,
        path: Vec<u8>,
    ) -> wasmtime::Result<Result<Resource<FileWriter>, Error>> {
        let at = match self
            .files
            .locate(&root, &path, true)
            .and_then(|at| at.not_root("write over").map(|()| at))
        {
            Ok(at) => at,
            Err(e) => return Ok(Err(e)),
        };
        let opened = blocking(at.calls, move || {
            let (parent, name) = at.parent()?;
            let flags = OFlags::WRONLY
                | OFlags::CREATE
                | OFlags::TRUNC
                | OFlags::NOFOLLOW
                | OFlags::CLOEXEC;
            let fd = rustix::fs::openat(
                &parent,
                &name,
                flags,
                Mode::from_raw_mode(NEW_FILE_MODE as _),
            )
            .map_err(|e| io_error(e.into(), &at.shown))?;
            Ok(FileWriter {
                calls: at.calls,
                written: 0,
                flushed: 0,
                file: Some(Arc::new(std::fs::File::from(fd))),
                shown: at.shown,
            })
        })
        .await;
        Ok(match opened {
            Ok(writer) => Ok(self.table.push(writer)?),
            Err(e) => Err(e),
        })
    }

    async fn symlink(
        &mut self,
        root: String,
        path: Vec<u8>,
        target: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let at = match self
            .files
            .locate(&root, &path, true)
            .and_then(|at| at.not_root("replace").map(|()| at))
        {
            Ok(at) => at,
            Err(e) => return Ok(Err(e)),
        };
        if target.is_empty() || target.contains(&0) {
            return Ok(Err(Error::InvalidInput(format!(
                "{}: a symlink target cannot be empty or contain NUL",
                at.shown
            ))));
        }
        Ok(blocking(at.calls, move || {
            let (parent, name) = at.parent()?;
            // The target is stored as given (absolute ones too): the link lives inside
            // the root and this service never follows it.
            rustix::fs::symlinkat(OsStr::from_bytes(&target), &parent, &name)
                .map_err(|e| io_error(e.into(), &at.shown))
        })
        .await)
    }

    async fn hard_link(
        &mut self,
        root: String,
        existing: Vec<u8>,
        new: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let (from, to) = match self.files.locate_pair(&root, &existing, &new, "link to") {
            Ok(pair) => pair,
            Err(e) => return Ok(Err(e)),
        };
        Ok(blocking(from.calls, move || {
            let (from_parent, from_name) = from.parent()?;
            let (to_parent, to_name) = to.parent()?;
            // Without AT_SYMLINK_FOLLOW, linking a symlink links the symlink itself.
            rustix::fs::linkat(
                &from_parent,
                &from_name,
                &to_parent,
                &to_name,
                AtFlags::empty(),
            )
            .map_err(|e| io_error(e.into(), &format!("{} -> {}", to.shown, from.shown)))
        })
        .await)
    }

    async fn set_meta(
        &mut self,
        root: String,
        path: Vec<u8>,
        mode: u32,
        owner: Option<(u32, u32)>,
        mtime: Timestamp,
    ) -> wasmtime::Result<Result<(), Error>> {
        let at = match self.files.locate(&root, &path, true) {
            Ok(at) => at,
            Err(e) => return Ok(Err(e)),
        };
        if mtime.nanoseconds >= 1_000_000_000 {
            return Ok(Err(Error::InvalidInput(format!(
                "{}: mtime nanoseconds out of range",
                at.shown
            ))));
        }
        if owner.is_some_and(|(uid, gid)| uid == u32::MAX || gid == u32::MAX) {
            return Ok(Err(Error::InvalidInput(format!(
                "{}: uid and gid cannot be {}",
                at.shown,
                u32::MAX
            ))));
        }
        Ok(blocking(at.calls, move || {
            let (parent, name) = at.parent()?;
            let failed = |e: io::Error| io_error(e, &at.shown);
            let st = lstat(&parent, &name).map_err(failed)?;
            // Owner first: chown clears setuid and setgid, which the mode then sets.
            if let Some((uid, gid)) = owner {
                let euid = rustix::process::geteuid();
                if euid.is_root() {
                    rustix::fs::chownat(
                        &parent,
                        &name,
                        Some(rustix::fs::Uid::from_raw(uid)),
                        Some(rustix::fs::Gid::from_raw(gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| failed(e.into()))?;
                } else if (st.st_uid, st.st_gid) != (uid, gid) {
                    // Nothing is changed, so the plugin can retry without an owner and
                    // report that the owner could not be restored.
                    return Err(Error::AccessDenied(format!(
                        "{}: setting owner {uid}:{gid} needs root (the runner runs as uid {})",
                        at.shown,
                        euid.as_raw()
                    )));
                }
            }
            // A symlink's own mode means nothing on Linux and chmod would follow it.
            if file_type(&st) != FileType::Symlink {
                let permissions = cap_std::fs::Permissions::from_mode(mode & 0o7777);
                parent.set_permissions(&name, permissions).map_err(failed)?;
            }
            let omit = Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            };
            let times = Timestamps {
                last_access: omit,
                last_modification: Timespec {
                    tv_sec: mtime.seconds,
                    tv_nsec: mtime.nanoseconds.into(),
                },
            };
            rustix::fs::utimensat(&parent, &name, &times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| failed(e.into()))
        })
        .await)
    }

    async fn rename(
        &mut self,
        root: String,
        from: Vec<u8>,
        to: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let (from, to) = match self.files.locate_pair(&root, &from, &to, "rename") {
            Ok(pair) => pair,
            Err(e) => return Ok(Err(e)),
        };
        Ok(blocking(from.calls, move || {
            let (from_parent, from_name) = from.parent()?;
            let (to_parent, to_name) = to.parent()?;
            rustix::fs::renameat(&from_parent, &from_name, &to_parent, &to_name)
                .map_err(|e| io_error(e.into(), &format!("{} -> {}", from.shown, to.shown)))
        })
        .await)
    }

    async fn sync(&mut self, root: String) -> wasmtime::Result<Result<(), Error>> {
        let at = match self.files.locate(&root, b"", true) {
            Ok(at) => at,
            Err(e) => return Ok(Err(e)),
        };
        // Always on the pool: syncfs waits for the disk, seconds after a large restore
        // even on a local filesystem, and must not hold an executor thread meanwhile.
        Ok(blocking(Calls::Pool, move || {
            // The root handle may be path-only; syncfs needs a descriptor opened for reading.
            use rustix::fs::{Mode, OFlags};
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
            rustix::fs::openat(&*at.root, ".", flags, Mode::empty())
                .and_then(rustix::fs::syncfs)
                .map_err(|e| io_error(e.into(), &at.shown))
        })
        .await)
    }

    async fn remove(&mut self, root: String, path: Vec<u8>) -> wasmtime::Result<Result<(), Error>> {
        let at = match self
            .files
            .locate(&root, &path, true)
            .and_then(|at| at.not_root("remove").map(|()| at))
        {
            Ok(at) => at,
            Err(e) => return Ok(Err(e)),
        };
        Ok(blocking(at.calls, move || {
            let (parent, name) = at.parent()?;
            remove_tree(&parent, &name).map_err(|e| io_error(e, &at.shown))
        })
        .await)
    }
}

impl HostFileReader for HostState {
    async fn read(
        &mut self,
        reader: Resource<FileReader>,
        max: u32,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let state = self.table.get(&reader)?;
        let (file, shown, calls) = (state.file.clone(), state.shown.clone(), state.calls);
        if max == 0 {
            return Ok(Err(Error::InvalidInput(format!(
                "{shown}: read with max = 0"
            ))));
        }
        let want = max.min(MAX_READ) as usize;
        Ok(blocking(calls, move || {
            let mut buf = vec![0; want];
            let mut filled = 0;
            // Fill the buffer unless the file ends: fewer, fuller chunks cross the boundary.
            while filled < want {
                match (&*file).read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io_error(e, &shown)),
                }
            }
            buf.truncate(filled);
            Ok((filled > 0).then_some(buf))
        })
        .await)
    }

    async fn drop(&mut self, reader: Resource<FileReader>) -> wasmtime::Result<()> {
        self.table.delete(reader)?;
        Ok(())
    }
}

impl HostFileWriter for HostState {
    async fn write(
        &mut self,
        writer: Resource<FileWriter>,
        chunk: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let state = self.table.get_mut(&writer)?;
        let Some(file) = state.file.clone() else {
            return Ok(Err(Error::InvalidInput(format!(
                "{}: write after close",
                state.shown
            ))));
        };
        let (shown, calls, from) = (state.shown.clone(), state.calls, state.flushed);
        state.written += chunk.len() as u64;
        let to = state.written;
        let flush = to - from >= WRITEBACK_STEP;
        if flush {
            state.flushed = to;
        }
        Ok(blocking(calls, move || {
            (&*file)
                .write_all(&chunk)
                .map_err(|e| io_error(e, &shown))?;
            if flush {
                start_writeback(file, from, to - from);
            }
            Ok(())
        })
        .await)
    }

    async fn close(&mut self, writer: Resource<FileWriter>) -> wasmtime::Result<Result<(), Error>> {
        let state = self.table.get_mut(&writer)?;
        let Some(file) = state.file.take() else {
            return Ok(Err(Error::InvalidInput(format!(
                "{}: closed twice",
                state.shown
            ))));
        };
        start_writeback(file, state.flushed, 0);
        Ok(Ok(()))
    }

    async fn drop(&mut self, writer: Resource<FileWriter>) -> wasmtime::Result<()> {
        self.table.delete(writer)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt as _};
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::capabilities::StageGrants;
    use crate::config::{DirGrant, Limits};

    fn host(dirs: &[(&Path, DirAccess)]) -> HostState {
        let grants = Grants {
            dirs: dirs
                .iter()
                .map(|(path, access)| DirGrant {
                    path: path.to_path_buf(),
                    access: *access,
                })
                .collect(),
            ..Default::default()
        };
        HostState::new(
            Arc::from("test"),
            StageGrants {
                grants,
                ..Default::default()
            },
            &Limits::default(),
        )
        .unwrap()
    }

    fn name(path: &Path) -> String {
        path.to_string_lossy().into_owned()
    }

    fn assert_denied<T: std::fmt::Debug>(result: Result<T, Error>, what: &str) {
        match result {
            Err(Error::AccessDenied(_)) => {}
            other => panic!("{what}: expected access-denied, got {other:?}"),
        }
    }

    /// A root with `inside/file`, next to an `outside` directory holding a secret, and
    /// symlinks inside the root pointing at the outside.
    fn layout() -> (tempfile::TempDir, std::path::PathBuf) {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        std::fs::create_dir_all(root.join("inside")).unwrap();
        std::fs::write(root.join("inside/file"), b"inside").unwrap();
        std::fs::create_dir(base.path().join("outside")).unwrap();
        std::fs::write(base.path().join("outside/secret"), b"secret").unwrap();
        std::os::unix::fs::symlink(base.path().join("outside"), root.join("escape-dir")).unwrap();
        std::os::unix::fs::symlink("../outside/secret", root.join("escape-file")).unwrap();
        (base, root)
    }

    #[tokio::test]
    async fn dot_dot_absolute_and_empty_components_are_refused() {
        let (_base, root) = layout();
        let mut state = host(&[(&root, DirAccess::ReadWrite)]);
        let r = name(&root);
        for path in [
            &b".."[..],
            b"../outside/secret",
            b"inside/../../outside",
            b"/etc/passwd",
            b"inside//file",
            b"./inside",
            b"inside/",
        ] {
            let shown = String::from_utf8_lossy(path).into_owned();
            assert_denied(
                state.stat(r.clone(), path.to_vec()).await.unwrap(),
                &format!("stat {shown}"),
            );
            assert_denied(
                state.open_read(r.clone(), path.to_vec()).await.unwrap(),
                &format!("open-read {shown}"),
            );
            assert_denied(
                state.remove(r.clone(), path.to_vec()).await.unwrap(),
                &format!("remove {shown}"),
            );
        }
        assert_denied(
            state
                .stat("/".into(), b"etc/passwd".to_vec())
                .await
                .unwrap(),
            "an ungranted root",
        );
        assert!(
            state
                .stat(r.clone(), b"inside/file".to_vec())
                .await
                .unwrap()
                .is_ok()
        );
    }

    #[tokio::test]
    async fn symlinks_pointing_outside_are_never_followed() {
        let (base, root) = layout();
        let mut state = host(&[(&root, DirAccess::ReadWrite)]);
        let r = name(&root);

        // Through a symlinked directory: refused, whatever the operation.
        assert_denied(
            state
                .stat(r.clone(), b"escape-dir/secret".to_vec())
                .await
                .unwrap(),
            "stat through a symlink",
        );
        assert_denied(
            state
                .read_dir(r.clone(), b"escape-dir".to_vec())
                .await
                .unwrap(),
            "read-dir of a symlink",
        );
        assert_denied(
            state
                .open_read(r.clone(), b"escape-dir/secret".to_vec())
                .await
                .unwrap(),
            "read through a symlink",
        );
        assert_denied(
            state
                .open_write(r.clone(), b"escape-dir/new".to_vec())
                .await
                .unwrap(),
            "write through a symlink",
        );
        assert_denied(
            state
                .create_dir(r.clone(), b"escape-dir/new".to_vec())
                .await
                .unwrap(),
            "mkdir through a symlink",
        );

        // The symlink itself: stat describes the link, reading it as a file is refused.
        let meta = state
            .stat(r.clone(), b"escape-file".to_vec())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(meta.kind, FileKind::Symlink));
        assert_denied(
            state
                .open_read(r.clone(), b"escape-file".to_vec())
                .await
                .unwrap(),
            "open-read of a symlink",
        );
        assert_denied(
            state
                .open_write(r.clone(), b"escape-file".to_vec())
                .await
                .unwrap(),
            "open-write of a symlink",
        );
        assert_eq!(
            state
                .read_link(r.clone(), b"escape-file".to_vec())
                .await
                .unwrap()
                .unwrap(),
            b"../outside/secret"
        );

        // set-meta and remove act on the link, never on the file outside.
        let secret = base.path().join("outside/secret");
        let before = std::fs::metadata(&secret).unwrap();
        state
            .set_meta(
                r.clone(),
                b"escape-file".to_vec(),
                0o777,
                None,
                Timestamp {
                    seconds: 1,
                    nanoseconds: 0,
                },
            )
            .await
            .unwrap()
            .unwrap();
        let after = std::fs::metadata(&secret).unwrap();
        assert_eq!(before.permissions().mode(), after.permissions().mode());
        assert_eq!(before.mtime(), after.mtime());
        assert_eq!(
            std::fs::symlink_metadata(root.join("escape-file"))
                .unwrap()
                .mtime(),
            1
        );
        state
            .remove(r.clone(), b"escape-dir".to_vec())
            .await
            .unwrap()
            .unwrap();
        assert!(
            base.path().join("outside/secret").exists(),
            "removing a symlink must not remove its target"
        );
        assert!(!root.join("escape-dir").exists());
    }

    #[tokio::test]
    async fn a_read_only_root_refuses_every_write() {
        let (_base, root) = layout();
        let mut state = host(&[(&root, DirAccess::Read)]);
        let r = name(&root);
        let mtime = Timestamp {
            seconds: 0,
            nanoseconds: 0,
        };
        assert_denied(
            state.create_dir(r.clone(), b"new".to_vec()).await.unwrap(),
            "create-dir",
        );
        assert_denied(
            state
                .open_write(r.clone(), b"inside/file".to_vec())
                .await
                .unwrap(),
            "open-write",
        );
        assert_denied(
            state
                .symlink(r.clone(), b"link".to_vec(), b"/".to_vec())
                .await
                .unwrap(),
            "symlink",
        );
        assert_denied(
            state
                .hard_link(r.clone(), b"inside/file".to_vec(), b"copy".to_vec())
                .await
                .unwrap(),
            "hard-link",
        );
        assert_denied(
            state
                .set_meta(r.clone(), b"inside/file".to_vec(), 0o777, None, mtime)
                .await
                .unwrap(),
            "set-meta",
        );
        assert_denied(
            state
                .rename(r.clone(), b"inside/file".to_vec(), b"moved".to_vec())
                .await
                .unwrap(),
            "rename",
        );
        assert_denied(
            state.remove(r.clone(), b"inside".to_vec()).await.unwrap(),
            "remove",
        );
        assert_eq!(std::fs::read(root.join("inside/file")).unwrap(), b"inside");
        // Reading still works.
        let reader = state
            .open_read(r.clone(), b"inside/file".to_vec())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            state.read(reader, 100).await.unwrap().unwrap().unwrap(),
            b"inside"
        );
    }

    #[tokio::test]
    async fn the_root_itself_cannot_be_replaced_or_removed() {
        let (_base, root) = layout();
        let mut state = host(&[(&root, DirAccess::ReadWrite)]);
        let r = name(&root);
        assert_denied(
            state.remove(r.clone(), Vec::new()).await.unwrap(),
            "remove the root",
        );
        assert_denied(
            state
                .rename(r.clone(), b"inside".to_vec(), Vec::new())
                .await
                .unwrap(),
            "rename over the root",
        );
        assert_denied(
            state
                .symlink(r.clone(), Vec::new(), b"/".to_vec())
                .await
                .unwrap(),
            "symlink as the root",
        );
        assert!(
            state
                .create_dir(r.clone(), Vec::new())
                .await
                .unwrap()
                .is_ok()
        );
        assert!(root.join("inside/file").exists());
    }

    #[tokio::test]
    async fn raw_names_links_and_metadata_round_trip() {
        let (_base, root) = layout();
        let mut state = host(&[(&root, DirAccess::ReadWrite)]);
        let r = name(&root);
        let raw = b"dir-\xff\xfe".to_vec();
        state
            .create_dir(r.clone(), raw.clone())
            .await
            .unwrap()
            .unwrap();
        let mut file = raw.clone();
        file.extend_from_slice(b"/f\x80");
        let writer = state
            .open_write(r.clone(), file.clone())
            .await
            .unwrap()
            .unwrap();
        state
            .write(Resource::new_borrow(writer.rep()), b"hello".to_vec())
            .await
            .unwrap()
            .unwrap();
        state
            .close(Resource::new_borrow(writer.rep()))
            .await
            .unwrap()
            .unwrap();
        HostFileWriter::drop(&mut state, writer).await.unwrap();
        state
            .symlink(r.clone(), b"abs".to_vec(), b"/nowhere/at/all".to_vec())
            .await
            .unwrap()
            .unwrap();
        state
            .hard_link(r.clone(), file.clone(), b"second".to_vec())
            .await
            .unwrap()
            .unwrap();
        let mtime = Timestamp {
            seconds: 1_600_000_000,
            nanoseconds: 123_456_789,
        };
        state
            .set_meta(r.clone(), file.clone(), 0o4755, None, mtime)
            .await
            .unwrap()
            .unwrap();

        let entries = state
            .read_dir(r.clone(), raw.clone())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].name, b"f\x80");
        let meta = &entries[0].meta;
        assert_eq!((meta.mode, meta.size, meta.links), (0o4755, 5, 2));
        assert_eq!(
            (meta.mtime.seconds, meta.mtime.nanoseconds),
            (1_600_000_000, 123_456_789)
        );
        let names: Vec<_> = state
            .read_dir(r.clone(), Vec::new())
            .await
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(
            state
                .read_link(r.clone(), b"abs".to_vec())
                .await
                .unwrap()
                .unwrap(),
            b"/nowhere/at/all"
        );
        assert_eq!(std::fs::read(root.join("second")).unwrap(), b"hello");

        state
            .rename(r.clone(), raw.clone(), b"renamed".to_vec())
            .await
            .unwrap()
            .unwrap();
        state
            .remove(r.clone(), b"renamed".to_vec())
            .await
            .unwrap()
            .unwrap();
        assert!(!root.join("renamed").exists());
        assert!(matches!(
            state.stat(r.clone(), b"renamed".to_vec()).await.unwrap(),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn account_files_map_ids_to_the_first_name() {
        let names = parse_account_file(b"root:x:0:0:root:/root:/bin/sh\n# comment\nbad line\ntoor:x:0:0::/:/bin/sh\nweb:x:33:33::/:/bin/false\n");
        assert_eq!(names.get(&0).map(String::as_str), Some("root"));
        assert_eq!(names.get(&33).map(String::as_str), Some("web"));
        assert_eq!(names.len(), 2);
    }
}
