//! The storage service: object storage behind OpenDAL, configured by the host from the
//! sink's table, so storage credentials never enter plugin memory.

use std::sync::Arc;

use opendal::{ErrorKind, Operator};
use wasmtime::component::Resource;

use crate::capabilities::HostState;
use crate::engine::bindings::services::runner::plugin::storage::{
    Entry, Host, HostReader, HostWriter, ListPage,
};
use crate::engine::bindings::services::runner::plugin::types::{Error, RemoteError};

/// Entries per `list` page.
const PAGE_SIZE: usize = 1000;
/// Temporary files of atomic writes on a local directory; never listed.
const LOCAL_TMP_DIR: &str = ".runner-tmp";

/// One configured storage backend.
#[derive(Clone)]
pub struct Storage {
    operator: Operator,
    options: StorageOptions,
    description: Arc<str>,
}

/// How the service uses a backend, beyond what OpenDAL's capabilities say.
#[derive(Clone, Debug, Default)]
pub struct StorageOptions {
    /// The largest object the backend takes; writers past it fail, and the host cuts
    /// artifacts into objects that fit.
    pub max_object_size: Option<u64>,
    /// Upload in parts of this size (multipart), so memory stays bounded by
    /// `part_size * concurrent_parts` per open writer; for a backend that takes an object in
    /// one request, the size it is buffered up to.
    pub part_size: Option<usize>,
    pub concurrent_parts: usize,
    /// Put-if-absent by a stat before the write, for servers without conditional writes
    /// (racy between two writers; a conditional write is not).
    pub if_absent_by_stat: bool,
    /// For a remote backend: whether its last request reached it, so a failed command
    /// can tell "the sink is unreachable" from other failures.
    pub reachability: Option<Arc<Reachability>>,
}

/// Whether a remote backend's most recent request got through (any response counts) or
/// failed to connect or timed out; set by the HTTP transport.
#[derive(Debug, Default)]
pub struct Reachability {
    unreachable: std::sync::atomic::AtomicBool,
}

impl Reachability {
    pub fn record(&self, reached: bool) {
        self.unreachable
            .store(!reached, std::sync::atomic::Ordering::Relaxed);
    }

