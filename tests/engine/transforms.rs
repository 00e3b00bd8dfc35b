//! Every built-in transform round-trips (empty, 1 byte, segment edges, random chunkings,
//! 1 GiB streamed) and each decoder rejects its own kinds of corruption.

use std::io::{Read, Write};

use runner::capabilities::KeyRing;
use runner::engine::PluginError;
use runner::engine::bindings::PluginErrorKind;
use serde_json::json;

use crate::common::{self, Prng, decode, encode, key_ring, transform};

/// A key with no structure, so finding it in memory cannot be a coincidence of tables
/// (a hex alphabet, say, sits in every binary's data).
const KEY: [u8; 32] = [
    0x9d, 0x41, 0xe7, 0x03, 0x5c, 0xb2, 0x18, 0xfa, 0x66, 0x2e, 0xc9, 0x70, 0x0b, 0xd4, 0x87, 0x3f,
    0xa1, 0x5e, 0x29, 0xf6, 0x94, 0x0c, 0x7b, 0xe2, 0x38, 0xcd, 0x51, 0x16, 0xbf, 0x60, 0x8a, 0x47,
];

async fn start(name: &str, config: serde_json::Value) -> runner::engine::TransformInstance {
    let keys = if name == "aes-gcm" {
        key_ring(&KEY)
    } else {
        KeyRing::default()
    };
    transform(&common::engine(), name, config, keys).await
}

fn assert_corrupt(result: Result<Vec<u8>, PluginError>, expected: &str) {
    match result {
        Err(PluginError::Plugin {
            error: PluginErrorKind::Corrupt(message),
            ..
        }) => {
            assert!(
                message.contains(expected),
                "corrupt error {message:?} does not mention {expected:?}"
            )
        }
        Err(other) => panic!("expected a corrupt-data error mentioning {expected:?}, got: {other}"),
        Ok(bytes) => panic!("corruption went undetected ({} bytes decoded)", bytes.len()),
    }
}

#[tokio::test]
async fn each_transform_round_trips_edge_sizes_and_random_chunkings() {
    let mut prng = Prng::new(1);
    let inputs: Vec<Vec<u8>> = [
        0,
        1,
        1023,
        1024,
        1025,
        (1 << 20) - 1,
        1 << 20,
        (1 << 20) + 1,
        3 << 20,
    ]
    .iter()
    .map(|&n| prng.mixed(n))
    .collect();
    for (name, config) in [
        ("checksum", json!({})),
        ("zstd", json!({ "level": 3 })),
        ("zstd", json!({ "level": 19 })),
        ("aes-gcm", json!({})),
        ("aes-gcm", json!({ "segment_size": 1024 })),
    ] {
        let mut t = start(name, config.clone()).await;
        for (i, input) in inputs.iter().enumerate() {
            // Whole, then in random pieces; decode in other random pieces.
            let id = format!("object-{i}");
            let (whole, params) = encode(&mut t, &id, &[input]).await;
            assert_eq!(
                decode(&mut t, &id, &params, &[&whole]).await.unwrap(),
                *input,
                "{name} {config} whole, {} bytes",
                input.len()
            );

            let pieces = prng.split(input, 300_000);
            let (encoded, params) = encode(&mut t, &id, &pieces).await;
            let encoded_pieces = prng.split(&encoded, 200_000);
            let decoded = decode(&mut t, &id, &params, &encoded_pieces).await.unwrap();
            assert_eq!(
                decoded,
                *input,
                "{name} {config} random pieces, {} bytes",
                input.len()
            );
        }
    }
}

