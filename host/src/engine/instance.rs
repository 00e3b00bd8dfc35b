//! One plugin instance: its store, its limits, and the guarded call every export goes through.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::InstancePre;
use wasmtime::{ResourceLimiter, Store};

use crate::capabilities::{HostState, StageGrants};
use crate::config::Limits;
use crate::engine::bindings::{PluginErrorKind, PluginInfo};
use crate::engine::contract::Contract;
use crate::engine::{Engine, LoadedPlugin, PluginError};

pub type CallFuture<'a, R> = Pin<Box<dyn Future<Output = wasmtime::Result<R>> + Send + 'a>>;

/// The bindings of one world (in `engine::contract`), and what every world exports.
pub trait World: Send + Sync + Sized + 'static {
    /// "source", "transform", "sink".
    const NAME: &'static str;
    /// Instantiates a component built against `contract`, with that version's bindings.
    fn instantiate<'a>(
        pre: &'a InstancePre<HostState>,
        contract: Contract,
        store: &'a mut Store<HostState>,
    ) -> CallFuture<'a, Self>;
    fn info<'a>(&'a self, store: &'a mut Store<HostState>) -> CallFuture<'a, PluginInfo>;
    fn configure<'a>(
        &'a self,
        store: &'a mut Store<HostState>,
        config: String,
    ) -> CallFuture<'a, Result<(), PluginErrorKind>>;
}

