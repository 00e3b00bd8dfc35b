//! The source traits: backup sessions that list and read artifacts, restore sessions that stage and commit.

use crate::{Metadata, Plugin, Result};

pub use crate::bindings::source::exports::runner::plugin0_2_0::source::{
    Artifact, RestoreMode, RestoreOptions, RestoreReport, SizeEstimate,
};

impl SizeEstimate {
    /// Exactly `bytes` bytes: what the reader will return (a file's size).
    pub fn bytes(bytes: u64) -> Self {
        SizeEstimate {
            amount: bytes,
            unit: "bytes".into(),
            exact: true,
        }
    }

    /// About `amount` `unit`s ("rows", "documents"), the unit the reader reports progress
    /// in with [`crate::log::progress`]: planner statistics, an index's document count.
    pub fn about(amount: u64, unit: &str) -> Self {
        SizeEstimate {
            amount,
            unit: unit.into(),
            exact: false,
        }
    }
}

/// A source of artifacts: a database, a search cluster, a directory tree.
pub trait Source: Plugin {
    type Backup: BackupSession;
    type Restore: RestoreSession;

    /// Opens one consistent view. With `share_token` (from another instance's
    /// [`BackupSession::share_token`]) it joins that view instead of making a new one.
    fn begin_backup(&self, share_token: Option<String>) -> Result<Self::Backup>;
    fn begin_restore(&self, options: RestoreOptions) -> Result<Self::Restore>;
}

pub trait BackupSession: 'static {
    type Reader: ArtifactReader;

    /// A token that lets other instances read the same view; none by default.
    fn share_token(&self) -> Option<String> {
        None
    }
    /// Every artifact of this view, listed before any is read.
    fn artifacts(&mut self) -> Result<Vec<Artifact>>;
    fn open(&mut self, name: &str) -> Result<Self::Reader>;
    /// Releases the view; the default does nothing.
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

pub trait ArtifactReader: 'static {
    /// Up to `max` bytes; `None` at the end.
    fn read(&mut self, max: usize) -> Result<Option<Vec<u8>>>;
    /// Metadata learned while reading (exact counts); none by default.
    fn finish(&mut self) -> Result<Metadata> {
        Ok(Metadata::new())
    }
}

pub trait RestoreSession: 'static {
    type Writer: ArtifactWriter;

    /// Starts writing one artifact into staging.
    fn write_artifact(&mut self, artifact: Artifact) -> Result<Self::Writer>;
    /// Every digest matched: move staging into the target and report.
    fn commit(&mut self) -> Result<Vec<RestoreReport>>;
    /// Something failed: remove staging, leave the target as it was.
    fn abort(&mut self);
}

pub trait ArtifactWriter: 'static {
    fn write(&mut self, chunk: &[u8]) -> Result<()>;
    fn finish(&mut self) -> Result<()>;
}
