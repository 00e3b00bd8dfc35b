//! The file-metadata service for the files source: POSIX metadata, raw names and links,
//! scoped to the stage's granted directories.

use std::path::PathBuf;

use crate::config::{DirAccess, Grants};

/// The directories a stage was granted, by guest name (their host path as text).
#[derive(Default)]
pub struct FileRoots {
    roots: Vec<(String, PathBuf, DirAccess)>,
}

impl FileRoots {
    pub fn new(grants: &Grants) -> Self {
        FileRoots {
            roots: grants
                .dirs
                .iter()
                .map(|d| (d.path.to_string_lossy().into_owned(), d.path.clone(), d.access))
                .collect(),
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.roots.iter().map(|(name, _, _)| name.as_str())
    }
}

/// An open file being read for a plugin.
pub struct FileReader {
    pub(crate) file: std::fs::File,
}

/// A file being written for a plugin.
pub struct FileWriter {
    pub(crate) file: Option<std::fs::File>,
}
