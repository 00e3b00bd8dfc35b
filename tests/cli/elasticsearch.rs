//! The elasticsearch source end to end through the real binary, against the in-process
//! emulator: backup → delete → restore with equal documents, mappings, settings, aliases
//! and counts; point-in-time isolation; merge vs replace; --only; rename; 429 retries;
//! mapping conflicts reported by `_id`; credentials injected by the host.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::common::Prng;
use crate::common::es_emulator::{Emulator, EmulatorOptions};
use crate::{stderr, stdout};

const API_KEY: &str = "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==";

/// A directory with a pipeline backing up the emulator into `repo`.
struct Setup {
    dir: tempfile::TempDir,
    emulator: Emulator,
}

impl Setup {
    fn new(options: EmulatorOptions, extra: &str) -> Setup {
        let setup = Setup {
            dir: tempfile::tempdir().unwrap(),
            emulator: Emulator::start(options),
        };
        setup.write_pipeline(extra);
        setup
    }

    fn write_pipeline(&self, extra: &str) {
        let text = format!(
            "[source]\ntype = \"elasticsearch\"\nurl = \"{}\"\n{extra}\n\n[[transform]]\ntype = \"zstd\"\nlevel = 3\n\n[sink]\ntype = \"local\"\npath = \"repo\"\n",
            self.emulator.url()
        );
        std::fs::write(self.dir.path().join("pipeline.toml"), text).unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runner"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("RUNNER_CACHE_DIR", crate::common::cache_dir())
            .env("ES_TEST_API_KEY", API_KEY)
            .env_remove("RUNNER_PASSPHRASE");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "runner {args:?} failed:\n{}\n{}",
            stdout(&output),
            stderr(&output)
        );
        stdout(&output)
    }

    fn backup(&self) -> String {
        self.ok(&["run", "pipeline.toml"])
    }

    fn restore(&self, extra: &[&str]) -> String {
        let mut args = vec!["restore", "pipeline.toml"];
        args.extend_from_slice(extra);
        self.ok(&args)
    }
}

/// Everything that must survive a round trip, per index (looked up by name or alias).
#[derive(Debug, PartialEq)]
struct IndexState {
    documents: BTreeMap<String, (Value, Option<String>)>,
    mappings: Value,
    settings: Value,
    aliases: Value,
    count: u64,
}

fn index_state(es: &Emulator, name: &str) -> IndexState {
    let first = |v: Value| v.as_object().unwrap().values().next().cloned().unwrap();
    let mut settings = first(es.ok("GET", &format!("/{name}/_settings"), None))["settings"].clone();
    for assigned in ["uuid", "creation_date", "provided_name", "version"] {
        settings["index"].as_object_mut().unwrap().remove(assigned);
    }
    let mut aliases = first(es.ok("GET", &format!("/{name}/_alias"), None))["aliases"].clone();
    // After a replace the index's own name is an alias of the new index.
    aliases.as_object_mut().unwrap().remove(name);
    es.ok("POST", &format!("/{name}/_refresh"), None);
    IndexState {
        documents: es.documents(name),
        mappings: first(es.ok("GET", &format!("/{name}/_mapping"), None))["mappings"].clone(),
        settings,
        aliases,
        count: es.ok("GET", &format!("/{name}/_count"), None)["count"]
            .as_u64()
            .unwrap(),
    }
}

fn bulk_index(
    es: &Emulator,
    index: &str,
    docs: impl IntoIterator<Item = (String, Value, Option<String>)>,
) {
    let mut body = String::new();
    let mut n = 0;
    for (id, source, routing) in docs {
        let mut action = json!({"index": {"_index": index, "_id": id}});
        if let Some(r) = routing {
            action["index"]["routing"] = json!(r);
        }
        body.push_str(&format!("{action}\n{source}\n"));
        n += 1;
        if n % 2000 == 0 {
            assert_eq!(es.bulk(&body)["errors"], json!(false));
            body.clear();
        }
    }
    if !body.is_empty() {
        let answer = es.bulk(&body);
        assert_eq!(answer["errors"], json!(false), "{answer}");
    }
}

