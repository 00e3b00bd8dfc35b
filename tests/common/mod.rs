//! Helpers shared by the end-to-end tests: engines, built-in transforms, deterministic data.
#![allow(dead_code)]

pub mod background;
pub mod drive_fake;
pub mod es_emulator;
pub mod es_yaml;
pub mod fault_proxy;
pub mod fixtures;
pub mod s3_server;
pub mod tree;
pub mod webhook;

use std::path::PathBuf;
use std::sync::Arc;

use runner::capabilities::keys::DataKey;
use runner::capabilities::{KeyRing, StageGrants};
use runner::config::{Limits, StageKind};
use runner::engine::transform::{ObjectInfo, Params};
use runner::engine::{Engine, EngineOptions, PluginError, TransformInstance};

/// The compile cache shared by every test of this build.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("compile-cache")
}

pub fn engine() -> Engine {
    Engine::new(EngineOptions {
        cache_dir: Some(cache_dir()),
        guest_debug: false,
    })
    .unwrap()
}

/// An engine whose plugins' linear memory the test can read.
pub fn debug_engine() -> Engine {
    Engine::new(EngineOptions {
        cache_dir: Some(cache_dir()),
        guest_debug: true,
    })
    .unwrap()
}

pub fn key_ring(key: &[u8; 32]) -> KeyRing {
    KeyRing::default().with("data", Arc::new(DataKey::new("data", key)))
}

/// Starts the built-in transform `name` with `config` and the given keys.
pub async fn transform(
    engine: &Engine,
    name: &str,
    config: serde_json::Value,
    keys: KeyRing,
) -> TransformInstance {
    let builtin = runner::plugins::builtin(StageKind::Transform, name)
        .unwrap_or_else(|| panic!("no built-in {name}"));
    let loaded = engine.load(name, builtin.wasm).unwrap();
    let grants = StageGrants {
        keys,
        ..Default::default()
    };
    TransformInstance::start(
        engine,
        &loaded,
        name,
        &config.to_string(),
        grants,
        &Limits::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("starting {name}: {e}"))
}

pub fn object(id: &str) -> ObjectInfo {
    ObjectInfo {
        id: id.to_string(),
        size_hint: None,
    }
}

/// Encodes `chunks` as one object; returns the encoded bytes and the decoder parameters.
pub async fn encode(t: &mut TransformInstance, id: &str, chunks: &[&[u8]]) -> (Vec<u8>, Params) {
    let codec = t.encoder(&object(id)).await.unwrap();
    let mut out = Vec::new();
    let mut sink = |piece: Vec<u8>| out.extend_from_slice(&piece);
    for chunk in chunks {
        t.feed(&codec, chunk.to_vec(), &mut sink).await.unwrap();
    }
    let params = t.finish_encoder(&codec).await.unwrap();
    t.drain(&codec, &mut sink).await.unwrap();
    t.close(codec).await.unwrap();
    (out, params)
}

/// Decodes one object fed in `chunks`; the error is the plugin's (corruption) error.
pub async fn decode(
    t: &mut TransformInstance,
    id: &str,
    params: &Params,
    chunks: &[&[u8]],
) -> Result<Vec<u8>, PluginError> {
    let codec = t.decoder(&object(id), params).await?;
    let mut out = Vec::new();
    let mut sink = |piece: Vec<u8>| out.extend_from_slice(&piece);
    for chunk in chunks {
        t.feed(&codec, chunk.to_vec(), &mut sink).await?;
    }
    t.finish_decoder(&codec).await?;
    t.drain(&codec, &mut sink).await?;
    t.close(codec).await?;
    Ok(out)
}

/// Whether any of a plugin's linear memories (from a debug engine) holds `needle`: the scan
/// behind every "this secret never enters the plugin" test.
pub fn memory_contains(memories: &[Vec<u8>], needle: &[u8]) -> bool {
    memories
        .iter()
        .any(|m| m.windows(needle.len()).any(|w| w == needle))
}

/// A small deterministic PRNG (xorshift64*), so failures reproduce.
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Self {
        Prng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.fill(&mut buf);
        buf
    }

    /// Half text-like (compressible), half random: a stand-in for real backup data.
    pub fn mixed(&mut self, n: usize) -> Vec<u8> {
        let mut buf = self.bytes(n);
        for (i, byte) in buf.iter_mut().enumerate() {
            if (i / 4096) % 2 == 0 {
                *byte = b"the quick brown fox jumps over the lazy dog\n"[i % 44];
            }
        }
        buf
    }

    /// `data` cut into pieces of random sizes in `1..=max`.
    pub fn split<'a>(&mut self, data: &'a [u8], max: usize) -> Vec<&'a [u8]> {
        let mut pieces = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let n = (1 + self.below(max)).min(rest.len());
            let (piece, tail) = rest.split_at(n);
            pieces.push(piece);
            rest = tail;
        }
        pieces
    }
}
