//! The `local` sink: objects in a directory on this machine, written through the host's
//! storage service (atomic: a temporary file renamed into place on close).
//!
//! The host configures the storage from this stage's `path`; the plugin maps object keys
//! onto storage paths and never touches the file system itself.

use runner_sdk::storage::{self, Reader, Writer};
use runner_sdk::{Error, ListPage, ObjectReader, ObjectStat, ObjectWriter, Plugin, Result, Sink};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The repository directory; read by the host, which opens the storage there.
    #[allow(dead_code)]
    path: String,
}

struct Local;

impl Plugin for Local {
    const NAME: &'static str = "local";
    const DESCRIPTION: &'static str = "a directory on this machine (atomic writes)";
    type Config = Config;

    fn new(_: Config) -> Result<Self> {
        Ok(Local)
    }
}

struct Upload {
    key: String,
    writer: Option<Writer>,
}

struct Download(Reader);

impl Sink for Local {
    type Writer = Upload;
    type Reader = Download;

    fn max_object_size(&self) -> Option<u64> {
        storage::max_object_size()
    }

    fn put(&self, key: &str, if_absent: bool) -> Result<Upload> {
        Ok(Upload { key: key.to_string(), writer: Some(storage::open_writer(key, if_absent)?) })
    }

    fn stat(&self, key: &str) -> Result<Option<ObjectStat>> {
        Ok(storage::stat(key)?.map(|size| ObjectStat { key: key.to_string(), size }))
    }

    fn get(&self, key: &str, offset: u64, length: Option<u64>) -> Result<Download> {
        Ok(Download(storage::open_reader(key, offset, length)?))
    }

    fn list(&self, prefix: &str, page_token: Option<String>) -> Result<ListPage> {
        let page = storage::list(prefix, page_token.as_deref())?;
        Ok(ListPage {
            objects: page.entries.into_iter().map(|e| ObjectStat { key: e.path, size: e.size }).collect(),
            next_page: page.next_page,
        })
    }

    fn delete(&self, key: &str) -> Result<()> {
        storage::delete(key)
    }

    fn check(&self) -> Result<()> {
        storage::check()
    }
}

impl ObjectWriter for Upload {
    fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.writer.as_ref().ok_or_else(|| Error::invalid_input("write after finish"))?.write(chunk)
    }

    fn finish(&mut self) -> Result<ObjectStat> {
        let writer = self.writer.take().ok_or_else(|| Error::invalid_input("finish twice"))?;
        let size = writer.close()?;
        Ok(ObjectStat { key: self.key.clone(), size })
    }

    fn abort(&mut self) {
        if let Some(writer) = self.writer.take() {
            writer.abort();
        }
    }
}

impl ObjectReader for Download {
    fn read(&mut self, max: usize) -> Result<Option<Vec<u8>>> {
        self.0.read(max.min(u32::MAX as usize) as u32)
    }
}

runner_sdk::export_sink!(Local);