const LEVELS: [&str; 3] = ["INFO", "WARN", "ERROR"];
const WORDS: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
];

fn words(rng: &mut Prng, n: usize) -> String {
    (0..n)
        .map(|_| WORDS[rng.below(WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

fn date(rng: &mut Prng) -> String {
    format!(
        "2024-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        1 + rng.below(12),
        1 + rng.below(28),
        rng.below(24),
        rng.below(60),
        rng.below(60)
    )
}

/// Six indices with varied mappings (nested, multi-fields, dates, geo_point, ip, strict and
/// dynamic), aliases and analysis settings, `scale` × 3,333 documents in all, and one
/// system index that a default backup leaves out.
fn seed(es: &Emulator, scale: usize) {
    es.ok("PUT", "/products", Some(json!({
        "settings": {"number_of_shards": 1, "number_of_replicas": 0,
            "analysis": {"analyzer": {"folded": {"type": "custom", "tokenizer": "standard", "filter": ["lowercase", "asciifolding"]}}}},
        "mappings": {"properties": {
            "name": {"type": "text", "analyzer": "folded", "fields": {"raw": {"type": "keyword"}}},
            "price": {"type": "double"},
            "tags": {"type": "keyword"},
            "created": {"type": "date"},
            "variants": {"type": "nested", "properties": {"sku": {"type": "keyword"}, "stock": {"type": "integer"}}}
        }},
        "aliases": {"catalog": {}, "catalog-cheap": {"filter": {"term": {"tags": "cheap"}}}}
    })));
    es.ok("PUT", "/places", Some(json!({
        "settings": {"index": {"number_of_shards": "2", "refresh_interval": "5s"}},
        "mappings": {"properties": {"name": {"type": "keyword"}, "location": {"type": "geo_point"}, "visited": {"type": "boolean"}}}
    })));
    es.ok("PUT", "/users", Some(json!({
        "mappings": {"dynamic": "strict", "properties": {
            "login": {"type": "keyword"}, "last_ip": {"type": "ip"}, "active": {"type": "boolean"},
            "address": {"properties": {"city": {"type": "keyword"}, "zip": {"type": "keyword"}}}
        }}
    })));
    es.ok("PUT", "/metrics", Some(json!({
        "mappings": {"properties": {"at": {"type": "date", "format": "epoch_millis"}, "value": {"type": "double"}, "host": {"type": "keyword"}}}
    })));
    es.ok(
        "PUT",
        "/.internal-state",
        Some(json!({"settings": {"index.hidden": true}})),
    );
    bulk_index(
        es,
        ".internal-state",
        [("s1".to_string(), json!({"x": 1}), None)],
    );

    let mut rng = Prng::new(9);
    let n = |share: usize| share * scale;
    bulk_index(es, "products", (0..n(600)).map(|i| {
        let variants: Vec<Value> = (0..1 + i % 3).map(|v| json!({"sku": format!("P{i}-{v}"), "stock": (i * 7 + v) % 50})).collect();
        let tags = if i % 5 == 0 { json!(["cheap", "new"]) } else { json!(["regular"]) };
        (format!("p-{i}"), json!({"name": format!("Prodüct {}", words(&mut rng, 3)), "price": (i % 1000) as f64 / 4.0,
            "tags": tags, "created": date(&mut rng), "variants": variants}), None)
    }));
    bulk_index(
        es,
        "places",
        (0..n(500)).map(|i| {
            let lat = (rng.below(18000) as f64 / 100.0) - 90.0;
            let lon = (rng.below(36000) as f64 / 100.0) - 180.0;
            let location = if i % 2 == 0 {
                json!({"lat": lat, "lon": lon})
            } else {
                json!(format!("{lat},{lon}"))
            };
            (
                format!("place-{i}"),
                json!({"name": words(&mut rng, 2), "location": location, "visited": i % 3 == 0}),
                None,
            )
        }),
    );
    for month in ["01", "02"] {
        let index = format!("logs-2024.{month}");
        bulk_index(es, &index, (0..n(700)).map(|i| {
            let routing = (i % 4 == 0).then(|| format!("tenant-{}", i % 3));
            (format!("{month}-{i}"), json!({"@timestamp": date(&mut rng), "level": LEVELS[i % 3],
                "message": words(&mut rng, 8), "duration_ms": rng.below(5000), "ratio": rng.below(100) as f64 / 7.0,
                "http": {"status": 200 + (i % 4) * 100, "path": format!("/api/{}", words(&mut rng, 1))}}), routing)
        }));
    }
    bulk_index(es, "users", (0..n(333)).map(|i| {
        (format!("u{i}"), json!({"login": format!("user{i}"), "last_ip": format!("10.{}.{}.{}", i % 250, i % 7, i % 200),
            "active": i % 2 == 0, "address": {"city": WORDS[i % 10], "zip": format!("{:05}", i)}}), None)
    }));
    bulk_index(es, "metrics", (0..n(500)).map(|i| {
        (format!("m{i}"), json!({"at": 1_700_000_000_000u64 + i as u64 * 1000, "value": rng.below(1_000_000) as f64 / 1000.0,
            "host": format!("host-{}", i % 17)}), None)
    }));
}

const INDICES: &[&str] = &[
    "logs-2024.01",
    "logs-2024.02",
    "metrics",
    "places",
    "products",
    "users",
];

fn states(es: &Emulator) -> BTreeMap<&'static str, IndexState> {
    INDICES
        .iter()
        .map(|name| (*name, index_state(es, name)))
        .collect()
}

/// The number after `key=` on the report line of `artifact`.
fn reported(out: &str, artifact: &str, key: &str) -> Option<u64> {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{artifact}:")))?;
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(&format!("{key}="))?.parse().ok())
}

#[test]
fn backup_delete_restore_round_trip_with_host_injected_api_key() {
    let setup = Setup::new(
        EmulatorOptions {
            authorization: Some(format!("ApiKey {API_KEY}")),
            ..Default::default()
        },
        "api_key = \"${env:ES_TEST_API_KEY}\"\npage_size = 700",
    );
    let es = &setup.emulator;
    seed(es, 6);
    let before = states(es);
    assert_eq!(
        before.values().map(|s| s.count).sum::<u64>(),
        3600 + 3000 + 8400 + 1998 + 3000
    );

    // A writer racing the backup: indexed (and refreshed) right after the first point in time
    // opened, into the index that point in time covers. It must not be in the snapshot.
    es.index_after_next_view(
        "{\"index\":{\"_index\":\"logs-2024.01\",\"_id\":\"late-1\"}}\n{\"message\":\"after the backup began\"}\n",
    );
    setup.backup();
    assert_eq!(
        es.open_views(),
        0,
        "every point in time is closed after the backup"
    );
    assert!(
        es.requests().iter().any(|r| r == "POST /logs-2024.01/_pit"),
        "read at a point in time"
    );
    assert!(es.documents("logs-2024.01").contains_key("late-1"));

    // The host sent the key with every request; the plugin's config held only the reference.
    let auths = es.authorizations();
    assert_eq!(auths.len(), es.requests().len());
    assert!(auths.iter().all(|a| *a == format!("ApiKey {API_KEY}")));

    for name in INDICES {
        es.ok("DELETE", &format!("/{name}"), None);
    }
    let out = setup.restore(&["--mode", "replace"]);
    for name in INDICES {
        let expected = before[name].count;
        assert_eq!(
            reported(&out, name, "restored"),
            Some(expected),
            "{name}: {out}"
        );
        assert_eq!(reported(&out, name, "failed"), Some(0), "{out}");
        assert_eq!(reported(&out, name, "count"), Some(expected), "{out}");
    }
    let after = states(es);
    for name in INDICES {
        let (b, a) = (&before[name], &after[name]);
        assert_eq!(a.count, b.count, "{name}");
        assert_eq!(a.documents.len(), b.documents.len(), "{name}");
        assert!(a.documents == b.documents, "{name}: documents differ");
        assert_eq!(a.mappings, b.mappings, "{name}");
        assert_eq!(a.settings, b.settings, "{name}");
        assert_eq!(a.aliases, b.aliases, "{name}");
    }
    assert!(
        !es.requests().iter().any(|r| r.contains(".internal-state")),
        "system indices are not backed up"
    );

    // Nothing of the secret is stored: the snapshot records the reference.
    let mut stored = Vec::new();
    collect_files(&setup.dir.path().join("repo"), &mut stored);
    for file in stored {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes
                .windows(API_KEY.len())
                .any(|w| w == API_KEY.as_bytes()),
            "{} holds the key",
            file.display()
        );
    }

    // A wrong key: refused by the cluster, reported as such, the key never printed.
    let output = setup
        .command(&["run", "pipeline.toml"])
        .env("ES_TEST_API_KEY", "d3Jvbmcta2V5")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("401") && err.contains("security_exception"),
        "{err}"
    );
    assert!(!err.contains("d3Jvbmcta2V5"), "{err}");
}

