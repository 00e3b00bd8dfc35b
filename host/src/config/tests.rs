//! Pipeline-level tests: a full valid file, every error at its exact line and column, secrets and redaction.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::*;

struct Catalog;

impl PluginCatalog for Catalog {
    fn builtin_names(&self, kind: StageKind) -> Vec<String> {
        let names: &[&str] = match kind {
            StageKind::Source => &["files", "postgres"],
            StageKind::Transform => &["zstd", "checksum", "aes-gcm"],
            StageKind::Sink => &["local", "s3"],
        };
        names.iter().map(|n| n.to_string()).collect()
    }
}

const FILE: &str = "/etc/runner/pipelines/daily.toml";
const MINIMAL: &str = "[source]\ntype = \"files\"\n\n[sink]\ntype = \"local\"\n";

fn parse(text: &str) -> Result<Pipeline, ConfigErrors> {
    Pipeline::parse(text, FILE, &Catalog)
}

/// The single error `text` produces, as (line, column, message).
fn error(text: &str) -> (usize, usize, String) {
    let errors = parse(text).expect_err("expected an error").into_vec();
    assert_eq!(errors.len(), 1, "expected one error, got: {errors:#?}");
    let e = &errors[0];
    (e.location.line, e.location.column, e.message.clone())
}

fn assert_error(text: &str, line: usize, column: usize, contains: &str) {
    let (l, c, message) = error(text);
    assert_eq!((l, c), (line, column), "{message}");
    assert!(
        message.contains(contains),
        "{message:?} does not contain {contains:?}"
    );
}

#[test]
fn full_example_validates() {
    let text = r#"[pipeline]
name = "daily"

[repository]
passphrase = "${env:RUNNER_PASSPHRASE}"

[source]
type = "files"
paths = ["../examples/data"]
follow = { symlinks = false, depth = 3 }
[source.grants]
dirs = [{ path = "/srv", access = "read" }, { path = "scratch", access = "read-write" }]
http = ["https://es.example.com:9200", "https://*.example.com"]
tcp = ["db.internal:5432"]
[source.limits]
memory = "512MiB"
call_timeout = "60s"
run_timeout = "6h"
max_chunk = 4194304

[[transform]]
type = "checksum"

[[transform]]
type = "zstd"
level = 3

[[transform]]
plugin = "../plugins/seal.wasm"
sha256 = "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789"

[sink]
type = "local"
path = "../backups"
"#;
    let p = parse(text).unwrap();
    assert_eq!(p.name, "daily");
    assert_eq!(p.path, Path::new(FILE));
    assert_eq!(p.base_dir(), Path::new("/etc/runner/pipelines"));
    let Some(KeySource::Passphrase(passphrase)) = &p.repository.key else {
        panic!("{:?}", p.repository)
    };
    assert_eq!(passphrase.as_written(), "${env:RUNNER_PASSPHRASE}");

    assert_eq!(p.source.plugin, PluginRef::Builtin("files".into()));
    assert_eq!(p.source.label(), "source (files)");
    assert_eq!((p.source.location.line, p.source.location.column), (7, 1));
    assert_eq!(
        p.source.options,
        json!({"paths": ["../examples/data"], "follow": {"symlinks": false, "depth": 3}})
            .as_object()
            .unwrap()
            .clone()
    );
    assert_eq!(
        p.source.grants.dirs,
        [
            DirGrant {
                path: "/srv".into(),
                access: DirAccess::Read
            },
            DirGrant {
                path: "/etc/runner/pipelines/scratch".into(),
                access: DirAccess::ReadWrite
            },
        ]
    );
    assert_eq!(
        p.source.grants.http[1],
        HttpGrant {
            scheme: "https".into(),
            host: "*.example.com".into(),
            port: None
        }
    );
    assert_eq!(
        p.source.grants.tcp,
        [TcpGrant {
            host: "db.internal".into(),
            port: 5432
        }]
    );
    assert_eq!(
        p.source.limits,
        Limits {
            memory: 512 << 20,
            call_timeout: Duration::from_secs(60),
            run_timeout: Duration::from_secs(6 * 3600),
            max_chunk: 4 << 20
        }
    );

    let labels: Vec<_> = p.stages().map(StageConfig::label).collect();
    assert_eq!(
        labels,
        [
            "source (files)",
            "transform #1 (checksum)",
            "transform #2 (zstd)",
            "transform #3 (seal.wasm)",
            "sink (local)"
        ]
    );
    assert_eq!(p.transforms[1].index, 1);
    assert_eq!(p.transforms[1].options.get("level"), Some(&json!(3)));
    assert_eq!(p.transforms[1].limits, Limits::default());
    assert_eq!(p.transforms[1].grants, Grants::default());
    let PluginRef::Path { path, sha256 } = &p.transforms[2].plugin else {
        panic!()
    };
    assert_eq!(
        path,
        Path::new("/etc/runner/pipelines/../plugins/seal.wasm")
    );
    assert_eq!(
        hex::encode(sha256.unwrap()),
        "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
    );
    assert_eq!(
        p.sink.options,
        json!({"path": "../backups"}).as_object().unwrap().clone()
    );
    assert_eq!((p.sink.location.line, p.sink.location.column), (32, 1));

    // Plugin errors name options by dotted path; each maps back to its key.
    let at = |dotted: &str| {
        let l = p.source.option_location(dotted);
        (l.line, l.column)
    };
    assert_eq!(at("paths"), (9, 1));
    assert_eq!(at("paths[0]"), (9, 10));
    assert_eq!(at("follow.depth"), (10, 30));
    assert_eq!(
        at("follow.depth.extra"),
        (10, 30),
        "unknown children fall back to the parent"
    );
    assert_eq!(
        at("nonexistent"),
        (7, 1),
        "unknown options fall back to the stage header"
    );
    assert_eq!(
        p.transforms[1].option_location("level").to_string(),
        format!("{FILE}:26:1")
    );
}

