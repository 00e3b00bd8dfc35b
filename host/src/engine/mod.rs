//! The wasmtime engine: configuration, the epoch ticker, compiled-component loading
//! (through the compile cache) and plugin instantiation under limits.

pub mod bindings;
mod cache;
pub mod contract;
mod error;
mod instance;
mod loaded;
pub mod sink;
pub mod source;
pub mod transform;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};

use crate::capabilities::HostState;

pub use contract::Contract;
pub use error::PluginError;
pub(crate) use instance::MemoryLimiter;
pub use instance::PluginInstance;
pub use loaded::{LoadedPlugin, PluginShape};
pub use sink::SinkInstance;
pub use source::SourceInstance;
pub use transform::TransformInstance;

/// How often the epoch advances: guest code yields to the executor this often, which is
/// what lets a timeout stop a guest that never returns.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Settings of the engine that are not per stage.
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// Where compiled components are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Lets the host read a plugin's private linear memory (tests prove keys never
    /// reach it). Off in production: it slows compiled code.
    pub guest_debug: bool,
}

impl EngineOptions {
    /// `$RUNNER_CACHE_DIR`, else `$XDG_CACHE_HOME/runner`, else `~/.cache/runner`.
    pub fn from_env() -> Self {
        let cache_dir = std::env::var_os("RUNNER_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("runner")))
            .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/runner")));
        EngineOptions {
            cache_dir,
            guest_debug: false,
        }
    }
}

/// One wasmtime engine and linker shared by every plugin instance of a process.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    engine: wasmtime::Engine,
    linker: Linker<HostState>,
    cache: Option<cache::CompileCache>,
}

impl Engine {
    pub fn new(options: EngineOptions) -> anyhow::Result<Self> {
        let mut config = wasmtime::Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .guest_debug(options.guest_debug);
        let engine = wasmtime::Engine::new(&config)?;

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("runner-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // Outbound HTTP for plugins granted it; every request passes the stage's grants.
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        use bindings::services::runner::plugin as services;
        services::log::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        services::keys::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        services::storage::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        services::files::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        services::sqlite::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        bindings::services_0_2::runner::plugin0_2_0::digest::add_to_linker::<
            HostState,
            HasSelf<HostState>,
        >(&mut linker, |s| s)?;

        let cache = options
            .cache_dir
            .map(|dir| cache::CompileCache::new(dir, &engine));
        Ok(Engine {
            inner: Arc::new(EngineInner {
                engine,
                linker,
                cache,
            }),
        })
    }

    pub(crate) fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner.engine
    }

    pub(crate) fn linker(&self) -> &Linker<HostState> {
        &self.inner.linker
    }

    /// Compiles (or loads from the cache) a component and reads its shape.
    pub fn load(&self, name: &str, wasm: &[u8]) -> Result<LoadedPlugin, PluginError> {
        let digest = crate::plugins::sha256(wasm);
        let component = match &self.inner.cache {
            Some(cache) => cache.load_or_compile(&digest, wasm),
            None => {
                wasmtime::component::Component::new(&self.inner.engine, wasm).map_err(Into::into)
            }
        }
        .map_err(|e| PluginError::Load {
            plugin: name.to_string(),
            reason: format!("{e:#}"),
        })?;
        LoadedPlugin::new(self, name, digest, component)
    }
}

impl Engine {
    /// Fills the compile cache for a component ahead of time (container images, whose
    /// cache is otherwise cold at every start). `Ok(true)`: it was already there.
    pub fn precompile(&self, name: &str, wasm: &[u8]) -> Result<bool, PluginError> {
        let Some(cache) = &self.inner.cache else {
            return Err(PluginError::Load {
                plugin: name.to_string(),
                reason: "there is no compile cache directory: set RUNNER_CACHE_DIR (or HOME)"
                    .into(),
            });
        };
        let cached = cache.contains(&crate::plugins::sha256(wasm));
        self.load(name, wasm)?;
        Ok(cached)
    }
}

impl Engine {
    /// Instantiates a plugin just to ask its name, version and description.
    pub async fn describe(
        &self,
        plugin: &LoadedPlugin,
    ) -> Result<bindings::PluginInfo, PluginError> {
        use crate::config::StageKind;
        match plugin.shape.kind {
            StageKind::Source => {
                PluginInstance::<contract::SourceBindings>::describe(self, plugin).await
            }
            StageKind::Transform => {
                PluginInstance::<contract::TransformBindings>::describe(self, plugin).await
            }
            StageKind::Sink => {
                PluginInstance::<contract::SinkBindings>::describe(self, plugin).await
            }
        }
    }
}