fn collect_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// A small index of `n` documents with a keyword-mapped `code`.
fn small(es: &Emulator, index: &str, n: usize) {
    es.ok(
        "PUT",
        &format!("/{index}"),
        Some(
            json!({"mappings": {"properties": {"code": {"type": "keyword"}, "n": {"type": "long"}}},
        "aliases": {format!("{index}-read"): {}}}),
        ),
    );
    bulk_index(
        es,
        index,
        (0..n).map(|i| {
            (
                format!("d{i}"),
                json!({"code": format!("c{i}"), "n": i}),
                None,
            )
        }),
    );
}

#[test]
fn merge_keeps_later_documents_replace_removes_them() {
    let setup = Setup::new(EmulatorOptions::default(), "indices = [\"inv*\"]");
    let es = &setup.emulator;
    small(es, "inventory", 1200);
    small(es, "other", 10);
    setup.backup();

    es.bulk("{\"delete\":{\"_index\":\"inventory\",\"_id\":\"d7\"}}\n{\"index\":{\"_index\":\"inventory\",\"_id\":\"later\"}}\n{\"code\":\"new\",\"n\":-1}\n");
    let docs = es.documents("inventory");
    assert!(!docs.contains_key("d7") && docs.contains_key("later"));

    let out = setup.restore(&["--mode", "merge"]);
    assert_eq!(reported(&out, "inventory", "restored"), Some(1200), "{out}");
    let docs = es.documents("inventory");
    assert!(docs.contains_key("d7"), "merge restores a deleted document");
    assert!(
        docs.contains_key("later"),
        "merge keeps a document the snapshot does not have"
    );
    assert_eq!(docs.len(), 1201);
    assert!(!es.index_names().contains(&"other".to_string()) || es.documents("other").len() == 10);

    let out = setup.restore(&["--mode", "replace"]);
    assert_eq!(reported(&out, "inventory", "count"), Some(1200), "{out}");
    let docs = es.documents("inventory");
    assert!(
        !docs.contains_key("later"),
        "replace removes what the snapshot does not have"
    );
    assert_eq!(docs.len(), 1200);
    // The name now points at the loaded index; its own alias came back with it.
    let aliases = es.ok("GET", "/inventory/_alias", None);
    let (concrete, entry) = aliases.as_object().unwrap().iter().next().unwrap();
    assert!(concrete.starts_with("inventory-restore-"), "{aliases}");
    assert!(
        entry["aliases"].get("inventory-read").is_some(),
        "{aliases}"
    );
    // A second replace swaps again, through the alias.
    setup.restore(&["--mode", "replace"]);
    assert_eq!(
        es.index_names()
            .iter()
            .filter(|n| n.starts_with("inventory"))
            .count(),
        1,
        "{:?}",
        es.index_names()
    );
}

