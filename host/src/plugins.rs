//! The built-in plugins embedded in the binary at build time, and their digests.

use sha2::{Digest, Sha256};

use crate::config::{PluginCatalog, StageKind};

/// A plugin compiled into the `runner` binary.
pub struct BuiltinPlugin {
    /// The name pipelines use (`type = "zstd"`).
    pub name: &'static str,
    pub kind: StageKind,
    /// The component's bytes, exactly as `cargo build --target wasm32-wasip2` wrote them.
    pub wasm: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

impl BuiltinPlugin {
    /// sha256 of the component, as `sha256sum` prints it and pipelines pin it.
    pub fn digest(&self) -> [u8; 32] {
        sha256(self.wasm)
    }
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The built-in plugin of `kind` called `name`.
pub fn builtin(kind: StageKind, name: &str) -> Option<&'static BuiltinPlugin> {
    BUILTINS.iter().find(|p| p.kind == kind && p.name == name)
}

/// The catalog config validation checks `type = "…"` against.
pub struct Builtins;

impl PluginCatalog for Builtins {
    fn builtin_names(&self, kind: StageKind) -> Vec<String> {
        BUILTINS
            .iter()
            .filter(|p| p.kind == kind)
            .map(|p| p.name.to_string())
            .collect()
    }
}