    /// The last request could not reach the backend.
    pub fn unreachable(&self) -> bool {
        self.unreachable.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl Storage {
    pub fn new(operator: Operator, options: StorageOptions, description: String) -> Self {
        Storage {
            operator,
            options,
            description: description.into(),
        }
    }

    /// A local directory, created when missing. Writes go to a temporary file in the
    /// same directory tree and are renamed into place, so a killed process never leaves
    /// a half-written object under its final name.
    pub fn local(root: &std::path::Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", root.display()))?;
        let root_str = root.to_string_lossy();
        let tmp = root.join(LOCAL_TMP_DIR);
        let builder = opendal::services::Fs::default()
            .root(&root_str)
            .atomic_write_dir(&tmp.to_string_lossy());
        Ok(Storage::new(
            Operator::new(builder)?,
            StorageOptions::default(),
            format!("local directory {}", root.display()),
        ))
    }

    pub fn operator(&self) -> &Operator {
        &self.operator
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// The backend's last request failed to connect or timed out.
    pub fn unreachable(&self) -> bool {
        self.options
            .reachability
            .as_ref()
            .is_some_and(|r| r.unreachable())
    }
}

/// Maps an OpenDAL error onto the contract's error variant.
fn contract_error(e: opendal::Error) -> Error {
    let message = e.to_string();
    match e.kind() {
        ErrorKind::NotFound => Error::NotFound(message),
        ErrorKind::PermissionDenied => Error::AccessDenied(message),
        ErrorKind::AlreadyExists | ErrorKind::ConditionNotMatch => Error::AlreadyExists(message),
        ErrorKind::RateLimited => Error::Remote(RemoteError {
            message,
            retryable: true,
        }),
        ErrorKind::ConfigInvalid => Error::InvalidInput(message),
        _ if e.is_temporary() => Error::Remote(RemoteError {
            message,
            retryable: true,
        }),
        _ => Error::Remote(RemoteError {
            message,
            retryable: false,
        }),
    }
}

/// Rejects paths that could leave the storage root or hit the temporary area.
fn checked_path(path: &str) -> Result<&str, Error> {
    let bad = path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
        || path.starts_with(LOCAL_TMP_DIR);
    if bad {
        return Err(Error::InvalidInput(format!(
            "invalid storage path {path:?}"
        )));
    }
    Ok(path)
}

pub struct StorageWriter {
    path: String,
    writer: Option<opendal::Writer>,
    written: u64,
    max_size: Option<u64>,
}

pub struct StorageReader {
    reader: opendal::Reader,
    position: u64,
    end: u64,
}

impl HostState {
    /// The stage's storage (cloned: host calls must not hold `&self` across awaits).
    fn granted_storage(&self) -> Result<Storage, Error> {
        self.storage
            .clone()
            .ok_or_else(|| Error::AccessDenied("no storage is granted to this stage".into()))
    }

    /// The stage's storage operator.
    fn operator(&self) -> Result<Operator, Error> {
        self.granted_storage().map(|s| s.operator)
    }
}

impl Host for HostState {
    async fn open_writer(
        &mut self,
        path: String,
        if_absent: bool,
    ) -> wasmtime::Result<Result<Resource<StorageWriter>, Error>> {
        let storage = self.granted_storage();
        let opened = async {
            let storage = storage?;
            let (op, options) = (&storage.operator, &storage.options);
            checked_path(&path)?;
            if if_absent && options.if_absent_by_stat {
                match op.stat(&path).await {
                    Ok(_) => {
                        return Err(Error::AlreadyExists(format!("{path} already exists")));
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(contract_error(e)),
                }
            }
            let mut writer = op
                .writer_with(&path)
                .if_not_exists(if_absent && !options.if_absent_by_stat);
            if let Some(part_size) = options.part_size {
                writer = writer
                    .chunk(part_size)
                    .concurrent(options.concurrent_parts.max(1));
            }
            let writer = writer.await.map_err(contract_error)?;
            Ok((writer, options.max_object_size))
        }
        .await;
        Ok(match opened {
            Ok((writer, max_size)) => Ok(self.table.push(StorageWriter {
                path,
                writer: Some(writer),
                written: 0,
                max_size,
            })?),
            Err(e) => Err(e),
        })
    }

    async fn open_reader(
        &mut self,
        path: String,
        offset: u64,
        length: Option<u64>,
    ) -> wasmtime::Result<Result<Resource<StorageReader>, Error>> {
        let op = self.operator();
        let opened = async {
            let op = op?;
            checked_path(&path)?;
            let size = op
                .stat(&path)
                .await
                .map_err(contract_error)?
                .content_length();
            let end = match length {
                Some(length) => offset.saturating_add(length).min(size),
                None => size,
            };
            let reader = op.reader(&path).await.map_err(contract_error)?;
            Ok(StorageReader {
                reader,
                position: offset.min(end),
                end,
            })
        }
        .await;
        Ok(match opened {
            Ok(reader) => Ok(self.table.push(reader)?),
            Err(e) => Err(e),
        })
    }

    async fn stat(&mut self, path: String) -> wasmtime::Result<Result<Option<u64>, Error>> {
        let op = self.operator();
        Ok(async {
            let op = op?;
            checked_path(&path)?;
            match op.stat(&path).await {
                Ok(meta) => Ok(Some(meta.content_length())),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(contract_error(e)),
            }
        }
        .await)
    }

    async fn list(
        &mut self,
        prefix: String,
        page_token: Option<String>,
    ) -> wasmtime::Result<Result<ListPage, Error>> {
        let op = self.operator();
        Ok(async {
            let op = op?;
            // OpenDAL lists directories; list the prefix's directory and filter by prefix.
            let dir = match prefix.rfind('/') {
                Some(i) => &prefix[..=i],
                None => "",
            };
            let mut entries: Vec<Entry> = op
                .list_with(dir)
                .recursive(true)
                .await
                .map_err(contract_error)?
                .into_iter()
                .filter(|e| e.metadata().is_file())
                .filter(|e| e.path().starts_with(&prefix) && !e.path().starts_with(LOCAL_TMP_DIR))
                .filter(|e| page_token.as_deref().is_none_or(|after| e.path() > after))
                .map(|e| Entry {
                    size: e.metadata().content_length(),
                    path: e.path().to_string(),
                })
                .collect();
            entries.sort_by(|a, b| a.path.cmp(&b.path));
            let next_page =
                (entries.len() > PAGE_SIZE).then(|| entries[PAGE_SIZE - 1].path.clone());
            entries.truncate(PAGE_SIZE);
            // The fs lister reports no sizes for some entries; stat those.
            for entry in entries.iter_mut().filter(|e| e.size == 0) {
                entry.size = op
                    .stat(&entry.path)
                    .await
                    .map_err(contract_error)?
                    .content_length();
            }
            Ok(ListPage { entries, next_page })
        }
        .await)
    }

    async fn delete(&mut self, path: String) -> wasmtime::Result<Result<(), Error>> {
        let op = self.operator();
        Ok(async {
            let op = op?;
            checked_path(&path)?;
            op.delete(&path).await.map_err(contract_error)
        }
        .await)
    }

    async fn max_object_size(&mut self) -> wasmtime::Result<Option<u64>> {
        Ok(self
            .storage
            .as_ref()
            .and_then(|s| s.options.max_object_size))
    }

    async fn check(&mut self) -> wasmtime::Result<Result<(), Error>> {
        let op = self.operator();
        Ok(async {
            let op = op?;
            op.check().await.map_err(contract_error)
        }
        .await)
    }
}

impl HostWriter for HostState {
    async fn write(
        &mut self,
        writer: Resource<StorageWriter>,
        chunk: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let state = self.table.get_mut(&writer)?;
        let Some(inner) = state.writer.as_mut() else {
            return Ok(Err(Error::InvalidInput(format!(
                "write after close on {}",
                state.path
            ))));
        };
        let len = chunk.len() as u64;
        if let Some(max) = state.max_size.filter(|max| state.written + len > *max) {
            let _ = inner.abort().await;
            state.writer = None;
            return Ok(Err(Error::InvalidInput(format!(
                "{} would exceed the storage's maximum object size of {max} bytes",
                state.path
            ))));
        }
        Ok(match inner.write(chunk).await {
            Ok(()) => {
                state.written += len;
                Ok(())
            }
            Err(e) => Err(contract_error(e)),
        })
    }

    async fn close(
        &mut self,
        writer: Resource<StorageWriter>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let state = self.table.get_mut(&writer)?;
        let Some(mut inner) = state.writer.take() else {
            return Ok(Err(Error::InvalidInput(format!(
                "close twice on {}",
                state.path
            ))));
        };
        Ok(inner
            .close()
            .await
            .map(|_| state.written)
            .map_err(contract_error))
    }

    async fn abort(&mut self, writer: Resource<StorageWriter>) -> wasmtime::Result<()> {
        if let Some(mut inner) = self.table.get_mut(&writer)?.writer.take() {
            let _ = inner.abort().await;
        }
        Ok(())
    }

    async fn drop(&mut self, writer: Resource<StorageWriter>) -> wasmtime::Result<()> {
        // An upload dropped before `close` is abandoned, never published.
        if let Some(mut inner) = self.table.delete(writer)?.writer.take() {
            let _ = inner.abort().await;
        }
        Ok(())
    }
}

impl HostReader for HostState {
    async fn read(
        &mut self,
        reader: Resource<StorageReader>,
        max: u32,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let state = self.table.get_mut(&reader)?;
        if state.position >= state.end {
            return Ok(Ok(None));
        }
        let upto = state.end.min(state.position + u64::from(max.max(1)));
        Ok(match state.reader.read(state.position..upto).await {
            Ok(buffer) => {
                let bytes = buffer.to_vec();
                if bytes.is_empty() {
                    Err(Error::Corrupt("object ended before its stated size".into()))
                } else {
                    state.position += bytes.len() as u64;
                    Ok(Some(bytes))
                }
            }
            Err(e) => Err(contract_error(e)),
        })
    }

    async fn drop(&mut self, reader: Resource<StorageReader>) -> wasmtime::Result<()> {
        self.table.delete(reader)?;
        Ok(())
    }
}