#[test]
fn only_one_index_renamed_with_a_prefix() {
    let setup = Setup::new(EmulatorOptions::default(), "");
    let es = &setup.emulator;
    small(es, "alpha", 300);
    small(es, "beta", 200);
    setup.backup();
    let out = setup.restore(&["--only", "beta/*", "--target", "copy-"]);
    assert_eq!(reported(&out, "beta", "restored"), Some(200), "{out}");
    assert!(!out.contains("alpha:"), "{out}");
    assert_eq!(es.index_names(), ["alpha", "beta", "copy-beta"]);
    assert_eq!(es.documents("copy-beta"), es.documents("beta"));
    assert_eq!(
        index_state(es, "copy-beta").mappings,
        index_state(es, "beta").mappings
    );
    assert!(
        es.ok("GET", "/copy-beta/_alias", None)["copy-beta"]["aliases"]
            .get("copy-beta-read")
            .is_some()
    );

    // The same through the pipeline's target_prefix option.
    setup.write_pipeline("target_prefix = \"second-\"");
    setup.backup();
    setup.restore(&["--only", "alpha/*"]);
    assert_eq!(es.documents("second-alpha").len(), 300);
}

#[test]
fn refused_bulk_requests_and_items_are_retried_to_completion() {
    let setup = Setup::new(EmulatorOptions::default(), "batch_docs = 100");
    let es = &setup.emulator;
    small(es, "busy", 1000);
    // Lines longer than the host's 1 MiB chunks and the 5 MiB bulk byte cap.
    let big = "x".repeat(3 << 20);
    bulk_index(
        es,
        "busy",
        [
            ("big-1".to_string(), json!({"code": big, "n": 1}), None),
            ("big-2".to_string(), json!({"code": big, "n": 2}), None),
        ],
    );
    setup.backup();
    es.ok("DELETE", "/busy", None);
    es.reject_bulk_requests(3);
    es.reject_bulk_items(25);
    let out = setup.restore(&["--mode", "replace"]);
    assert_eq!(es.rejections(), 28);
    assert_eq!(reported(&out, "busy", "restored"), Some(1002), "{out}");
    assert_eq!(reported(&out, "busy", "retried"), Some(25), "{out}");
    let docs = es.documents("busy");
    assert_eq!(docs.len(), 1002);
    assert_eq!(docs["big-2"].0["code"].as_str().unwrap().len(), 3 << 20);
}