#[test]
fn defaults_without_optional_tables() {
    let p = Pipeline::parse(MINIMAL, "daily.toml", &Catalog).unwrap();
    assert_eq!(p.name, "daily", "the name defaults to the file stem");
    assert_eq!(p.repository.key, None);
    assert!(p.transforms.is_empty());
    assert_eq!(p.base_dir(), std::env::current_dir().unwrap());
    assert_eq!(p.stages().count(), 2);
}

#[test]
fn renders_location_message_and_caret() {
    let text = "[source]\ntype = \"files\"\n\n[[transform]]\ntype = \"zsdt\"\n\n[sink]\ntype = \"local\"\n";
    let err = parse(text).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{FILE}:5:9: unknown transform type \"zsdt\"; expected one of: aes-gcm, checksum, zstd (or `plugin = \"path/to/plugin.wasm\"`)\n  |\n5 | type = \"zsdt\"\n  |         ^^^^"
        )
    );
    assert_eq!(err.first().source_line(), Some("type = \"zsdt\""));
}

#[test]
fn toml_syntax_errors() {
    assert_error("[source]\ntype = \"files\n[sink]\n", 2, 14, "invalid TOML");
    assert_error(
        "[source]\ntype = \"files\"\ntype = \"x\"\n",
        3,
        1,
        "duplicate key",
    );
    assert_error("[source\ntype = \"files\"\n", 1, 8, "invalid TOML");
}

#[test]
fn wrong_value_types() {
    assert_error(
        "[source]\ntype = 3\n[sink]\ntype = \"local\"\n",
        2,
        8,
        "expected a string, found an integer",
    );
    assert_error(
        "source = \"files\"\n[sink]\ntype = \"local\"\n",
        1,
        11,
        "expected a table for [source], found a string",
    );
    assert_error(
        &format!("{MINIMAL}[source.limits]\nmemory = true\n"),
        7,
        10,
        "expected a size such as \"256MiB\", found a boolean",
    );
    assert_error(
        &format!("{MINIMAL}[source.grants]\nhttp = \"https://x.org\"\n"),
        7,
        9,
        "expected a list of \"scheme://host[:port]\" strings, found a string",
    );
    assert_error(
        &format!("{MINIMAL}[pipeline]\nname = [\"a\"]\n"),
        7,
        8,
        "expected a string, found an array",
    );
}