/// Caps linear memory and remembers that it did, so the error can name the limit.
pub(crate) struct MemoryLimiter {
    limit: usize,
    hit: bool,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: u64) -> Self {
        MemoryLimiter {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            hit: false,
        }
    }

    pub(crate) fn hit(&self) -> bool {
        self.hit
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            // An error (not `false`) traps the guest at once instead of letting its
            // allocator abort with a message that names nothing.
            return Err(wasmtime::Error::msg("memory limit exceeded"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// A running plugin. Every call is bounded by the per-call and per-run time limits; after a
/// trap or timeout the instance is unusable and says why.
pub struct PluginInstance<B> {
    pub(crate) store: Store<HostState>,
    pub(crate) bindings: B,
    label: Arc<str>,
    limits: Limits,
    deadline: Instant,
    broken: Option<String>,
}

impl<B: World> PluginInstance<B> {
    /// Instantiates `plugin` and configures it with `config_json`.
    pub(crate) async fn configured(
        engine: &Engine,
        plugin: &LoadedPlugin,
        label: &str,
        config_json: &str,
        grants: StageGrants,
        limits: &Limits,
    ) -> Result<Self, PluginError> {
        let mut instance = Self::start(engine, plugin, label, grants, limits).await?;
        let config = config_json.to_string();
        instance
            .call_result("configure", |store, b| b.configure(store, config))
            .await?;
        Ok(instance)
    }

    /// Instantiates `plugin` (without configuring it) to ask its name, version and description.
    pub(crate) async fn describe(
        engine: &Engine,
        plugin: &LoadedPlugin,
    ) -> Result<PluginInfo, PluginError> {
        let mut instance = Self::start(
            engine,
            plugin,
            &plugin.name,
            StageGrants::default(),
            &Limits::default(),
        )
        .await?;
        instance.call("info", |store, b| b.info(store)).await
    }

    async fn start(
        engine: &Engine,
        plugin: &LoadedPlugin,
        label: &str,
        grants: StageGrants,
        limits: &Limits,
    ) -> Result<Self, PluginError> {
        let label: Arc<str> = label.into();
        let instantiate_error = |reason: String| PluginError::Instantiate {
            plugin: label.to_string(),
            reason,
        };
        let host = HostState::new(label.clone(), grants, limits)
            .map_err(|e| instantiate_error(format!("{e:#}")))?;
        let mut store = Store::new(engine.wasmtime(), host);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        let started = Instant::now();
        let bindings = tokio::time::timeout(
            limits.call_timeout,
            B::instantiate(&plugin.pre, plugin.contract, &mut store),
        )
        .await
        .map_err(|_| {
            instantiate_error(format!(
                "instantiation took longer than {:?}",
                limits.call_timeout
            ))
        })?
        .map_err(|e| instantiate_error(format!("it does not fit the {} world: {e:#}", B::NAME)))?;
        Ok(PluginInstance {
            store,
            bindings,
            label,
            limits: limits.clone(),
            deadline: started + limits.run_timeout,
            broken: None,
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }
}

impl<B> PluginInstance<B> {
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Runs one call into the plugin under the time limits, turning traps and timeouts into
    /// errors that name the plugin and the limit.
    pub(crate) async fn call<R>(
        &mut self,
        call: &'static str,
        f: impl for<'a> FnOnce(&'a mut Store<HostState>, &'a B) -> CallFuture<'a, R>,
    ) -> Result<R, PluginError> {
        if let Some(reason) = &self.broken {
            return Err(PluginError::Broken {
                plugin: self.label.to_string(),
                reason: reason.clone(),
            });
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        let (budget, limit_name) = if left < self.limits.call_timeout {
            (left, "run_timeout")
        } else {
            (self.limits.call_timeout, "call_timeout")
        };
        let outcome = tokio::time::timeout(budget, f(&mut self.store, &self.bindings)).await;
        let error = match outcome {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(trap)) => self.classify(call, trap),
            Err(_) => PluginError::Timeout {
                plugin: self.label.to_string(),
                call,
                limit_name,
                limit: if limit_name == "run_timeout" {
                    self.limits.run_timeout
                } else {
                    budget
                },
            },
        };
        self.broken = Some(error.to_string());
        Err(error)
    }

    /// Like [`call`](Self::call) for functions returning the contract's `result<T, error>`.
    pub(crate) async fn call_result<R>(
        &mut self,
        call: &'static str,
        f: impl for<'a> FnOnce(
            &'a mut Store<HostState>,
            &'a B,
        ) -> CallFuture<'a, Result<R, PluginErrorKind>>,
    ) -> Result<R, PluginError> {
        self.call(call, f)
            .await?
            .map_err(|error| PluginError::Plugin {
                plugin: self.label.to_string(),
                call,
                error: scrub_error(self.store.data(), error),
            })
    }

    /// Drops a guest resource (a session, reader, writer or codec) the host holds.
    pub(crate) async fn release(
        &mut self,
        resource: wasmtime::component::ResourceAny,
    ) -> Result<(), PluginError> {
        self.call("drop", |store, _| {
            Box::pin(async move { resource.resource_drop_async(store).await })
        })
        .await
    }

    /// Rejects output larger than asked for or than the stage's `max_chunk`.
    pub(crate) fn check_chunk(
        &self,
        call: &'static str,
        chunk: &[u8],
        asked: u32,
    ) -> Result<(), PluginError> {
        let limit = (asked as u64).min(self.limits.max_chunk);
        if chunk.len() as u64 > limit {
            return Err(PluginError::OversizedChunk {
                plugin: self.label.to_string(),
                call,
                size: chunk.len() as u64,
                limit,
            });
        }
        Ok(())
    }

    fn classify(&mut self, call: &'static str, trap: wasmtime::Error) -> PluginError {
        let plugin = self.label.to_string();
        if self.store.data().limiter.hit() {
            return PluginError::MemoryLimit {
                plugin,
                call,
                limit: self.limits.memory,
            };
        }
        PluginError::Trap {
            plugin,
            call,
            trap: format!("{trap:#}"),
        }
    }

    pub(crate) fn linear_memories(&mut self) -> Vec<Vec<u8>> {
        let mut memories = Vec::new();
        for instance in self.store.debug_all_instances() {
            for index in 0.. {
                let Some(memory) = instance.debug_memory(&mut self.store, index) else {
                    break;
                };
                memories.push(memory.data(&self.store).to_vec());
            }
        }
        memories
    }

    /// Time left before the per-run limit.
    pub fn time_left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// A plugin's error with the stage's secret values removed from its text.
fn scrub_error(host: &HostState, error: PluginErrorKind) -> PluginErrorKind {
    use crate::engine::bindings::{ConfigError, RemoteError};
    let s = |text: String| host.scrub(&text);
    match error {
        PluginErrorKind::Config(ConfigError { field, message }) => {
            PluginErrorKind::Config(ConfigError {
                field,
                message: s(message),
            })
        }
        PluginErrorKind::AccessDenied(m) => PluginErrorKind::AccessDenied(s(m)),
        PluginErrorKind::NotFound(m) => PluginErrorKind::NotFound(s(m)),
        PluginErrorKind::AlreadyExists(m) => PluginErrorKind::AlreadyExists(s(m)),
        PluginErrorKind::Remote(RemoteError { message, retryable }) => {
            PluginErrorKind::Remote(RemoteError {
                message: s(message),
                retryable,
            })
        }
        PluginErrorKind::Corrupt(m) => PluginErrorKind::Corrupt(s(m)),
        PluginErrorKind::Unsupported(m) => PluginErrorKind::Unsupported(s(m)),
        PluginErrorKind::InvalidInput(m) => PluginErrorKind::InvalidInput(s(m)),
        PluginErrorKind::Internal(m) => PluginErrorKind::Internal(s(m)),
    }
}