#[tokio::test]
async fn one_gib_streams_through_the_chain_and_back() {
    const TOTAL: usize = 1 << 30;
    const CHUNK: usize = 1 << 20;
    let engine = common::engine();
    let keys = key_ring(&KEY);
    let mut chain = vec![
        transform(&engine, "checksum", json!({}), KeyRing::default()).await,
        transform(&engine, "zstd", json!({ "level": 3 }), KeyRing::default()).await,
        transform(&engine, "aes-gcm", json!({}), keys).await,
    ];
    let stored = tempfile::NamedTempFile::new().unwrap();
    let mut file = std::io::BufWriter::new(stored.reopen().unwrap());

    // Encode: each chunk goes through every stage in turn; nothing holds the whole stream.
    let mut prng = Prng::new(7);
    let mut input_digest = blake3::Hasher::new();
    let mut codecs = Vec::new();
    for t in chain.iter_mut() {
        codecs.push(t.encoder(&common::object("big")).await.unwrap());
    }
    let mut chunk = vec![0u8; CHUNK];
    for i in 0..TOTAL / CHUNK {
        prng.fill(&mut chunk);
        if i % 2 == 0 {
            chunk[..CHUNK / 2].fill(b'a');
        }
        input_digest.update(&chunk);
        let mut pending = vec![chunk.clone()];
        for (t, codec) in chain.iter_mut().zip(&codecs) {
            let mut next = Vec::new();
            for piece in pending {
                t.feed(codec, piece, &mut |out| next.push(out))
                    .await
                    .unwrap();
            }
            pending = next;
        }
        for piece in pending {
            file.write_all(&piece).unwrap();
        }
    }
    let mut params = Vec::new();
    let mut tail: Vec<Vec<u8>> = Vec::new();
    for (t, codec) in chain.iter_mut().zip(codecs) {
        let mut next = Vec::new();
        for piece in tail {
            t.feed(&codec, piece, &mut |out| next.push(out))
                .await
                .unwrap();
        }
        params.push(t.finish_encoder(&codec).await.unwrap());
        t.drain(&codec, &mut |out| next.push(out)).await.unwrap();
        t.close(codec).await.unwrap();
        tail = next;
    }
    for piece in tail {
        file.write_all(&piece).unwrap();
    }
    file.flush().unwrap();
    let stored_size = stored.as_file().metadata().unwrap().len();
    assert!(
        stored_size < TOTAL as u64 * 9 / 10,
        "half-compressible data should shrink, stored {stored_size}"
    );

    // Decode in reverse order, reading the stored stream back 1 MiB at a time.
    let mut decoders = Vec::new();
    for (t, p) in chain.iter_mut().zip(&params).rev() {
        decoders.push(t.decoder(&common::object("big"), p).await.unwrap());
    }
    let mut reader = std::io::BufReader::new(stored.reopen().unwrap());
    let mut output_digest = blake3::Hasher::new();
    let mut output_len = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = reader.read(&mut buf).unwrap();
        let finishing = n == 0;
        let mut pending = if finishing {
            Vec::new()
        } else {
            vec![buf[..n].to_vec()]
        };
        for (t, codec) in chain.iter_mut().rev().zip(&decoders) {
            let mut next = Vec::new();
            for piece in pending {
                t.feed(codec, piece, &mut |out| next.push(out))
                    .await
                    .unwrap();
            }
            if finishing {
                t.finish_decoder(codec).await.unwrap();
                t.drain(codec, &mut |out| next.push(out)).await.unwrap();
            }
            pending = next;
        }
        for piece in pending {
            output_len += piece.len() as u64;
            output_digest.update(&piece);
        }
        if finishing {
            break;
        }
    }
    assert_eq!(output_len, TOTAL as u64);
    assert_eq!(output_digest.finalize(), input_digest.finalize());
}

#[tokio::test]
async fn checksum_decoder_rejects_a_flipped_byte_and_a_missing_byte() {
    let mut t = start("checksum", json!({})).await;
    let input = Prng::new(2).bytes(100_000);
    let (mut encoded, params) = encode(&mut t, "o", &[&input]).await;
    assert_eq!(
        params.iter().find(|(k, _)| k == "sha256").unwrap().1,
        hex::encode(runner::plugins::sha256(&input))
    );
    encoded[50_000] ^= 0x01;
    assert_corrupt(
        decode(&mut t, "o", &params, &[&encoded]).await,
        "sha256 mismatch",
    );
    encoded[50_000] ^= 0x01;
    assert_corrupt(
        decode(&mut t, "o", &params, &[&encoded[1..]]).await,
        "sha256 mismatch",
    );
}

#[tokio::test]
async fn zstd_decoder_rejects_garbage_and_truncation() {
    let mut t = start("zstd", json!({})).await;
    let garbage = Prng::new(3).bytes(10_000);
    assert_corrupt(decode(&mut t, "o", &vec![], &[&garbage]).await, "zstd");
    let input = Prng::new(4).mixed(500_000);
    let (encoded, params) = encode(&mut t, "o", &[&input]).await;
    assert_corrupt(
        decode(&mut t, "o", &params, &[&encoded[..encoded.len() - 10]]).await,
        "truncated",
    );
    assert_corrupt(decode(&mut t, "o", &params, &[]).await, "truncated");
}

/// Sealed segments of an aes-gcm stream with 1 KiB segments.
fn segments(encoded: &[u8]) -> Vec<&[u8]> {
    encoded.chunks(1024 + 28).collect()
}