#[test]
fn missing_tables_and_plugin_names() {
    assert_error(
        "[source]\ntype = \"files\"\n",
        1,
        1,
        "missing [sink] table; every pipeline needs one sink, e.g. [sink] with type = \"local\"",
    );
    assert_error(
        "# nothing here yet\n[sink]\ntype = \"local\"\n",
        1,
        1,
        "missing [source] table",
    );
    assert_error(
        "[source]\ntype = \"files\"\n\n  [sink]\n  path = \"/b\"\n",
        4,
        3,
        "sink has no `type` or `plugin`; expected one of: local, s3",
    );
    assert_error(
        "[source]\ntype = \"ftp\"\n[sink]\ntype = \"local\"\n",
        2,
        9,
        "unknown source type \"ftp\"; expected one of: files, postgres",
    );
}

#[test]
fn unknown_keys_list_the_expected_ones() {
    assert_error(
        &format!("{MINIMAL}[sinks]\ntype = \"s3\"\n"),
        6,
        2,
        "unknown key \"sinks\" at the top level; expected one of: pipeline, repository, retention, hooks, monitor, notify, source, transform, sink",
    );
    assert_error(
        &format!("[pipeline]\nname = \"x\"\ncron = \"@daily\"\n{MINIMAL}"),
        3,
        1,
        "unknown key \"cron\" in [pipeline]; expected one of: name",
    );
    assert_error(
        &format!("[repository]\npassword = \"x\"\n{MINIMAL}"),
        2,
        1,
        "unknown key \"password\" in [repository]; expected one of: passphrase, key_file",
    );
    assert_error(
        &format!("{MINIMAL}[sink.grants]\nfiles = []\n"),
        7,
        1,
        "unknown key \"files\" in [sink.grants]; expected one of: dirs, http, tcp",
    );
    assert_error(
        &format!("{MINIMAL}[source.limits]\n  timeout = \"5s\"\n"),
        7,
        3,
        "unknown key \"timeout\" in [source.limits]; expected one of: memory, call_timeout, run_timeout, max_chunk",
    );
    assert_error(
        &format!("{MINIMAL}[source.grants]\ndirs = [{{ path = \"/a\", mode = \"read\" }}]\n"),
        7,
        24,
        "unknown key \"mode\"",
    );
}

#[test]
fn plugin_reference_errors() {
    let sink = "[sink]\ntype = \"local\"\n";
    assert_error(
        &format!("[source]\ntype = \"files\"\nplugin = \"my.wasm\"\n{sink}"),
        3,
        11,
        "source sets both `type` and `plugin`",
    );
    assert_error(
        &format!("[source]\nplugin = \"my.wasm\"\nsha256 = \"abc123\"\n{sink}"),
        3,
        11,
        "`sha256` must be 64 hexadecimal digits, found 6 digits",
    );
    assert_error(
        &format!(
            "[source]\nplugin = \"my.wasm\"\nsha256 = \"{}\"\n{sink}",
            "z".repeat(64)
        ),
        3,
        11,
        "must be 64 hexadecimal digits, found \"zzz",
    );
    assert_error(
        &format!(
            "[source]\ntype = \"files\"\nsha256 = \"{}\"\n{sink}",
            "0".repeat(64)
        ),
        3,
        11,
        "`sha256` pins a plugin file and needs `plugin = \"…\"`",
    );
    let p = parse(&format!("[source]\nplugin = \"plugins/my.wasm\"\n{sink}")).unwrap();
    assert_eq!(
        p.source.plugin,
        PluginRef::Path {
            path: "/etc/runner/pipelines/plugins/my.wasm".into(),
            sha256: None
        }
    );
    assert_eq!(p.source.label(), "source (my.wasm)");
}

#[test]
fn bad_sizes_and_durations() {
    let limits = |body: &str| format!("{MINIMAL}[sink.limits]\n{body}\n");
    assert_error(
        &limits("memory = \"512XB\""),
        7,
        11,
        "invalid limits.memory: unknown size unit \"XB\" in \"512XB\"",
    );
    assert_error(
        &limits("max_chunk = \"0MiB\""),
        7,
        14,
        "limits.max_chunk must be greater than zero",
    );
    assert_error(
        &limits("memory = -1"),
        7,
        10,
        "limits.memory must be a positive number of bytes",
    );
    assert_error(
        &limits("call_timeout = \"30\""),
        7,
        17,
        "invalid limits.call_timeout: duration \"30\" has a number without a unit",
    );
    assert_error(
        &limits("run_timeout = 3600"),
        7,
        15,
        "expected a duration such as \"30s\" or \"1h30m\", found an integer",
    );
    let p = parse(&limits("call_timeout = \"1h30m\"")).unwrap();
    assert_eq!(p.sink.limits.call_timeout, Duration::from_secs(5400));
    assert_eq!(p.sink.limits.memory, Limits::default().memory);
}