#[test]
fn mapping_conflicts_are_reported_by_id_and_fail_the_restore() {
    let setup = Setup::new(EmulatorOptions::default(), "");
    let es = &setup.emulator;
    es.ok("PUT", "/codes", Some(json!({"mappings": {"properties": {"code": {"type": "keyword"}, "n": {"type": "long"}}}})));
    let mut docs: Vec<_> = (0..50)
        .map(|i| {
            (
                format!("d{i}"),
                json!({"code": i.to_string(), "n": i}),
                None,
            )
        })
        .collect();
    docs.push((
        "bad-1".to_string(),
        json!({"code": "not-a-number", "n": 1}),
        None,
    ));
    bulk_index(es, "codes", docs);
    setup.backup();

    // The index was recreated with `code` as a number: one document cannot be indexed.
    es.ok("DELETE", "/codes", None);
    es.ok(
        "PUT",
        "/codes",
        Some(
            json!({"mappings": {"properties": {"code": {"type": "long"}, "n": {"type": "long"}}}}),
        ),
    );
    let output = setup.run(&["restore", "pipeline.toml", "--mode", "merge"]);
    assert!(!output.status.success(), "{}", stdout(&output));
    let err = stderr(&output);
    assert!(err.contains("1 document(s) were refused"), "{err}");
    assert!(
        err.contains("_id \"bad-1\"") && err.contains("document_parsing_exception"),
        "{err}"
    );
    assert!(
        err.contains("failed to parse field [code] of type [long]"),
        "{err}"
    );
    assert!(err.contains("exported 51, restored 50, failed 1"), "{err}");
    assert_eq!(es.documents("codes").len(), 50);

    // Replace with every item refused (beyond the retries): the old index stays as it was.
    let before = es.documents("codes");
    setup.write_pipeline("max_retries = 1");
    setup.backup();
    es.reject_bulk_items(10_000);
    let output = setup.run(&["restore", "pipeline.toml", "--mode", "replace"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("the existing indices were left as they were"),
        "{}",
        stderr(&output)
    );
    assert_eq!(es.documents("codes"), before);
    assert_eq!(es.index_names(), ["codes"], "the new index was removed");
}

#[test]
fn clusters_before_point_in_time_are_read_by_scroll() {
    let setup = Setup::new(
        EmulatorOptions {
            version: "7.9.3".into(),
            ..Default::default()
        },
        "page_size = 64",
    );
    let es = &setup.emulator;
    small(es, "legacy", 500);
    es.index_after_next_view(
        "{\"index\":{\"_index\":\"legacy\",\"_id\":\"late\"}}\n{\"code\":\"x\",\"n\":1}\n",
    );
    setup.backup();
    let requests = es.requests();
    assert!(
        requests.iter().any(|r| r == "POST /_search/scroll"),
        "{requests:?}"
    );
    assert!(!requests.iter().any(|r| r.contains("_pit")), "{requests:?}");
    assert_eq!(es.open_views(), 0, "scrolls are cleared");
    es.ok("DELETE", "/legacy", None);
    let out = setup.restore(&[]);
    assert_eq!(reported(&out, "legacy", "restored"), Some(500), "{out}");
    assert!(!es.documents("legacy").contains_key("late"));
}

#[test]
fn opensearch_before_point_in_time_with_basic_auth_is_read_by_scroll() {
    let basic = "Basic ZWxhc3RpYzpjaGFuZ2VtZQ=="; // elastic:changeme
    let setup = Setup::new(
        EmulatorOptions {
            version: "2.3.0".into(),
            opensearch: true,
            authorization: Some(basic.into()),
            ..Default::default()
        },
        "username = \"${env:ES_TEST_USER}\"\npassword = \"${file:es.password}\"",
    );
    std::fs::write(setup.dir.path().join("es.password"), "changeme\n").unwrap();
    let es = &setup.emulator;
    small(es, "search", 400);
    let output = setup
        .command(&["run", "pipeline.toml"])
        .env("ES_TEST_USER", "elastic")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(es.requests().iter().any(|r| r == "POST /_search/scroll"));
    assert!(es.authorizations().iter().all(|a| a == basic) && !es.authorizations().is_empty());
    es.ok("DELETE", "/search", None);
    let output = setup
        .command(&["restore", "pipeline.toml", "--mode", "replace"])
        .env("ES_TEST_USER", "elastic")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        reported(&stdout(&output), "search", "count"),
        Some(400),
        "{}",
        stdout(&output)
    );
}