#[tokio::test]
async fn aes_gcm_decoder_rejects_tampering_truncation_reordering_and_splicing() {
    let mut t = start("aes-gcm", json!({ "segment_size": 1024 })).await;
    let input = Prng::new(5).bytes(10 * 1024 + 100);
    let (encoded, params) = encode(&mut t, "object-a", &[&input]).await;
    assert_eq!(
        encoded.len(),
        input.len() + 11 * 28,
        "11 segments of nonce + tag overhead"
    );
    assert_eq!(
        decode(&mut t, "object-a", &params, &[&encoded])
            .await
            .unwrap(),
        input
    );

    // A flipped bit anywhere.
    for position in [0, 12, 500, encoded.len() - 1] {
        let mut tampered = encoded.clone();
        tampered[position] ^= 0x80;
        assert_corrupt(
            decode(&mut t, "object-a", &params, &[&tampered]).await,
            "does not authenticate",
        );
    }

    // Truncated: the last segment dropped (a full segment is not a valid last one),
    // cut inside a segment, and cut to less than one sealed segment.
    let segs = segments(&encoded);
    let without_last: Vec<u8> = segs[..segs.len() - 1].concat();
    assert_corrupt(
        decode(&mut t, "object-a", &params, &[&without_last]).await,
        "as the last one",
    );
    assert_corrupt(
        decode(
            &mut t,
            "object-a",
            &params,
            &[&encoded[..encoded.len() - 50]],
        )
        .await,
        "does not authenticate",
    );
    assert_corrupt(
        decode(&mut t, "object-a", &params, &[&encoded[..20]]).await,
        "truncated",
    );

    // Reordered: segments 1 and 2 swapped.
    let mut reordered: Vec<&[u8]> = segs.clone();
    reordered.swap(1, 2);
    assert_corrupt(
        decode(&mut t, "object-a", &params, &[&reordered.concat()]).await,
        "segment 1 does not authenticate",
    );

    // Spliced: segment 3 taken from another object sealed with the same key.
    let (other, _) = encode(&mut t, "object-b", &[&input]).await;
    let mut spliced: Vec<&[u8]> = segs.clone();
    spliced[3] = segments(&other)[3];
    assert_corrupt(
        decode(&mut t, "object-a", &params, &[&spliced.concat()]).await,
        "segment 3 does not authenticate",
    );

    // The whole stream of another object under this object's id.
    assert_corrupt(
        decode(&mut t, "object-a", &params, &[&other]).await,
        "segment 0 does not authenticate",
    );
}

#[tokio::test]
async fn aes_gcm_decoder_names_a_different_key() {
    let mut sealer = start("aes-gcm", json!({})).await;
    let (encoded, params) = encode(&mut sealer, "o", &[b"secret data"]).await;
    let other_key = transform(&common::engine(), "aes-gcm", json!({}), key_ring(&[7; 32])).await;
    let mut opener = other_key;
    match decode(&mut opener, "o", &params, &[&encoded]).await {
        Err(PluginError::Plugin {
            error: PluginErrorKind::Corrupt(message),
            ..
        }) => {
            assert!(message.contains("encrypted with key data:"), "{message}")
        }
        other => panic!("expected a key mismatch, got {:?}", other.map(|b| b.len())),
    }
}

#[tokio::test]
async fn aes_gcm_without_a_granted_key_fails_to_configure() {
    let builtin =
        runner::plugins::builtin(runner::config::StageKind::Transform, "aes-gcm").unwrap();
    let engine = common::engine();
    let loaded = engine.load("aes-gcm", builtin.wasm).unwrap();
    let started = runner::engine::TransformInstance::start(
        &engine,
        &loaded,
        "aes-gcm",
        "{}",
        Default::default(),
        &Default::default(),
    )
    .await;
    match started {
        Err(PluginError::Plugin {
            error: PluginErrorKind::AccessDenied(message),
            ..
        }) => {
            assert!(message.contains("no key named \"data\""), "{message}")
        }
        Err(other) => panic!("expected access denied, got {other}"),
        Ok(_) => panic!("aes-gcm started without a key"),
    }
}

#[tokio::test]
async fn the_key_never_enters_the_aes_gcm_plugin_memory() {
    let engine = common::debug_engine();
    let mut t = transform(&engine, "aes-gcm", json!({}), key_ring(&KEY)).await;
    let marker = b"PLAINTEXT-MARKER-0123456789-SEEN-IN-GUEST";
    let mut input = Prng::new(6).bytes(3 << 20);
    input[(3 << 20) - 100..(3 << 20) - 100 + marker.len()].copy_from_slice(marker);
    let (encoded, params) = encode(&mut t, "o", &[&input]).await;
    assert_eq!(
        decode(&mut t, "o", &params, &[&encoded]).await.unwrap(),
        input
    );

    let memories = t.linear_memories();
    assert!(
        !memories.is_empty(),
        "the debug engine must expose the plugin's linear memory"
    );
    let contains = |needle: &[u8]| common::memory_contains(&memories, needle);
    // The scan is real: data the plugin handled is in its memory...
    assert!(
        contains(marker),
        "the plaintext marker should be visible in guest memory"
    );
    // ...but the key, and its halves, never are.
    assert!(
        !contains(&KEY),
        "the raw key was found in the plugin's linear memory"
    );
    assert!(
        !contains(&KEY[..16]) && !contains(&KEY[16..]),
        "part of the key was found in the plugin's memory"
    );
}
