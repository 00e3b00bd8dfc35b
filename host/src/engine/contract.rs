//! Contract versions: which ones this host runs, and the one place where a plugin built
//! against an older version is adapted to the current API (like wasmtime-wasi's
//! preview1-to-preview2 adapter, but on the host side, so old components run unchanged).
//!
//! The rest of the host speaks contract 0.2 only. A 0.1 instance differs in one place:
//! a source's `artifact` had `size-hint: option<u64>` (bytes) where 0.2 has
//! `size: option<size-estimate>` (an amount in a unit, exact or estimated). Every other
//! export has the same shape in both versions, but lives under another interface name,
//! so it has its own generated types; those are converted field for field here.

use wasmtime::Store;
use wasmtime::component::{InstancePre, ResourceAny};

use crate::capabilities::HostState;
use crate::engine::bindings::{self, PluginErrorKind, PluginInfo, v0_1};
use crate::engine::instance::{CallFuture, World};

/// A version of the `runner:plugin` contract this host runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contract {
    /// Frozen in `wit/deps/runner-plugin-0.1.0`; adapted to 0.2 by this module.
    V0_1,
    /// The current contract (`wit/`), which the SDK and every built-in plugin use.
    V0_2,
}

impl Contract {
    /// Every version this host runs, oldest first.
    pub const SUPPORTED: [Contract; 2] = [Contract::V0_1, Contract::V0_2];
    pub const CURRENT: Contract = Contract::V0_2;

    /// The version as it appears in exported interface names (`runner:plugin/source@0.2.0`).
    pub fn version(self) -> &'static str {
        match self {
            Contract::V0_1 => "0.1.0",
            Contract::V0_2 => "0.2.0",
        }
    }

    /// The supported contract named by `version`, if any.
    pub fn of(version: &str) -> Option<Contract> {
        Contract::SUPPORTED
            .into_iter()
            .find(|contract| contract.version() == version)
    }

    /// "0.1.0, 0.2.0", for messages.
    pub fn supported_list() -> String {
        Contract::SUPPORTED.map(Contract::version).join(", ")
    }
}

impl std::fmt::Display for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "runner:plugin@{}", self.version())
    }
}

/// The bindings of one world, in the version the instance was built against.
pub enum Versioned<Old, Current> {
    V0_1(Old),
    V0_2(Current),
}

pub type SourceBindings = Versioned<v0_1::source::SourcePlugin, bindings::source::SourcePlugin>;
pub type TransformBindings =
    Versioned<v0_1::transform::TransformPlugin, bindings::transform::TransformPlugin>;
pub type SinkBindings = Versioned<v0_1::sink::SinkPlugin, bindings::sink::SinkPlugin>;

/// `$call` with `$iface` bound to the instance's export interface, in whichever version it
/// has: for calls whose arguments and results have the same Rust types in every version
/// (numbers, strings, handles, and the shared `types` interface).
macro_rules! either {
    ($bindings:expr, $old:ident, $current:ident, |$iface:ident| $call:expr) => {
        match $bindings {
            Versioned::V0_1(b) => {
                let $iface = b.$old();
                $call
            }
            Versioned::V0_2(b) => {
                let $iface = b.$current();
                $call
            }
        }
    };
}

macro_rules! world {
    ($bindings:ty, $old:ty, $current:ty, $name:literal) => {
        impl World for $bindings {
            const NAME: &'static str = $name;
            fn instantiate<'a>(
                pre: &'a InstancePre<HostState>,
                contract: Contract,
                store: &'a mut Store<HostState>,
            ) -> CallFuture<'a, Self> {
                Box::pin(async move {
                    Ok(match contract {
                        Contract::V0_1 => Versioned::V0_1(
                            <$old>::new(pre.clone())?.instantiate_async(store).await?,
                        ),
                        Contract::V0_2 => Versioned::V0_2(
                            <$current>::new(pre.clone())?
                                .instantiate_async(store)
                                .await?,
                        ),
                    })
                })
            }
            fn info<'a>(&'a self, store: &'a mut Store<HostState>) -> CallFuture<'a, PluginInfo> {
                match self {
                    Versioned::V0_1(b) => Box::pin(b.call_info(store)),
                    Versioned::V0_2(b) => Box::pin(b.call_info(store)),
                }
            }
            fn configure<'a>(
                &'a self,
                store: &'a mut Store<HostState>,
                config: String,
            ) -> CallFuture<'a, Result<(), PluginErrorKind>> {
                Box::pin(async move {
                    match self {
                        Versioned::V0_1(b) => b.call_configure(store, &config).await,
                        Versioned::V0_2(b) => b.call_configure(store, &config).await,
                    }
                })
            }
        }
    };
}