#[test]
fn bad_grant_forms() {
    let grants = |body: &str| format!("{MINIMAL}[source.grants]\n{body}\n");
    assert_error(
        &grants("http = [\"es.example.com:9200\"]"),
        7,
        10,
        "invalid http grant \"es.example.com:9200\": expected scheme://host[:port]",
    );
    assert_error(
        &grants("http = [\"https://a.org\", \"https://a.*.org\"]"),
        7,
        27,
        "'*' may only be the first label",
    );
    assert_error(
        &grants("tcp = [\"db.internal\"]"),
        7,
        9,
        "a tcp grant needs a port",
    );
    assert_error(
        &grants("dirs = [{ path = \"/srv\", access = \"rw\" }]"),
        7,
        36,
        "unknown access \"rw\"; expected \"read\" or \"read-write\"",
    );
    assert_error(
        &grants("dirs = [\"/srv\"]"),
        7,
        10,
        "expected a table like { path = \"/srv\", access = \"read\" }, found a string",
    );
    assert_error(
        &grants("dirs = [{ access = \"read\" }]"),
        7,
        9,
        "a dirs grant needs `path`",
    );
    let p = parse(&format!(
        "{MINIMAL}[[source.grants.dirs]]\npath = \"/srv\"\n"
    ))
    .unwrap();
    assert_eq!(
        p.source.grants.dirs,
        [DirGrant {
            path: "/srv".into(),
            access: DirAccess::Read
        }],
        "access defaults to read"
    );
}

#[test]
fn repository_key_errors() {
    assert_error(
        &format!("[repository]\npassphrase = \"${{env:P}}\"\nkey_file = \"k.key\"\n{MINIMAL}"),
        3,
        13,
        "`passphrase` and `key_file` are both set",
    );
    assert_error(
        &format!("[repository]\nkey_file = \"${{env:KEY}}\"\n{MINIMAL}"),
        2,
        13,
        "`key_file` is a plain path",
    );
    assert_error(
        &format!("[repository]\npassphrase = \"\"\n{MINIMAL}"),
        2,
        15,
        "empty passphrase",
    );
    let p = parse(&format!(
        "[repository]\nkey_file = \"keys/daily.key\"\n{MINIMAL}"
    ))
    .unwrap();
    assert_eq!(
        p.repository.key,
        Some(KeySource::KeyFile(
            "/etc/runner/pipelines/keys/daily.key".into()
        ))
    );
    let literal = parse(&format!(
        "[repository]\npassphrase = \"correct horse\"\n{MINIMAL}"
    ))
    .unwrap();
    assert!(
        !format!("{literal:?}").contains("correct horse"),
        "a literal passphrase never shows in Debug"
    );
}

#[test]
fn transform_written_as_single_table() {
    assert_error(
        &format!("{MINIMAL}\n[transform]\ntype = \"zstd\"\n"),
        7,
        1,
        "`transform` is a single table here, but transforms are a list: write `[[transform]]`",
    );
}

#[test]
fn malformed_secret_references_point_into_the_string() {
    assert_error(
        &format!("{MINIMAL}url = \"postgres://app:${{env:}}@db/app\"\n"),
        6,
        23,
        "empty environment variable name",
    );
    assert_error(
        &format!("{MINIMAL}token = \"${{vault:x}}\"\n"),
        6,
        10,
        "unknown secret backend \"vault\"",
    );
    assert_error(
        &format!("{MINIMAL}hosts = [\"a\", {{ pass = \"${{env:A\" }}]\n"),
        6,
        25,
        "unterminated secret reference",
    );
    assert_error(
        &format!("{MINIMAL}x = \"${{env:9LIVES}}\"\n"),
        6,
        6,
        "invalid environment variable name \"9LIVES\"",
    );
    assert_error(
        &format!("[repository]\npassphrase = \"${{env:}}\"\n{MINIMAL}"),
        2,
        15,
        "empty environment variable name",
    );
    // With escapes the string's text and source differ: point at the string's start.
    assert_error(
        &format!("{MINIMAL}x = \"\\t${{env:}}\"\n"),
        6,
        6,
        "empty environment variable name",
    );
}

