//! The sink trait: an object store whose keys the host chooses.

use crate::{Plugin, Result};

pub use crate::bindings::sink::exports::runner::plugin0_2_0::sink::{ListPage, ObjectStat};

pub trait Sink: Plugin {
    type Writer: ObjectWriter;
    type Reader: ObjectReader;

    /// The largest object stored in one piece; unlimited by default.
    fn max_object_size(&self) -> Option<u64> {
        None
    }
    /// Starts a streamed put; with `if_absent`, finishing fails with `already-exists` when the key is taken.
    fn put(&self, key: &str, if_absent: bool) -> Result<Self::Writer>;
    fn stat(&self, key: &str) -> Result<Option<ObjectStat>>;
    fn get(&self, key: &str, offset: u64, length: Option<u64>) -> Result<Self::Reader>;
    fn list(&self, prefix: &str, page_token: Option<String>) -> Result<ListPage>;
    /// Deleting an absent key succeeds.
    fn delete(&self, key: &str) -> Result<()>;
    /// Reachable and writable; the default says yes.
    fn check(&self) -> Result<()> {
        Ok(())
    }
}

pub trait ObjectWriter: 'static {
    fn write(&mut self, chunk: &[u8]) -> Result<()>;
    fn finish(&mut self) -> Result<ObjectStat>;
    fn abort(&mut self);
}

pub trait ObjectReader: 'static {
    fn read(&mut self, max: usize) -> Result<Option<Vec<u8>>>;
}