world!(
    SourceBindings,
    v0_1::source::SourcePluginPre<HostState>,
    bindings::source::SourcePluginPre<HostState>,
    "source"
);
world!(
    TransformBindings,
    v0_1::transform::TransformPluginPre<HostState>,
    bindings::transform::TransformPluginPre<HostState>,
    "transform"
);
world!(
    SinkBindings,
    v0_1::sink::SinkPluginPre<HostState>,
    bindings::sink::SinkPluginPre<HostState>,
    "sink"
);

type Call<T> = wasmtime::Result<Result<T, PluginErrorKind>>;
type S<'a> = &'a mut Store<HostState>;

// ---------------------------------------------------------------- source

mod source_v0_1 {
    pub use crate::engine::bindings::v0_1::source::exports::runner::plugin::source::*;
}
pub use crate::engine::bindings::source::exports::runner::plugin0_2_0::source::{
    Artifact, RestoreMode, RestoreOptions, RestoreReport, SizeEstimate,
};

/// The unit of a [`SizeEstimate`] that counts the bytes a reader returns.
pub const BYTES: &str = "bytes";

/// A 0.1 artifact as 0.2 sees it: its byte `size-hint` becomes an estimate in bytes.
fn artifact_from_v0_1(artifact: source_v0_1::Artifact) -> Artifact {
    Artifact {
        name: artifact.name,
        media_type: artifact.media_type,
        size: artifact.size_hint.map(|amount| SizeEstimate {
            amount,
            unit: BYTES.into(),
            exact: false,
        }),
        schema_version: artifact.schema_version,
        metadata: artifact.metadata,
    }
}

/// A 0.2 artifact for a 0.1 source: only a size in bytes has a place in `size-hint`.
fn artifact_to_v0_1(artifact: &Artifact) -> source_v0_1::Artifact {
    source_v0_1::Artifact {
        name: artifact.name.clone(),
        media_type: artifact.media_type.clone(),
        size_hint: artifact
            .size
            .as_ref()
            .filter(|size| size.unit == BYTES)
            .map(|size| size.amount),
        schema_version: artifact.schema_version,
        metadata: artifact.metadata.clone(),
    }
}

fn restore_options_to_v0_1(options: &RestoreOptions) -> source_v0_1::RestoreOptions {
    source_v0_1::RestoreOptions {
        target: options.target.clone(),
        only: options.only.clone(),
        mode: match options.mode {
            RestoreMode::Merge => source_v0_1::RestoreMode::Merge,
            RestoreMode::Replace => source_v0_1::RestoreMode::Replace,
        },
        dry_run: options.dry_run,
        overwrite: options.overwrite,
    }
}

fn restore_report_from_v0_1(report: source_v0_1::RestoreReport) -> RestoreReport {
    RestoreReport {
        artifact: report.artifact,
        metadata: report.metadata,
        warnings: report.warnings,
    }
}

macro_rules! source {
    ($bindings:expr, |$iface:ident| $call:expr) => {
        either!(
            $bindings,
            runner_plugin_source,
            runner_plugin0_2_0_source,
            |$iface| $call
        )
    };
}

impl SourceBindings {
    pub async fn begin_backup(&self, store: S<'_>, token: Option<&str>) -> Call<ResourceAny> {
        source!(self, |s| s.call_begin_backup(store, token).await)
    }

    pub async fn share_token(
        &self,
        store: S<'_>,
        session: ResourceAny,
    ) -> wasmtime::Result<Option<String>> {
        source!(self, |s| s
            .backup_session()
            .call_share_token(store, session)
            .await)
    }

