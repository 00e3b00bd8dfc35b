//! The guest SDK: write a `runner` source, transform or sink as plain Rust traits.
//!
//! A plugin is a `cdylib` crate built with `cargo build --release --target wasm32-wasip2`.
//! It implements [`Plugin`] plus one of [`Source`], [`Transform`] or [`Sink`], and names
//! its type in one export macro:
//!
//! ```ignore
//! use runner_sdk::{Plugin, Transform, Encoder, Decoder, ObjectInfo, Metadata, Result};
//!
//! struct Identity;
//! impl Plugin for Identity {
//!     const NAME: &'static str = "identity";
//!     const DESCRIPTION: &'static str = "passes bytes through unchanged";
//!     type Config = runner_sdk::NoConfig;
//!     fn new(_: Self::Config) -> Result<Self> { Ok(Identity) }
//! }
//! // impl Transform for Identity { … }
//! runner_sdk::export_transform!(Identity);
//! ```
//!
//! The WIT contract (`runner:plugin`) and wit-bindgen stay behind this API: plugins see
//! Rust types, `Result`s and traits with defaults, never generated bindings.

pub mod digest;
mod error;
mod export;
pub mod files;
pub mod keys;
pub mod log;
mod metadata;
mod sink;
mod source;
pub mod sqlite;
pub mod storage;
mod transform;

pub use error::{Error, Result};
pub use metadata::{Metadata, MetadataExt};
pub use sink::{ListPage, ObjectReader, ObjectStat, ObjectWriter, Sink};
pub use source::{
    Artifact, ArtifactReader, ArtifactWriter, BackupSession, RestoreMode, RestoreOptions,
    RestoreReport, RestoreSession, SizeEstimate, Source,
};
pub use transform::{Decoder, Encoder, ObjectInfo, Transform, append_output};

/// The version of the `runner:plugin` contract this SDK builds against.
pub const CONTRACT_VERSION: &str = "0.2.0";

/// What every plugin is: a name, a description and a typed configuration.
pub trait Plugin: Sized + 'static {
    /// The name users write in a pipeline (`type = "…"`).
    const NAME: &'static str;
    /// One line for `runner plugins`.
    const DESCRIPTION: &'static str;
    /// The stage's TOML table, deserialized with serde. Use [`NoConfig`] when there is none.
    type Config: serde::de::DeserializeOwned;

    /// Called once per instance, before any other call.
    fn new(config: Self::Config) -> Result<Self>;
}

/// Configuration of a plugin that takes no options: any key is rejected.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

/// Generated bindings and export glue; used by the export macros, not by plugins.
#[doc(hidden)]
pub mod __private {
    pub use crate::export::*;

    /// Filled in by the export macros with the plugin crate's own version.
    pub trait PackageVersion {
        const VERSION: &'static str;
    }
}

#[doc(hidden)]
pub mod bindings {
    /// Host imports and shared types, generated once and reused by every world. They are
    /// unchanged since contract 0.1, whose frozen copy defines them.
    pub mod host {
        wit_bindgen::generate!({
            world: "host-services",
            path: "../../wit/deps/runner-plugin-0.1.0",
            generate_all,
        });
    }

    pub mod source {
        wit_bindgen::generate!({
            world: "source-plugin",
            path: "../../wit",
            with: {
                "runner:plugin/types@0.1.0": crate::bindings::host::runner::plugin::types,
                "runner:plugin/log@0.1.0": crate::bindings::host::runner::plugin::log,
                "runner:plugin/files@0.1.0": crate::bindings::host::runner::plugin::files,
                "runner:plugin/sqlite@0.1.0": crate::bindings::host::runner::plugin::sqlite,
            },
            pub_export_macro: true,
            export_macro_name: "export_source_world",
            default_bindings_module: "runner_sdk::bindings::source",
        });
    }

    pub mod transform {
        wit_bindgen::generate!({
            world: "transform-plugin",
            path: "../../wit",
            with: {
                "runner:plugin/types@0.1.0": crate::bindings::host::runner::plugin::types,
                "runner:plugin/log@0.1.0": crate::bindings::host::runner::plugin::log,
                "runner:plugin/keys@0.1.0": crate::bindings::host::runner::plugin::keys,
            },
            pub_export_macro: true,
            export_macro_name: "export_transform_world",
            default_bindings_module: "runner_sdk::bindings::transform",
        });
    }

    pub mod sink {
        wit_bindgen::generate!({
            world: "sink-plugin",
            path: "../../wit",
            with: {
                "runner:plugin/types@0.1.0": crate::bindings::host::runner::plugin::types,
                "runner:plugin/log@0.1.0": crate::bindings::host::runner::plugin::log,
                "runner:plugin/storage@0.1.0": crate::bindings::host::runner::plugin::storage,
            },
            pub_export_macro: true,
            export_macro_name: "export_sink_world",
            default_bindings_module: "runner_sdk::bindings::sink",
        });
    }
}
