//! POSIX file metadata, raw names and links in granted directories, done by the host.

pub use crate::bindings::host::runner::plugin::files::{
    DirEntry, FileKind, FileMeta, FileReader, FileWriter, Timestamp, create_dir, hard_link,
    open_read, open_write, read_dir, read_link, remove, rename, roots, set_meta, stat, symlink,
    sync,
};
