//! What a plugin instance may reach: WASI (deny by default) and the host services, one
//! module per capability, all held in the store's [`HostState`].

pub mod digest;
pub mod files;
pub mod keys;
pub mod log;
mod mounts;
pub mod network;
pub mod sqlite;
pub mod storage;
mod wasi;

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::config::{Grants, Limits};
use crate::engine::MemoryLimiter;

pub use keys::KeyRing;
pub use storage::Storage;

/// Everything one stage is granted, assembled by the host before instantiation.
#[derive(Clone, Default)]
pub struct StageGrants {
    /// Directories, network addresses.
    pub grants: Grants,
    /// Keys the stage may seal and open with, by name.
    pub keys: KeyRing,
    /// The object storage a sink writes through.
    pub storage: Option<Storage>,
    /// Secret values the stage was given in its options: scrubbed from its logs and errors.
    pub secrets: Arc<[crate::config::Secret]>,
    /// Where the SQLite service puts snapshot copies (granted read-only in `grants` too).
    pub sqlite_scratch: Option<Arc<sqlite::Scratch>>,
    /// Headers (credentials) the host adds to requests to granted HTTP origins.
    pub http_headers: Vec<network::InjectedHeader>,
    /// HTTPS origins that trust a CA bundle instead of the built-in web roots.
    pub http_trusted: Vec<network::TrustedRoots>,
}

/// The data of one plugin instance's store.
pub struct HostState {
    /// "transform #2 (zstd)": names the plugin in logs and errors.
    pub(crate) plugin: Arc<str>,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_grants: network::HttpGrants,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) keys: KeyRing,
    pub(crate) storage: Option<Storage>,
    pub(crate) files: files::FileRoots,
    pub(crate) sqlite_scratch: Option<Arc<sqlite::Scratch>>,
    secrets: Arc<[crate::config::Secret]>,
}

impl HostState {
    pub fn new(plugin: Arc<str>, grants: StageGrants, limits: &Limits) -> anyhow::Result<Self> {
        Ok(HostState {
            wasi: wasi::context(&grants.grants)?,
            http: WasiHttpCtx::new(),
            http_grants: network::HttpGrants::new(
                grants.grants.http.clone(),
                grants.http_headers.clone(),
                grants.http_trusted.clone(),
                plugin.clone(),
            ),
            files: files::FileRoots::new(&grants.grants)?,
            plugin,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(limits.memory),
            keys: grants.keys,
            storage: grants.storage,
            sqlite_scratch: grants.sqlite_scratch,
            secrets: grants.secrets,
        })
    }

    /// `text` with every secret value this stage holds replaced by `[redacted]`.
    pub fn scrub(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in self.secrets.iter().filter(|s| s.expose().len() >= 4) {
            text = text.replace(secret.expose(), "[redacted]");
        }
        text
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_grants,
        }
    }
}