#[test]
fn secrets_resolve_and_never_leak() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "tok-from-file\n").unwrap();
    let text = r#"[repository]
passphrase = "${env:RUNNER_PASSPHRASE}"

[source]
type = "postgres"
url = "postgres://app:${env:PGPASS}@db:5432/app"
auth = { token = "${file:token}" }
note = "costs $${5}"

[sink]
type = "local"
"#;
    let p = Pipeline::parse(text, dir.path().join("daily.toml"), &Catalog).unwrap();
    let env =
        SecretResolver::with_env([("RUNNER_PASSPHRASE", "pass-value"), ("PGPASS", "pg-value")]);

    let resolved = p.source.resolved_options(&env).unwrap();
    assert_eq!(resolved["url"], "postgres://app:pg-value@db:5432/app");
    assert_eq!(resolved["auth"]["token"], "tok-from-file");
    assert_eq!(resolved["note"], "costs ${5}", "$${{ is a literal ${{");
    let Some(KeySource::Passphrase(passphrase)) = &p.repository.key else {
        panic!()
    };
    assert_eq!(passphrase.resolve(&env).unwrap().expose(), "pass-value");
    assert!(p.check_secrets(&env).is_empty());

    let redacted = serde_json::to_string(&p.source.redacted_options()).unwrap();
    assert!(redacted.contains("${env:PGPASS}") && redacted.contains("${file:token}"));
    for value in ["pg-value", "tok-from-file", "pass-value"] {
        assert!(!redacted.contains(value) && !format!("{p:?}").contains(value));
    }

    let missing = p
        .source
        .resolved_options(&SecretResolver::with_env([("X", "y")]))
        .unwrap_err();
    assert_eq!(
        missing.to_string(),
        format!(
            "{}:6:23: environment variable PGPASS is not set",
            dir.path().join("daily.toml").display()
        )
    );

    let without = SecretResolver::with_env([("PGPASS", "pg-value")]);
    std::fs::remove_file(dir.path().join("token")).unwrap();
    let errors: Vec<_> = p
        .check_secrets(&without)
        .into_iter()
        .map(|e| (e.location.line, e.location.column, e.message))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(
        errors[0],
        (
            2,
            15,
            "environment variable RUNNER_PASSPHRASE is not set".to_string()
        )
    );
    assert_eq!((errors[1].0, errors[1].1), (7, 19));
    assert!(
        errors[1].2.starts_with("cannot read secret file")
            && errors[1].2.contains("(from ${file:token})"),
        "{}",
        errors[1].2
    );
}

#[test]
fn all_errors_are_reported_in_file_order() {
    let text = "[source]\ntype = \"ftp\"\n[source.limits]\nmemory = \"lots\"\n[[transform]]\ntype = \"zsdt\"\n";
    let errors: Vec<_> = parse(text)
        .unwrap_err()
        .iter()
        .map(|e| (e.location.line, e.location.column))
        .collect();
    assert_eq!(errors, [(1, 1), (2, 9), (4, 11), (6, 9)]);
}

#[test]
fn load_reads_files_and_reports_unreadable_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nightly.toml");
    std::fs::write(&path, MINIMAL).unwrap();
    let p = Pipeline::load(&path, &Catalog).unwrap();
    assert_eq!((p.name.as_str(), p.base_dir()), ("nightly", dir.path()));
    let err = Pipeline::load(dir.path().join("absent.toml"), &Catalog).unwrap_err();
    assert_eq!(err.first().location.line, 0);
    assert!(err.to_string().starts_with(&format!(
        "{}: cannot read pipeline file:",
        dir.path().join("absent.toml").display()
    )));
}

