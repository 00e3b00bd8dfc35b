//! Host-side bindings of the `runner:plugin` contract, generated from `wit/`.

/// The interfaces the host provides to plugins, and the shared types.
pub mod services {
    wasmtime::component::bindgen!({
        world: "host-services",
        path: "../wit",
        imports: { default: async | trappable },
        with: {
            "runner:plugin/keys.sealing-key": crate::capabilities::keys::SealingKeyHandle,
            "runner:plugin/storage.writer": crate::capabilities::storage::StorageWriter,
            "runner:plugin/storage.reader": crate::capabilities::storage::StorageReader,
            "runner:plugin/files.file-reader": crate::capabilities::files::FileReader,
            "runner:plugin/files.file-writer": crate::capabilities::files::FileWriter,
        },
    });
}

pub use services::runner::plugin::types::{
    ConfigError, Error as PluginErrorKind, PluginInfo, RemoteError,
};

pub mod source {
    wasmtime::component::bindgen!({
        world: "source-plugin",
        path: "../wit",
        exports: { default: async },
        with: {
            "runner:plugin/types": super::services::runner::plugin::types,
            "runner:plugin/log": super::services::runner::plugin::log,
            "runner:plugin/files": super::services::runner::plugin::files,
            "runner:plugin/sqlite": super::services::runner::plugin::sqlite,
        },
    });
}

pub mod transform {
    wasmtime::component::bindgen!({
        world: "transform-plugin",
        path: "../wit",
        exports: { default: async },
        with: {
            "runner:plugin/types": super::services::runner::plugin::types,
            "runner:plugin/log": super::services::runner::plugin::log,
            "runner:plugin/keys": super::services::runner::plugin::keys,
        },
    });
}

pub mod sink {
    wasmtime::component::bindgen!({
        world: "sink-plugin",
        path: "../wit",
        exports: { default: async },
        with: {
            "runner:plugin/types": super::services::runner::plugin::types,
            "runner:plugin/log": super::services::runner::plugin::log,
            "runner:plugin/storage": super::services::runner::plugin::storage,
        },
    });
}

/// A plugin's error as a sentence (the generated `Display` is the debug form).
pub fn describe(error: &PluginErrorKind) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let f = &mut out;
    let _ = match error {
        PluginErrorKind::Config(ConfigError {
            field: Some(field),
            message,
        }) => {
            write!(f, "invalid configuration: `{field}`: {message}")
        }
        PluginErrorKind::Config(ConfigError {
            field: None,
            message,
        }) => {
            write!(f, "invalid configuration: {message}")
        }
        PluginErrorKind::AccessDenied(m) => write!(f, "access denied: {m}"),
        PluginErrorKind::NotFound(m) => write!(f, "not found: {m}"),
        PluginErrorKind::AlreadyExists(m) => write!(f, "already exists: {m}"),
        PluginErrorKind::Remote(RemoteError {
            message,
            retryable: true,
        }) => {
            write!(f, "remote error (retryable): {message}")
        }
        PluginErrorKind::Remote(RemoteError {
            message,
            retryable: false,
        }) => {
            write!(f, "remote error: {message}")
        }
        PluginErrorKind::Corrupt(m) => write!(f, "corrupt data: {m}"),
        PluginErrorKind::Unsupported(m) => write!(f, "unsupported: {m}"),
        PluginErrorKind::InvalidInput(m) => write!(f, "invalid input: {m}"),
        PluginErrorKind::Internal(m) => write!(f, "internal error: {m}"),
    };
    out
}