#[test]
fn opensearch_is_read_at_its_own_point_in_time_and_restored() {
    // 2.x has no `_shard_doc` (the emulator refuses it, as OpenSearch does): pages go in
    // `_id` order; 3.3 has it.
    for version in ["2.11.0", "3.3.0"] {
        let setup = Setup::new(
            EmulatorOptions {
                version: version.into(),
                opensearch: true,
                ..Default::default()
            },
            "page_size = 37",
        );
        let es = &setup.emulator;
        small(es, "catalog", 300);
        small(es, "orders", 120);
        // Indexed right after the first point in time opened: not in the backup.
        es.index_after_next_view(
            "{\"index\":{\"_index\":\"catalog\",\"_id\":\"late\"}}\n{\"code\":\"x\",\"n\":1}\n",
        );
        let before = es.documents("orders");
        let out = setup.backup();
        let requests = es.requests();
        for path in [
            "/catalog/_search/point_in_time",
            "/orders/_search/point_in_time",
        ] {
            assert!(
                requests.iter().any(|r| r == &format!("POST {path}")),
                "{version}: {requests:?}"
            );
        }
        assert_eq!(
            requests
                .iter()
                .filter(|r| *r == "DELETE /_search/point_in_time")
                .count(),
            2,
            "{version}: {requests:?}"
        );
        assert!(
            !requests
                .iter()
                .any(|r| r.contains("scroll") || r.contains("_pit")),
            "{version}: neither scroll nor Elasticsearch's _pit: {requests:?}"
        );
        assert_eq!(es.open_views(), 0, "every point in time deleted");
        assert!(out.contains("committed"), "{out}");

        for index in ["catalog", "orders"] {
            es.ok("DELETE", &format!("/{index}"), None);
        }
        let out = setup.restore(&["--mode", "replace"]);
        assert_eq!(reported(&out, "catalog", "restored"), Some(300), "{out}");
        assert_eq!(reported(&out, "orders", "restored"), Some(120), "{out}");
        let catalog = es.documents("catalog");
        assert_eq!(catalog.len(), 300, "{version}");
        assert!(!catalog.contains_key("late"), "{version}");
        assert_eq!(es.documents("orders"), before, "{version}");
    }
}

