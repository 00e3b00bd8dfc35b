//! Object storage configured by the host from the sink's table (credentials stay in the host).

pub use crate::bindings::host::runner::plugin::storage::{
    Entry, ListPage, Reader, Writer, check, delete, list, max_object_size, open_reader,
    open_writer, stat,
};

use crate::{Error, ObjectReader, ObjectStat, ObjectWriter, Plugin, Result, Sink};

/// A sink that stores objects in the storage the host opened for it (the built-in `local`,
/// `s3` and `gdrive` sinks): implement this marker and the whole [`Sink`] comes with it.
pub trait HostStorageSink: Plugin {}

/// An object being written to host storage.
pub struct StorageUpload {
    key: String,
    writer: Option<Writer>,
}

/// An object being read from host storage.
pub struct StorageDownload(Reader);

impl<T: HostStorageSink> Sink for T {
    type Writer = StorageUpload;
    type Reader = StorageDownload;

    fn max_object_size(&self) -> Option<u64> {
        max_object_size()
    }

    fn put(&self, key: &str, if_absent: bool) -> Result<StorageUpload> {
        Ok(StorageUpload {
            key: key.to_string(),
            writer: Some(open_writer(key, if_absent)?),
        })
    }

    fn stat(&self, key: &str) -> Result<Option<ObjectStat>> {
        Ok(stat(key)?.map(|size| ObjectStat {
            key: key.to_string(),
            size,
        }))
    }

    fn get(&self, key: &str, offset: u64, length: Option<u64>) -> Result<StorageDownload> {
        Ok(StorageDownload(open_reader(key, offset, length)?))
    }

    fn list(&self, prefix: &str, page_token: Option<String>) -> Result<crate::ListPage> {
        let page = list(prefix, page_token.as_deref())?;
        Ok(crate::ListPage {
            objects: page
                .entries
                .into_iter()
                .map(|e| ObjectStat {
                    key: e.path,
                    size: e.size,
                })
                .collect(),
            next_page: page.next_page,
        })
    }

    fn delete(&self, key: &str) -> Result<()> {
        delete(key)
    }

    fn check(&self) -> Result<()> {
        check()
    }
}

impl ObjectWriter for StorageUpload {
    fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.writer
            .as_ref()
            .ok_or_else(|| Error::invalid_input("write after finish"))?
            .write(chunk)
    }

    fn finish(&mut self) -> Result<ObjectStat> {
        let writer = self
            .writer
            .take()
            .ok_or_else(|| Error::invalid_input("finish twice"))?;
        let size = writer.close()?;
        Ok(ObjectStat {
            key: self.key.clone(),
            size,
        })
    }

    fn abort(&mut self) {
        if let Some(writer) = self.writer.take() {
            writer.abort();
        }
    }
}

impl ObjectReader for StorageDownload {
    fn read(&mut self, max: usize) -> Result<Option<Vec<u8>>> {
        self.0.read(max.min(u32::MAX as usize) as u32)
    }
}