#[test]
fn key_grants_name_known_keys() {
    let text = "[source]\ntype = \"files\"\n[source.grants]\nkeys = [\"data\", \"admin\"]\n\n[sink]\ntype = \"local\"\n";
    assert_error(text, 4, 18, "unknown key \"admin\"; expected one of: data");
    let pipeline = parse("[source]\ntype = \"files\"\n[source.grants]\nkeys = [\"data\"]\n\n[sink]\ntype = \"local\"\n").unwrap();
    assert_eq!(pipeline.source.grants.keys, vec!["data".to_string()]);
}

#[test]
fn lock_stale_after_is_a_duration_of_at_least_ten_seconds() {
    let with = |value: &str| format!("[repository]\nlock_stale_after = {value}\n{MINIMAL}");
    assert_eq!(
        parse(MINIMAL).unwrap().repository.lock_stale_after,
        Duration::from_secs(30 * 60)
    );
    assert_eq!(
        parse(&with("\"1h30m\""))
            .unwrap()
            .repository
            .lock_stale_after,
        Duration::from_secs(90 * 60)
    );
    assert_error(
        &with("\"5s\""),
        2,
        21,
        "lock_stale_after must be at least 10s",
    );
    assert_error(&with("\"ten minutes\""), 2, 21, "invalid lock_stale_after");
    assert_error(&with("30"), 2, 20, "string");
}

#[test]
fn retention_table_is_typed() {
    let p = parse(&format!(
        "{MINIMAL}[retention]\nkeep_last = 3\nkeep_hourly = 24\nkeep_daily = 7\nkeep_weekly = 4\nkeep_monthly = 12\nkeep_yearly = 5\nkeep_within = \"1y2m3d4h\"\nkeep_tag = [\"monthly\", \"a, b\"]\nmax_total_size = \"5GB\"\nauto = true\n"
    ))
    .unwrap();
    let r = p.retention.unwrap();
    assert_eq!(
        (
            r.keep_last,
            r.keep_hourly,
            r.keep_daily,
            r.keep_weekly,
            r.keep_monthly,
            r.keep_yearly
        ),
        (3, 24, 7, 4, 12, 5)
    );
    assert_eq!(r.keep_within.unwrap().to_string(), "1y2m3d4h");
    assert_eq!(
        r.keep_tag,
        vec![vec!["monthly".to_string()], vec!["a".into(), "b".into()]]
    );
    assert_eq!(r.max_total_size, Some(5_000_000_000));
    assert!(r.auto);
    assert_eq!(parse(MINIMAL).unwrap().retention, None);
    let only_size = parse(&format!(
        "{MINIMAL}[retention]\nmax_total_size = \"1MiB\"\n"
    ))
    .unwrap();
    assert!(!only_size.retention.unwrap().auto, "auto defaults to false");
}

#[test]
fn retention_errors_point_at_the_value() {
    let retention = |body: &str| format!("{MINIMAL}[retention]\n{body}\n");
    assert_error(
        &retention("keep_dialy = 7"),
        7,
        1,
        "unknown key \"keep_dialy\" in [retention]; expected one of: keep_last, keep_hourly",
    );
    assert_error(
        &retention("keep_daily = \"7\""),
        7,
        15,
        "expected a whole number of snapshots, found a string",
    );
    assert_error(
        &retention("keep_daily = -1"),
        7,
        14,
        "keep_daily must be a whole number from 0",
    );
    assert_error(
        &retention("keep_within = \"30m5s\""),
        7,
        16,
        "invalid keep_within: unknown unit \"s\" in span \"30m5s\"",
    );
    assert_error(
        &retention("keep_within = \"0d\""),
        7,
        16,
        "keep_within must be greater than zero",
    );
    assert_error(
        &retention("max_total_size = \"5 gigs\""),
        7,
        19,
        "invalid max_total_size: unknown size unit \"gigs\"",
    );
    assert_error(
        &retention("keep_tag = \"monthly\""),
        7,
        13,
        "expected a list of tags",
    );
    assert_error(
        &retention("keep_tag = [\"a,\"]"),
        7,
        14,
        "empty tag in keep_tag",
    );
    assert_error(
        &retention("keep_last = 2\nauto = \"yes\""),
        8,
        9,
        "expected true or false",
    );
    assert_error(&retention("auto = true"), 6, 1, "[retention] has no rule");
}