    pub async fn artifacts(&self, store: S<'_>, session: ResourceAny) -> Call<Vec<Artifact>> {
        match self {
            Versioned::V0_1(b) => Ok(b
                .runner_plugin_source()
                .backup_session()
                .call_artifacts(store, session)
                .await?
                .map(|artifacts| artifacts.into_iter().map(artifact_from_v0_1).collect())),
            Versioned::V0_2(b) => {
                b.runner_plugin0_2_0_source()
                    .backup_session()
                    .call_artifacts(store, session)
                    .await
            }
        }
    }

    pub async fn open(&self, store: S<'_>, session: ResourceAny, name: &str) -> Call<ResourceAny> {
        source!(self, |s| s
            .backup_session()
            .call_open(store, session, name)
            .await)
    }

    pub async fn close(&self, store: S<'_>, session: ResourceAny) -> Call<()> {
        source!(self, |s| s
            .backup_session()
            .call_close(store, session)
            .await)
    }

    pub async fn read(&self, store: S<'_>, reader: ResourceAny, max: u32) -> Call<Option<Vec<u8>>> {
        source!(self, |s| s
            .artifact_reader()
            .call_read(store, reader, max)
            .await)
    }

    pub async fn finish_read(
        &self,
        store: S<'_>,
        reader: ResourceAny,
    ) -> Call<Vec<(String, String)>> {
        source!(self, |s| s
            .artifact_reader()
            .call_finish(store, reader)
            .await)
    }

    pub async fn begin_restore(&self, store: S<'_>, options: &RestoreOptions) -> Call<ResourceAny> {
        match self {
            Versioned::V0_1(b) => {
                b.runner_plugin_source()
                    .call_begin_restore(store, &restore_options_to_v0_1(options))
                    .await
            }
            Versioned::V0_2(b) => {
                b.runner_plugin0_2_0_source()
                    .call_begin_restore(store, options)
                    .await
            }
        }
    }

    pub async fn write_artifact(
        &self,
        store: S<'_>,
        session: ResourceAny,
        artifact: &Artifact,
    ) -> Call<ResourceAny> {
        match self {
            Versioned::V0_1(b) => {
                b.runner_plugin_source()
                    .restore_session()
                    .call_write_artifact(store, session, &artifact_to_v0_1(artifact))
                    .await
            }
            Versioned::V0_2(b) => {
                b.runner_plugin0_2_0_source()
                    .restore_session()
                    .call_write_artifact(store, session, artifact)
                    .await
            }
        }
    }

    pub async fn commit(&self, store: S<'_>, session: ResourceAny) -> Call<Vec<RestoreReport>> {
        match self {
            Versioned::V0_1(b) => Ok(b
                .runner_plugin_source()
                .restore_session()
                .call_commit(store, session)
                .await?
                .map(|reports| reports.into_iter().map(restore_report_from_v0_1).collect())),
            Versioned::V0_2(b) => {
                b.runner_plugin0_2_0_source()
                    .restore_session()
                    .call_commit(store, session)
                    .await
            }
        }
    }

    pub async fn abort(&self, store: S<'_>, session: ResourceAny) -> wasmtime::Result<()> {
        source!(self, |s| s
            .restore_session()
            .call_abort(store, session)
            .await)
    }

    pub async fn write(&self, store: S<'_>, writer: ResourceAny, chunk: &[u8]) -> Call<()> {
        source!(self, |s| s
            .artifact_writer()
            .call_write(store, writer, chunk)
            .await)
    }

    pub async fn finish_write(&self, store: S<'_>, writer: ResourceAny) -> Call<()> {
        source!(self, |s| s
            .artifact_writer()
            .call_finish(store, writer)
            .await)
    }
}

// ---------------------------------------------------------------- transform

pub use crate::engine::bindings::transform::exports::runner::plugin0_2_0::transform::ObjectInfo;

fn object_info_to_v0_1(
    object: &ObjectInfo,
) -> v0_1::transform::exports::runner::plugin::transform::ObjectInfo {
    v0_1::transform::exports::runner::plugin::transform::ObjectInfo {
        id: object.id.clone(),
        size_hint: object.size_hint,
    }
}

