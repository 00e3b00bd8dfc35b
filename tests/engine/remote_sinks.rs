//! The remote sinks' credentials stay in the host: the s3 sink plugin stores and reads objects
//! through the host's storage service, and its memory never holds the secret key.

use runner::config::{Pipeline, SecretResolver};
use runner::pipeline::Context;
use runner::plugins::Builtins;

use crate::common::{self, s3_server};

#[tokio::test(flavor = "multi_thread")]
async fn the_s3_secret_never_enters_the_sink_plugin_memory() {
    let root = tempfile::tempdir().unwrap();
    let server = s3_server::S3Server::start(root.path());
    server.create_bucket("vault");
    let text = format!(
        "[source]\ntype = \"files\"\npaths = [\".\"]\n\n[sink]\ntype = \"s3\"\nbucket = \"vault\"\nendpoint = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"${{env:S3_SECRET}}\"\n",
        server.endpoint(),
        s3_server::ACCESS_KEY
    );
    let dir = tempfile::tempdir().unwrap();
    let pipeline = Pipeline::parse(&text, dir.path().join("p.toml"), &Builtins).unwrap();
    let mut context = Context::new(common::debug_engine(), pipeline);
    context.secrets = SecretResolver::with_env([("S3_SECRET", s3_server::SECRET_KEY)]);

    let spec = context.sink_spec().unwrap();
    assert!(
        !spec.config_json.contains(s3_server::SECRET_KEY),
        "the plugin's configuration holds the secret: {}",
        spec.config_json
    );
    let mut sink = context.start_sink(&spec).await.unwrap();
    let marker = b"OBJECT-MARKER-SEEN-BY-THE-SINK-PLUGIN".repeat(1000);
    runner::repository::put_bytes(&mut sink, "a/b", &marker, true)
        .await
        .unwrap();
    let back = runner::repository::get_bytes(&mut sink, "a/b")
        .await
        .unwrap();
    assert_eq!(back.as_deref(), Some(&marker[..]));
    assert_eq!(
        server.objects("vault"),
        vec![("a/b".to_string(), marker.len() as u64)]
    );

    let memories = sink.linear_memories();
    let contains = |needle: &[u8]| common::memory_contains(&memories, needle);
    assert!(
        contains(&marker[..64]),
        "the scan must see data the plugin handled"
    );
    assert!(
        !contains(s3_server::SECRET_KEY.as_bytes()),
        "the S3 secret key was found in the sink plugin's memory"
    );
}
