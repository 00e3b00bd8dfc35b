//! The elasticsearch source's credentials stay in the host: the emulator receives the
//! `Authorization` header on every request, and the plugin's linear memory never holds it.

use runner::config::{Pipeline, SecretResolver};
use runner::pipeline::stages::{self, Purpose, StageInstance};
use runner::plugins::Builtins;
use serde_json::json;

use crate::common;
use crate::common::es_emulator::{Emulator, EmulatorOptions};

const SECRET: &str = "U0VDUkVULUFQSS1LRVktbmV2ZXItaW4tdGhlLXBsdWdpbg==";

#[tokio::test]
async fn the_api_key_never_enters_the_plugin_memory() {
    let es = Emulator::start(EmulatorOptions {
        authorization: Some(format!("ApiKey {SECRET}")),
        ..Default::default()
    });
    es.ok(
        "PUT",
        "/notes",
        Some(json!({"mappings": {"properties": {"text": {"type": "text"}}}})),
    );
    es.bulk("{\"index\":{\"_index\":\"notes\",\"_id\":\"n1\"}}\n{\"text\":\"DOCUMENT-MARKER-SEEN-BY-THE-PLUGIN\"}\n");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("es.key"), SECRET).unwrap();
    let text = format!(
        "[source]\ntype = \"elasticsearch\"\nurl = \"{}\"\napi_key = \"${{file:es.key}}\"\n\n[sink]\ntype = \"local\"\npath = \"repo\"\n",
        es.url()
    );
    let pipeline = Pipeline::parse(&text, dir.path().join("pipeline.toml"), &Builtins).unwrap();
    let engine = common::debug_engine();
    let stage = &pipeline.source;
    let plugin = stages::load_plugin(&engine, stage).unwrap();
    let grants = stages::implied_grants(stage, &pipeline, Purpose::Backup, None).unwrap();
    let StageInstance::Source(mut source) = stages::start(
        &engine,
        stage,
        &plugin,
        grants,
        &SecretResolver::from_process_env(),
    )
    .await
    .unwrap() else {
        panic!("not a source")
    };

    let session = source.begin_backup(None).await.unwrap();
    let artifacts = source.artifacts(&session).await.unwrap();
    assert_eq!(
        artifacts
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        ["notes/meta", "notes/documents"]
    );
    let mut documents = Vec::new();
    for artifact in &artifacts {
        let reader = source.open(&session, &artifact.name).await.unwrap();
        while let Some(chunk) = source.read(&reader, 1 << 20).await.unwrap() {
            documents.extend(chunk);
        }
        source.finish_read(reader).await.unwrap();
    }
    source.close_backup(session).await.unwrap();
    assert!(String::from_utf8_lossy(&documents).contains("DOCUMENT-MARKER"));

    let authorizations = es.authorizations();
    assert!(!authorizations.is_empty() && authorizations.len() == es.requests().len());
    assert!(
        authorizations
            .iter()
            .all(|a| *a == format!("ApiKey {SECRET}"))
    );

    let memories = source.linear_memories();
    assert!(
        !memories.is_empty(),
        "the debug engine must expose the plugin's linear memory"
    );
    let contains = |needle: &[u8]| common::memory_contains(&memories, needle);
    // The scan is real: a document the plugin read is in its memory…
    assert!(contains(b"DOCUMENT-MARKER-SEEN-BY-THE-PLUGIN"));
    // …and the reference it was configured with (kept to name the credentials in its
    // log), but never the key, nor half of it.
    assert!(contains(b"${file:es.key}"));
    assert!(
        !contains(SECRET.as_bytes()),
        "the API key was found in the plugin's linear memory"
    );
    assert!(!contains(&SECRET.as_bytes()[..24]) && !contains(&SECRET.as_bytes()[24..]));
}