macro_rules! transform {
    ($bindings:expr, |$iface:ident| $call:expr) => {
        either!(
            $bindings,
            runner_plugin_transform,
            runner_plugin0_2_0_transform,
            |$iface| $call
        )
    };
}

impl TransformBindings {
    pub async fn new_encoder(&self, store: S<'_>, object: &ObjectInfo) -> Call<ResourceAny> {
        match self {
            Versioned::V0_1(b) => {
                b.runner_plugin_transform()
                    .call_new_encoder(store, &object_info_to_v0_1(object))
                    .await
            }
            Versioned::V0_2(b) => {
                b.runner_plugin0_2_0_transform()
                    .call_new_encoder(store, object)
                    .await
            }
        }
    }

    pub async fn new_decoder(
        &self,
        store: S<'_>,
        object: &ObjectInfo,
        params: &Vec<(String, String)>,
    ) -> Call<ResourceAny> {
        match self {
            Versioned::V0_1(b) => {
                b.runner_plugin_transform()
                    .call_new_decoder(store, &object_info_to_v0_1(object), params)
                    .await
            }
            Versioned::V0_2(b) => {
                b.runner_plugin0_2_0_transform()
                    .call_new_decoder(store, object, params)
                    .await
            }
        }
    }

    /// `push` to an encoder, or to a decoder when `decoder`.
    pub async fn push(
        &self,
        store: S<'_>,
        codec: ResourceAny,
        decoder: bool,
        input: &[u8],
    ) -> Call<()> {
        transform!(self, |t| if decoder {
            t.decoder().call_push(store, codec, input).await
        } else {
            t.encoder().call_push(store, codec, input).await
        })
    }

    pub async fn pull(
        &self,
        store: S<'_>,
        codec: ResourceAny,
        decoder: bool,
        max: u32,
    ) -> Call<Option<Vec<u8>>> {
        transform!(self, |t| if decoder {
            t.decoder().call_pull(store, codec, max).await
        } else {
            t.encoder().call_pull(store, codec, max).await
        })
    }

    /// Ends an encoder's input; returns the decoder parameters.
    pub async fn finish_encoder(
        &self,
        store: S<'_>,
        codec: ResourceAny,
    ) -> Call<Vec<(String, String)>> {
        transform!(self, |t| t.encoder().call_finish(store, codec).await)
    }

    pub async fn finish_decoder(&self, store: S<'_>, codec: ResourceAny) -> Call<()> {
        transform!(self, |t| t.decoder().call_finish(store, codec).await)
    }
}

// ---------------------------------------------------------------- sink

mod sink_v0_1 {
    pub use crate::engine::bindings::v0_1::sink::exports::runner::plugin::sink::*;
}
pub use crate::engine::bindings::sink::exports::runner::plugin0_2_0::sink::{ListPage, ObjectStat};

fn object_stat_from_v0_1(stat: sink_v0_1::ObjectStat) -> ObjectStat {
    ObjectStat {
        key: stat.key,
        size: stat.size,
    }
}

macro_rules! sink {
    ($bindings:expr, |$iface:ident| $call:expr) => {
        either!(
            $bindings,
            runner_plugin_sink,
            runner_plugin0_2_0_sink,
            |$iface| $call
        )
    };
}

impl SinkBindings {
    pub async fn max_object_size(&self, store: S<'_>) -> wasmtime::Result<Option<u64>> {
        sink!(self, |s| s.call_max_object_size(store).await)
    }

    pub async fn put(&self, store: S<'_>, key: &str, if_absent: bool) -> Call<ResourceAny> {
        sink!(self, |s| s.call_put(store, key, if_absent).await)
    }

    pub async fn write(&self, store: S<'_>, upload: ResourceAny, chunk: &[u8]) -> Call<()> {
        sink!(self, |s| s
            .object_writer()
            .call_write(store, upload, chunk)
            .await)
    }

    pub async fn finish(&self, store: S<'_>, upload: ResourceAny) -> Call<ObjectStat> {
        match self {
            Versioned::V0_1(b) => Ok(b
                .runner_plugin_sink()
                .object_writer()
                .call_finish(store, upload)
                .await?
                .map(object_stat_from_v0_1)),
            Versioned::V0_2(b) => {
                b.runner_plugin0_2_0_sink()
                    .object_writer()
                    .call_finish(store, upload)
                    .await
            }
        }
    }

