//! The compile cache: precompiled components on disk, keyed by the component's digest and
//! the engine's configuration, checked by digest before use and rebuilt when anything is off.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use wasmtime::component::Component;

/// Header of a cache entry; the blake3 digest of the payload follows.
const MAGIC: &[u8; 8] = b"RUNNERC1";

pub struct CompileCache {
    dir: PathBuf,
    /// Identifies the engine configuration and wasmtime version.
    engine_key: String,
    engine: wasmtime::Engine,
}

impl CompileCache {
    pub fn new(dir: PathBuf, engine: &wasmtime::Engine) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        CompileCache {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
            engine: engine.clone(),
        }
    }

    fn entry_path(&self, digest: &[u8; 32]) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", hex::encode(digest), self.engine_key))
    }

    pub fn load_or_compile(&self, digest: &[u8; 32], wasm: &[u8]) -> anyhow::Result<Component> {
        let path = self.entry_path(digest);
        if let Some(component) = self.load(&path) {
            tracing::debug!(path = %path.display(), "compiled component loaded from cache");
            return Ok(component);
        }
        let started = std::time::Instant::now();
        let serialized = self.engine.precompile_component(wasm)?;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "component compiled"
        );
        // SAFETY: produced just now by this engine from the component's bytes.
        let component = unsafe { Component::deserialize(&self.engine, &serialized)? };
        if let Err(e) = self.store(&path, &serialized) {
            tracing::warn!(dir = %self.dir.display(), "compile cache not written: {e}");
        }
        Ok(component)
    }

    /// Whether a verified entry for this component is there (`runner plugins precompile`).
    pub fn contains(&self, digest: &[u8; 32]) -> bool {
        self.load(&self.entry_path(digest)).is_some()
    }

    /// A verified entry, or None (missing, truncated, corrupted, or built by another engine).
    fn load(&self, path: &PathBuf) -> Option<Component> {
        let bytes = std::fs::read(path).ok()?;
        let payload = bytes.strip_prefix(MAGIC.as_slice())?;
        let (digest, payload) = payload.split_at_checked(32)?;
        if blake3::hash(payload).as_bytes() != digest {
            tracing::warn!(path = %path.display(), "compile cache entry is corrupted; recompiling");
            return None;
        }
        // SAFETY: the payload is byte-for-byte what `precompile_component` of an engine
        // with this configuration wrote (digest checked above); wasmtime additionally
        // refuses artifacts of another version or configuration.
        match unsafe { Component::deserialize(&self.engine, payload) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "compile cache entry refused ({e}); recompiling");
                None
            }
        }
    }

    fn store(&self, path: &PathBuf, serialized: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut bytes = Vec::with_capacity(MAGIC.len() + 32 + serialized.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(blake3::hash(serialized).as_bytes());
        bytes.extend_from_slice(serialized);
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, path)
    }
}
