//! Host-side bindings of the `runner:plugin` contract: the current version (0.2, `wit/`)
//! and every older one the host still runs (0.1, frozen in `wit/deps/runner-plugin-0.1.0`).

/// The interfaces the host provides to plugins, and the shared types. They are unchanged
/// since contract 0.1, and every contract version imports them under their 0.1.0 names.
pub mod services {
    wasmtime::component::bindgen!({
        world: "host-services",
        path: "../wit/deps/runner-plugin-0.1.0",
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

/// The host services new in contract 0.2.
pub mod services_0_2 {
    wasmtime::component::bindgen!({
        world: "host-services",
        path: "../wit",
        imports: { default: async | trappable },
        with: {
            "runner:plugin/digest.sha256": crate::capabilities::digest::Sha256Hasher,
            "runner:plugin/types@0.1.0": super::services::runner::plugin::types,
            "runner:plugin/log@0.1.0": super::services::runner::plugin::log,
            "runner:plugin/keys@0.1.0": super::services::runner::plugin::keys,
            "runner:plugin/storage@0.1.0": super::services::runner::plugin::storage,
            "runner:plugin/files@0.1.0": super::services::runner::plugin::files,
            "runner:plugin/sqlite@0.1.0": super::services::runner::plugin::sqlite,
        },
    });
}

pub use services::runner::plugin::types::{
    ConfigError, Error as PluginErrorKind, PluginInfo, RemoteError,
};

/// Contract 0.2, the current one: what plugins built with this SDK export.
pub mod source {
    wasmtime::component::bindgen!({
        world: "source-plugin",
        path: "../wit",
        exports: { default: async },
        with: {
            "runner:plugin/digest@0.2.0": super::services_0_2::runner::plugin0_2_0::digest,
            "runner:plugin/types@0.1.0": super::services::runner::plugin::types,
            "runner:plugin/log@0.1.0": super::services::runner::plugin::log,
            "runner:plugin/files@0.1.0": super::services::runner::plugin::files,
            "runner:plugin/sqlite@0.1.0": super::services::runner::plugin::sqlite,
        },
    });
}

pub mod transform {
    wasmtime::component::bindgen!({
        world: "transform-plugin",
        path: "../wit",
        exports: { default: async },
        with: {
            "runner:plugin/digest@0.2.0": super::services_0_2::runner::plugin0_2_0::digest,
            "runner:plugin/types@0.1.0": super::services::runner::plugin::types,
            "runner:plugin/log@0.1.0": super::services::runner::plugin::log,
            "runner:plugin/keys@0.1.0": super::services::runner::plugin::keys,
        },
    });
}

pub mod sink {
    wasmtime::component::bindgen!({
        world: "sink-plugin",
        path: "../wit",
        exports: { default: async },
        with: {
            "runner:plugin/digest@0.2.0": super::services_0_2::runner::plugin0_2_0::digest,
            "runner:plugin/types@0.1.0": super::services::runner::plugin::types,
            "runner:plugin/log@0.1.0": super::services::runner::plugin::log,
            "runner:plugin/storage@0.1.0": super::services::runner::plugin::storage,
        },
    });
}

/// Contract 0.1, frozen: what older plugins export. `engine::contract` adapts them to 0.2.
pub mod v0_1 {
    pub mod source {
        wasmtime::component::bindgen!({
            world: "source-plugin",
            path: "../wit/deps/runner-plugin-0.1.0",
            exports: { default: async },
            with: {
                "runner:plugin/types@0.1.0": super::super::services::runner::plugin::types,
                "runner:plugin/log@0.1.0": super::super::services::runner::plugin::log,
                "runner:plugin/files@0.1.0": super::super::services::runner::plugin::files,
                "runner:plugin/sqlite@0.1.0": super::super::services::runner::plugin::sqlite,
            },
        });
    }

    pub mod transform {
        wasmtime::component::bindgen!({
            world: "transform-plugin",
            path: "../wit/deps/runner-plugin-0.1.0",
            exports: { default: async },
            with: {
                "runner:plugin/types@0.1.0": super::super::services::runner::plugin::types,
                "runner:plugin/log@0.1.0": super::super::services::runner::plugin::log,
                "runner:plugin/keys@0.1.0": super::super::services::runner::plugin::keys,
            },
        });
    }

    pub mod sink {
        wasmtime::component::bindgen!({
            world: "sink-plugin",
            path: "../wit/deps/runner-plugin-0.1.0",
            exports: { default: async },
            with: {
                "runner:plugin/types@0.1.0": super::super::services::runner::plugin::types,
                "runner:plugin/log@0.1.0": super::super::services::runner::plugin::log,
                "runner:plugin/storage@0.1.0": super::super::services::runner::plugin::storage,
            },
        });
    }
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
