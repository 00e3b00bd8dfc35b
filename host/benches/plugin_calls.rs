//! Benchmark (not a test): the cost of crossing into a plugin, and each built-in
//! transform's throughput through the real components next to the same work done natively.
//!
//!   cargo bench --bench plugin_calls

use std::sync::Arc;
use std::time::Instant;

use runner::capabilities::keys::DataKey;
use runner::capabilities::{KeyRing, StageGrants};
use runner::config::{Limits, StageKind};
use runner::engine::transform::ObjectInfo;
use runner::engine::{Engine, EngineOptions, TransformInstance};
use sha2::Digest;

const MIB: usize = 1 << 20;
const TOTAL: usize = 256 * MIB;

async fn start(engine: &Engine, name: &str, config: &str, keys: KeyRing) -> TransformInstance {
    let builtin = runner::plugins::builtin(StageKind::Transform, name).unwrap();
    let loaded = engine.load(name, builtin.wasm).unwrap();
    let grants = StageGrants {
        keys,
        ..Default::default()
    };
    TransformInstance::start(engine, &loaded, name, config, grants, &Limits::default())
        .await
        .unwrap()
}

fn data() -> Vec<u8> {
    // Half text, half noise: compressible like real backups.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..MIB)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if (i / 4096) % 2 == 0 {
                b"lorem ipsum dolor sit amet "[i % 27]
            } else {
                state as u8
            }
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let cache = std::env::temp_dir().join("runner-bench-cache");
    let engine = Engine::new(EngineOptions {
        cache_dir: Some(cache),
        guest_debug: false,
    })
    .unwrap();
    let key: [u8; 32] = rand::random();
    let keys = KeyRing::default().with("data", Arc::new(DataKey::new("data", &key)));
    let object = ObjectInfo {
        id: "bench".into(),
        size_hint: None,
    };

    // Instantiation (compiled code cached).
    let started = Instant::now();
    for _ in 0..20 {
        start(&engine, "zstd", "{}", KeyRing::default()).await;
    }
    println!(
        "instantiate + configure zstd (warm cache): {:.2} ms",
        started.elapsed().as_secs_f64() * 1000.0 / 20.0
    );

    // Per-call cost: a pull that returns nothing, round trip through the guarded call.
    let mut checksum = start(&engine, "checksum", "{}", KeyRing::default()).await;
    let codec = checksum.encoder(&object).await.unwrap();
    let calls = 100_000;
    let started = Instant::now();
    for _ in 0..calls {
        checksum.pull(&codec, 1024).await.unwrap();
    }
    println!(
        "one call into a plugin (empty pull): {:.2} µs",
        started.elapsed().as_secs_f64() * 1e6 / calls as f64
    );
    checksum.close(codec).await.unwrap();

    let chunk = data();
    println!(
        "\n{:<10} {:>12} {:>12}",
        "transform", "plugin MiB/s", "native MiB/s"
    );
    for (name, config, k) in [
        ("checksum", "{}", KeyRing::default()),
        ("zstd", r#"{"level":3}"#, KeyRing::default()),
        ("aes-gcm", "{}", keys.clone()),
    ] {
        let mut t = start(&engine, name, config, k).await;
        let codec = t.encoder(&object).await.unwrap();
        let started = Instant::now();
        let mut out = 0usize;
        for _ in 0..TOTAL / MIB {
            t.feed(&codec, chunk.clone(), &mut |piece| out += piece.len())
                .await
                .unwrap();
        }
        t.finish_encoder(&codec).await.unwrap();
        t.drain(&codec, &mut |piece| out += piece.len())
            .await
            .unwrap();
        let plugin = TOTAL as f64 / MIB as f64 / started.elapsed().as_secs_f64();
        std::hint::black_box(out);

        let started = Instant::now();
        match name {
            "checksum" => {
                let mut h = sha2::Sha256::new();
                for _ in 0..TOTAL / MIB {
                    h.update(&chunk);
                }
                std::hint::black_box(h.finalize());
            }
            "aes-gcm" => {
                let native = DataKey::new("data", &key);
                for _ in 0..TOTAL / MIB {
                    std::hint::black_box(native.seal(b"ad", &chunk));
                }
            }
            _ => {}
        }
        let native = if name == "zstd" {
            f64::NAN
        } else {
            TOTAL as f64 / MIB as f64 / started.elapsed().as_secs_f64()
        };
        println!("{name:<10} {plugin:>12.0} {native:>12.0}");
    }
    println!("(zstd natively: see `zstd -b3`; the plugin is C zstd built for wasm32-wasip2)");
}