/// A CA and a server certificate for 127.0.0.1 made with the openssl command line:
/// (CA certificate PEM, server identity).
fn private_ca(dir: &Path) -> (String, crate::common::es_emulator::TlsIdentity) {
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            stderr(&output)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Runner Test Private CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName = IP:127.0.0.1, DNS:localhost\nbasicConstraints = CA:FALSE\nkeyUsage = digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    (
        read("ca.pem"),
        crate::common::es_emulator::TlsIdentity {
            cert_pem: read("server.pem"),
            key_pem: read("server.key"),
        },
    )
}

#[test]
fn https_with_a_private_ca_needs_the_ca_bundle() {
    let keys = tempfile::tempdir().unwrap();
    let (ca_pem, identity) = private_ca(keys.path());
    let setup = Setup::new(
        EmulatorOptions {
            authorization: Some(format!("ApiKey {API_KEY}")),
            tls: Some(identity),
            ..Default::default()
        },
        "api_key = \"${env:ES_TEST_API_KEY}\"",
    );
    let es = &setup.emulator;
    assert!(es.url().starts_with("https://127.0.0.1:"));
    small(es, "secure", 250);

    // Without the bundle: the web roots do not vouch for the private CA.
    let output = setup.run(&["run", "pipeline.toml"]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("TLS certificate error"), "{err}");
    assert!(err.contains("ca_file"), "{err}");
    assert!(
        err.contains("UnknownIssuer"),
        "rustls' reason is logged: {err}"
    );
    assert!(!err.contains(API_KEY), "{err}");
    assert!(
        es.requests().is_empty(),
        "nothing reached the server: {:?}",
        es.requests()
    );
    assert!(
        !setup.dir.path().join("repo/snapshots").exists()
            || std::fs::read_dir(setup.dir.path().join("repo/snapshots"))
                .unwrap()
                .next()
                .is_none()
    );

    // A bundle that is not a certificate is refused before anything is sent.
    std::fs::write(setup.dir.path().join("bad.pem"), "not a certificate\n").unwrap();
    setup.write_pipeline("api_key = \"${env:ES_TEST_API_KEY}\"\nca_file = \"bad.pem\"");
    let output = setup.run(&["run", "pipeline.toml"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("no certificate in it"),
        "{}",
        stderr(&output)
    );

    // With it: backup, restore and validate all go through the host's sender.
    std::fs::write(setup.dir.path().join("es-ca.pem"), &ca_pem).unwrap();
    setup.write_pipeline("api_key = \"${env:ES_TEST_API_KEY}\"\nca_file = \"es-ca.pem\"");
    let out = setup.ok(&["validate", "pipeline.toml"]);
    assert!(
        out.contains(&format!(
            "{} trusts only the 1 CA certificate(s) of",
            es.url()
        )),
        "{out}"
    );
    let before = es.documents("secure");
    setup.backup();
    assert!(
        es.authorizations()
            .iter()
            .all(|a| a == &format!("ApiKey {API_KEY}"))
    );
    es.ok("DELETE", "/secure", None);
    let out = setup.restore(&["--mode", "replace"]);
    assert_eq!(reported(&out, "secure", "restored"), Some(250), "{out}");
    assert_eq!(es.documents("secure"), before);
}

#[test]
fn validate_shows_the_implied_grant_and_bad_options_point_at_the_file() {
    let setup = Setup::new(
        EmulatorOptions::default(),
        "username = \"${env:ES_TEST_API_KEY}\"",
    );
    let output = setup.run(&["validate", "pipeline.toml"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("needs both `username` and `password`"),
        "{}",
        stderr(&output)
    );

    setup.write_pipeline("page_size = 0");
    let output = setup.run(&["validate", "pipeline.toml"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("pipeline.toml:4:"),
        "{}",
        stderr(&output)
    );

    setup.write_pipeline("");
    let out = setup.ok(&["validate", "pipeline.toml"]);
    assert!(
        out.contains(&format!("http {}", setup.emulator.url())),
        "{out}"
    );
    setup.write_pipeline("api_key = \"${env:ES_TEST_API_KEY}\"");
    let out = setup.ok(&["validate", "pipeline.toml"]);
    assert!(
        out.contains("Authorization header from the host")
            || out.contains("authorization header from the host"),
        "{out}"
    );
    assert!(!out.contains(API_KEY), "{out}");
}

/// Not a test: `benches/elasticsearch.sh` runs it with `--ignored --nocapture`.
/// Prints documents per second for backup and restore through the binary, the emulator's
/// own cost for the same work in-process, and stored bytes per document after zstd.
#[test]
#[ignore]
fn bench_export_and_restore() {
    let scale: usize = std::env::var("ES_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let setup = Setup::new(EmulatorOptions::default(), "page_size = 1000");
    let es = &setup.emulator;
    seed(es, scale);
    let total: u64 = INDICES.iter().map(|n| es.documents(n).len() as u64).sum();
    es.take_busy_seconds();

    let started = std::time::Instant::now();
    setup.backup();
    let export = started.elapsed().as_secs_f64();
    let emulator_export = es.take_busy_seconds();
    let mut files = Vec::new();
    collect_files(&setup.dir.path().join("repo").join("data"), &mut files);
    let stored: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();

    for name in INDICES {
        es.ok("DELETE", &format!("/{name}"), None);
    }
    let started = std::time::Instant::now();
    setup.restore(&["--mode", "replace"]);
    let restore = started.elapsed().as_secs_f64();
    let emulator_restore = es.take_busy_seconds();
    println!("elasticsearch bench: {total} documents in 6 indices");
    // The emulator's share is the time it spent answering; the rest is runner's (startup,
    // plugin, HTTP, transforms, repository).
    for (what, seconds, emulator) in [
        ("export  (runner run)    ", export, emulator_export),
        ("restore (runner restore)", restore, emulator_restore),
    ] {
        println!(
            "  {what}: {:>8.0} docs/s wall ({seconds:.2} s, of which the emulator {emulator:.2} s; without it {:.0} docs/s)",
            total as f64 / seconds,
            total as f64 / (seconds - emulator)
        );
    }
    println!(
        "  stored after zstd-3:      {:>9.1} bytes/doc ({stored} bytes)",
        stored as f64 / total as f64
    );
}