    pub async fn abort(&self, store: S<'_>, upload: ResourceAny) -> wasmtime::Result<()> {
        sink!(self, |s| s.object_writer().call_abort(store, upload).await)
    }

    pub async fn stat(&self, store: S<'_>, key: &str) -> Call<Option<ObjectStat>> {
        match self {
            Versioned::V0_1(b) => Ok(b
                .runner_plugin_sink()
                .call_stat(store, key)
                .await?
                .map(|stat| stat.map(object_stat_from_v0_1))),
            Versioned::V0_2(b) => b.runner_plugin0_2_0_sink().call_stat(store, key).await,
        }
    }

    pub async fn get(
        &self,
        store: S<'_>,
        key: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Call<ResourceAny> {
        sink!(self, |s| s.call_get(store, key, offset, length).await)
    }

    pub async fn read(
        &self,
        store: S<'_>,
        download: ResourceAny,
        max: u32,
    ) -> Call<Option<Vec<u8>>> {
        sink!(self, |s| s
            .object_reader()
            .call_read(store, download, max)
            .await)
    }

    pub async fn list(&self, store: S<'_>, prefix: &str, page: Option<&str>) -> Call<ListPage> {
        match self {
            Versioned::V0_1(b) => Ok(b
                .runner_plugin_sink()
                .call_list(store, prefix, page)
                .await?
                .map(|page| ListPage {
                    objects: page
                        .objects
                        .into_iter()
                        .map(object_stat_from_v0_1)
                        .collect(),
                    next_page: page.next_page,
                })),
            Versioned::V0_2(b) => {
                b.runner_plugin0_2_0_sink()
                    .call_list(store, prefix, page)
                    .await
            }
        }
    }

    pub async fn delete(&self, store: S<'_>, key: &str) -> Call<()> {
        sink!(self, |s| s.call_delete(store, key).await)
    }

    pub async fn check(&self, store: S<'_>) -> Call<()> {
        sink!(self, |s| s.call_check(store).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(size: Option<SizeEstimate>) -> Artifact {
        Artifact {
            name: "db/users".into(),
            media_type: "application/x-ndjson".into(),
            size,
            schema_version: 3,
            metadata: vec![("rows".into(), "12".into())],
        }
    }

    #[test]
    fn a_0_1_size_hint_is_an_estimate_in_bytes_and_a_size_in_bytes_goes_back_as_the_hint() {
        let old = source_v0_1::Artifact {
            name: "db/users".into(),
            media_type: "application/x-ndjson".into(),
            size_hint: Some(4096),
            schema_version: 3,
            metadata: vec![("rows".into(), "12".into())],
        };
        let current = artifact_from_v0_1(old);
        let size = current.size.as_ref().expect("a size");
        assert_eq!(
            (size.amount, size.unit.as_str(), size.exact),
            (4096, BYTES, false)
        );
        assert_eq!((current.schema_version, current.metadata.len()), (3, 1));
        let back = artifact_to_v0_1(&current);
        assert_eq!(back.size_hint, Some(4096));
        assert_eq!(back.name, "db/users");
    }

    #[test]
    fn an_estimate_in_another_unit_has_no_place_in_a_0_1_size_hint() {
        let rows = artifact(Some(SizeEstimate {
            amount: 1_000_000,
            unit: "rows".into(),
            exact: false,
        }));
        assert_eq!(artifact_to_v0_1(&rows).size_hint, None);
        assert_eq!(artifact_to_v0_1(&artifact(None)).size_hint, None);
    }

    #[test]
    fn supported_versions_are_named_and_others_are_not() {
        assert_eq!(Contract::of("0.1.0"), Some(Contract::V0_1));
        assert_eq!(Contract::of("0.2.0"), Some(Contract::V0_2));
        assert_eq!(Contract::of("0.3.0"), None);
        assert_eq!(Contract::of("0.2"), None);
        assert_eq!(Contract::supported_list(), "0.1.0, 0.2.0");
        assert_eq!(Contract::CURRENT.to_string(), "runner:plugin@0.2.0");
    }
}
