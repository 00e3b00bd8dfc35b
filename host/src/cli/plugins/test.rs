//! `runner plugins test PLUGIN.wasm --config FILE`: round-trips a plugin inside the real host
//! with the options, grants and limits of FILE — through the same backup, verify and restore
//! code a pipeline runs, plus the sink contract's corner cases called one by one.
//!
//! FILE holds what would follow the stage's header in a pipeline: the plugin's options, and
//! `[grants]` / `[limits]` tables. The harness writes the rest of a pipeline around it
//! (a files source over sample data, the local sink in a scratch directory, as needed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::RngCore;
use tokio::sync::mpsc;

use crate::cli::{CliError, Globals};
use crate::config::{ConfigError, ConfigErrors, DirAccess, DirGrant, Pipeline, StageKind};
use crate::engine::bindings::PluginErrorKind;
use crate::engine::{Engine, EngineOptions, PluginError};
use crate::pipeline::chain::{ChainSpec, Worker};
use crate::pipeline::restore::RestoreRequest;
use crate::pipeline::selection::Selection;
use crate::pipeline::verify::VerifyRequest;
use crate::pipeline::{CHUNK, Context, RunError, backup, restore, verify};
use crate::plugins::Builtins;
use crate::repository::lock::LockKind;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The component to test.
    plugin: PathBuf,
    /// The stage's options, grants and limits (what follows `[sink]`, `[source]` or
    /// `[[transform]]` in a pipeline). None: no options, no grants.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Lines the harness puts before the config file's text: the stage header and `plugin = …`.
const HEADER_LINES: usize = 2;
/// Where the sink contract checks put their objects.
const PROBE_PREFIX: &str = "plugins-test/";

pub async fn run(args: Args, globals: Globals) -> Result<(), CliError> {
    let engine = Engine::new(EngineOptions::from_env())?;
    let wasm = std::fs::read(&args.plugin).map_err(|e| {
        CliError::config(anyhow::anyhow!(
            "cannot read {}: {e}",
            args.plugin.display()
        ))
    })?;
    let plugin = std::path::absolute(&args.plugin).map_err(CliError::config)?;
    let loaded = engine
        .load(
            &plugin.file_name().unwrap_or_default().to_string_lossy(),
            &wasm,
        )
        .map_err(CliError::config)?;
    let kind = loaded.shape.kind;
    let (config_path, config_text) = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                CliError::config(anyhow::anyhow!("cannot read {}: {e}", path.display()))
            })?;
            (path.clone(), text)
        }
        None => (PathBuf::from("(no --config)"), String::new()),
    };
    let scratch = Scratch::new().map_err(CliError::failure)?;
    let text = pipeline_text(kind, &plugin, &config_text, &scratch.0, false);
    let mut pipeline = parse(&text, &config_path)?;
    if !stage(&pipeline, kind).grants.keys.is_empty() {
        // A stage granted repository keys needs an encrypted repository to get them from.
        let key: [u8; 32] = rand::random();
        std::fs::write(scratch.0.join("key"), hex::encode(key)).map_err(CliError::failure)?;
        pipeline = parse(
            &pipeline_text(kind, &plugin, &config_text, &scratch.0, true),
            &config_path,
        )?;
    }
    if kind == StageKind::Source {
        // Restore goes into a scratch directory the plugin is granted for this test only.
        let target = scratch
            .0
            .join("target")
            .canonicalize()
            .map_err(CliError::failure)?;
        pipeline.source.grants.dirs.push(DirGrant {
            path: target,
            access: DirAccess::ReadWrite,
        });
    }
    let ctx = Context::new(engine, pipeline);
    let mut report = Report {
        globals,
        checks: Vec::new(),
    };
    if !globals.json {
        println!("testing the {kind} plugin {}", plugin.display());
    }
    let outcome = match kind {
        StageKind::Sink => test_sink(&ctx, &scratch.0, &mut report).await,
        StageKind::Transform => round_trip(&ctx, &scratch.0, &mut report).await,
        StageKind::Source => test_source(&ctx, &scratch.0, &mut report).await,
    };
    let outcome = outcome.map_err(|e| match e {
        TestError::Run(e) => CliError::from(relocate_run(*e, &config_path)),
        TestError::Check(message) => CliError::failure(anyhow::anyhow!("{message}")),
    });
    if globals.json {
        println!(
            "{}",
            serde_json::json!({
                "plugin": plugin.display().to_string(),
                "kind": kind.to_string(),
                "checks": report.checks,
                "ok": outcome.is_ok(),
            })
        );
    }
    outcome
}

/// The pipeline the harness runs: the config file's text in the tested stage's table
/// (its own line numbers kept, after [`HEADER_LINES`]), the other stages after it.
fn pipeline_text(
    kind: StageKind,
    plugin: &Path,
    config: &str,
    scratch: &Path,
    keyed: bool,
) -> String {
    let quoted = |path: PathBuf| toml::Value::String(path.display().to_string()).to_string();
    let table = match kind {
        StageKind::Source => "source",
        StageKind::Transform => "transform",
        StageKind::Sink => "sink",
    };
    let header = if kind == StageKind::Transform {
        "[[transform]]"
    } else {
        &format!("[{table}]")
    };
    let mut text = format!("{header}\nplugin = {}\n", quoted(plugin.to_path_buf()));
    for line in config.lines() {
        // `[grants]` and `[limits]` belong to the tested stage.
        let trimmed = line.trim_start();
        if trimmed.starts_with("[grants") || trimmed.starts_with("[limits") {
            text.push_str(&line.replacen('[', &format!("[{table}."), 1));
        } else {
            text.push_str(line);
        }
        text.push('\n');
    }
    if kind != StageKind::Source {
        text.push_str(&format!(
            "\n[source]\ntype = \"files\"\npaths = [{}]\n",
            quoted(scratch.join("data"))
        ));
    }
    if kind != StageKind::Sink {
        text.push_str(&format!(
            "\n[sink]\ntype = \"local\"\npath = {}\n",
            quoted(scratch.join("repo"))
        ));
    }
    if keyed {
        text.push_str(&format!(
            "\n[repository]\nkey_file = {}\n",
            quoted(scratch.join("key"))
        ));
    }
    text
}

fn stage(pipeline: &Pipeline, kind: StageKind) -> &crate::config::StageConfig {
    match kind {
        StageKind::Source => &pipeline.source,
        StageKind::Transform => &pipeline.transforms[0],
        StageKind::Sink => &pipeline.sink,
    }
}

fn parse(text: &str, config_path: &Path) -> Result<Pipeline, CliError> {
    Pipeline::parse(text, config_path, &Builtins).map_err(|errors| {
        let text = relocate_all(&errors, config_path)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n\n");
        CliError::config(anyhow::anyhow!("{text}"))
    })
}

/// Points an error in the generated pipeline back at the line of the config file.
fn relocate(mut error: ConfigError, config_path: &Path) -> ConfigError {
    if error.location.line <= HEADER_LINES {
        // The generated stage header: the config file as a whole.
        return ConfigError::new(
            crate::config::Location::whole_file(config_path),
            error.message,
        );
    }
    error.location.file = config_path.to_path_buf();
    error.location.line -= HEADER_LINES;
    error
}

fn relocate_all(errors: &ConfigErrors, config_path: &Path) -> Vec<ConfigError> {
    errors
        .iter()
        .map(|e| relocate(e.clone(), config_path))
        .collect()
}

fn relocate_run(error: RunError, config_path: &Path) -> RunError {
    match error {
        RunError::Config(e) => RunError::Config(relocate(e, config_path)),
        other => other,
    }
}

enum TestError {
    Run(Box<RunError>),
    Check(String),
}

impl<E: Into<RunError>> From<E> for TestError {
    fn from(e: E) -> Self {
        TestError::Run(Box::new(e.into()))
    }
}

/// Fails the test with `message` unless `ok`.
fn ensure(ok: bool, message: impl FnOnce() -> String) -> Result<(), TestError> {
    if ok {
        Ok(())
    } else {
        Err(TestError::Check(message()))
    }
}

/// The checks that passed, printed as they pass.
struct Report {
    globals: Globals,
    checks: Vec<String>,
}

impl Report {
    fn ok(&mut self, check: impl Into<String>) {
        let check = check.into();
        if !self.globals.json {
            println!("  ok  {check}");
        }
        self.checks.push(check);
    }
}

/// A scratch directory for the test's data, repository and restore target, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "runner-plugins-test-{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 4]>())
        ));
        for sub in ["data", "repo", "target"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        Ok(Scratch(dir.canonicalize()?))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sample files of the sizes that find boundary bugs: empty, tiny, one chunk plus a bit, several chunks.
fn write_sample_data(dir: &Path) -> std::io::Result<()> {
    let mut rng = rand::rng();
    for (name, size) in [
        ("empty", 0usize),
        ("tiny.txt", 13),
        ("chunk-and-a-bit", CHUNK as usize + 1),
        ("nested/several-chunks", 3 * CHUNK as usize + 4097),
    ] {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap())?;
        let mut bytes = vec![0u8; size];
        rng.fill_bytes(&mut bytes);
        // Half text, half noise: compressors and encoders see both.
        for (i, byte) in bytes
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| (i / 4096) % 2 == 0)
        {
            *byte = b"the quick brown fox jumps over the lazy dog\n"[i % 44];
        }
        std::fs::write(path, bytes)?;
    }
    Ok(())
}

/// Relative path → content of every file under `root`.
fn read_tree(root: &Path) -> std::io::Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.insert(
                    path.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&path)?,
                );
            }
        }
    }
    Ok(files)
}

/// One backup tagged `plugins-test`, under the repository's append lock like `runner run`.
async fn back_up(ctx: &Context) -> Result<backup::BackupSummary, RunError> {
    let mut repository = ctx.open_repository(true).await?;
    let lock = ctx.lock(&repository, LockKind::Append, "run").await?;
    let summary = backup::run(
        ctx,
        &mut repository,
        &lock,
        vec!["plugins-test".into()],
        None,
    )
    .await;
    lock.release().await;
    summary
}

/// Sample files backed up through the pipeline, verified, restored and compared byte for byte.
async fn round_trip(ctx: &Context, scratch: &Path, report: &mut Report) -> Result<(), TestError> {
    let data = scratch.join("data");
    write_sample_data(&data)
        .map_err(|e| TestError::Check(format!("cannot write sample data: {e}")))?;
    let summary = back_up(ctx).await?;
    let m = &summary.manifest;
    report.ok(format!(
        "backup: {} artifact(s), {} object(s), {} bytes in, {} stored",
        m.artifacts.len(),
        m.object_count(),
        m.bytes_in(),
        m.bytes_stored()
    ));
    check_verify(ctx, report).await?;
    let target = scratch.join("target");
    restore::run(ctx, restore_request(Some(target.clone()))).await?;
    let (original, restored) = (read_tree(&data), read_tree(&target.join("data")));
    let (original, restored) = (
        original.map_err(|e| TestError::Check(e.to_string()))?,
        restored.map_err(|e| TestError::Check(format!("reading the restored files: {e}")))?,
    );
    for (path, bytes) in &original {
        ensure(restored.get(path) == Some(bytes), || {
            format!(
                "restore: {} differs from the original (or is missing)",
                path.display()
            )
        })?;
    }
    ensure(original.len() == restored.len(), || {
        format!(
            "restore: {} files restored, {} backed up",
            restored.len(),
            original.len()
        )
    })?;
    report.ok(format!(
        "restore: {} files identical to the originals",
        original.len()
    ));
    Ok(())
}

async fn check_verify(ctx: &Context, report: &mut Report) -> Result<(), TestError> {
    let checks = verify::run(
        ctx,
        VerifyRequest {
            selection: Selection::latest(),
            all: true,
            read_data: true,
        },
    )
    .await?;
    for check in &checks {
        if let Some(problem) = &check.problem {
            return Err(TestError::Check(format!(
                "verify --read-data: snapshot {}: {problem}",
                check.snapshot
            )));
        }
    }
    report.ok(format!(
        "verify --read-data: {} bytes read back through the chain, every digest matched",
        checks.iter().map(|c| c.bytes_read).sum::<u64>()
    ));
    Ok(())
}

fn restore_request(target: Option<PathBuf>) -> RestoreRequest {
    RestoreRequest {
        selection: Selection::latest(),
        only: Vec::new(),
        target,
        mode: crate::engine::contract::RestoreMode::Merge,
        dry_run: false,
        overwrite: false,
        in_place: false,
    }
}

async fn test_source(ctx: &Context, scratch: &Path, report: &mut Report) -> Result<(), TestError> {
    let summary = back_up(ctx).await?;
    let m = &summary.manifest;
    report.ok(format!(
        "backup: {} artifact(s), {} bytes ({})",
        m.artifacts.len(),
        m.bytes_in(),
        m.artifacts
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    check_verify(ctx, report).await?;
    let target = scratch.join("target");
    let restored = restore::run(
        ctx,
        restore_request(Some(
            target
                .canonicalize()
                .map_err(|e| TestError::Check(e.to_string()))?,
        )),
    )
    .await?;
    ensure(restored.bytes == m.bytes_in(), || {
        format!(
            "restore handed {} bytes to the plugin, the backup read {}",
            restored.bytes,
            m.bytes_in()
        )
    })?;
    let written = read_tree(&target).map(|t| t.len()).unwrap_or(0);
    report.ok(format!(
        "restore into {}: {} artifact(s), {} bytes, committed ({} report(s), {written} file(s) in the scratch target)",
        target.display(),
        restored.artifacts.len(),
        restored.bytes,
        restored.reports.len()
    ));
    Ok(())
}

/// The sink contract one call at a time (through the chain's own write and read paths),
/// then a whole backup, verify and restore through it; everything written is deleted.
async fn test_sink(ctx: &Context, scratch: &Path, report: &mut Report) -> Result<(), TestError> {
    let chain = ChainSpec {
        transforms: Vec::new(),
        sink: ctx.sink_spec()?,
        read_back_writes: true,
    };
    let mut worker = Worker::start(&ctx.engine, &chain)
        .await
        .map_err(|e| RunError::from(crate::pipeline::stages::locate(&ctx.pipeline.sink, e)))?;
    let sink = worker.sink();
    sink.check().await?;
    let existing = sink.list_all("").await?;
    ensure(existing.is_empty(), || {
        format!(
            "the sink already holds {} object(s) (first: {}); plugins test writes and deletes objects, so give it an empty location",
            existing.len(),
            existing[0].key
        )
    })?;
    report.ok("check: reachable, and empty");

    let mut rng = rand::rng();
    let mut objects: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, size) in [
        ("empty", 0usize),
        ("small", 1000),
        ("nested/deeper/large", 3 * CHUNK as usize + 7),
    ] {
        let mut bytes = vec![0u8; size];
        rng.fill_bytes(&mut bytes);
        objects.push((format!("{PROBE_PREFIX}{name}"), bytes));
    }
    let mut records = Vec::new();
    for (key, bytes) in &objects {
        let (tx, mut rx) = mpsc::channel(4);
        let chunks: Vec<Vec<u8>> = bytes.chunks(CHUNK as usize).map(<[u8]>::to_vec).collect();
        let feed = async move {
            for chunk in chunks {
                let _ = tx.send(chunk).await;
            }
        };
        let (record, ()) = tokio::join!(worker.encode(key, key, &mut rx), feed);
        records.push(record.map_err(|e| RunError::Chain {
            snapshot: "(plugins test)".into(),
            source: e,
        })?);
    }
    report.ok(format!(
        "put: {} objects ({} bytes), each stat'ed and read back with the same digest",
        objects.len(),
        objects.iter().map(|(_, b)| b.len()).sum::<usize>()
    ));

    for ((key, bytes), record) in objects.iter().zip(&records) {
        let (tx, mut rx) = mpsc::channel(4);
        let decode = async {
            let decoded = worker.decode(key, record, &tx).await;
            drop(tx);
            decoded
        };
        let collect = async {
            let mut read = Vec::new();
            while let Some(chunk) = rx.recv().await {
                read.extend_from_slice(&chunk);
            }
            read
        };
        let (decoded, read) = tokio::join!(decode, collect);
        decoded.map_err(|e| RunError::Chain {
            snapshot: "(plugins test)".into(),
            source: e,
        })?;
        ensure(&read == bytes, || {
            format!("get {key}: the bytes read differ from the bytes written")
        })?;
    }
    report.ok("get: every object read back whole, identical");

    let sink = worker.sink();
    let (key, bytes) = &objects[2];
    for (offset, length) in [
        (1u64, Some(10u64)),
        (CHUNK as u64 - 3, Some(CHUNK as u64)),
        (bytes.len() as u64 - 5, None),
        (bytes.len() as u64, None),
    ] {
        let download = sink.get(key, offset, length).await?;
        let mut read = Vec::new();
        while let Some(chunk) = sink.read(&download, CHUNK).await? {
            read.extend_from_slice(&chunk);
        }
        sink.close_download(download).await?;
        let end = length.map_or(bytes.len(), |l| {
            (offset + l).min(bytes.len() as u64) as usize
        });
        ensure(read == bytes[offset as usize..end], || {
            format!(
                "get {key} offset {offset} length {length:?}: {} bytes read, expected {}",
                read.len(),
                end - offset as usize
            )
        })?;
    }
    report.ok("get with offset and length: every range as expected");

    let listed = sink.list_all(PROBE_PREFIX).await?;
    let mut expected: Vec<(String, u64)> = objects
        .iter()
        .map(|(k, b)| (k.clone(), b.len() as u64))
        .collect();
    expected.sort();
    let mut got: Vec<(String, u64)> = listed.iter().map(|o| (o.key.clone(), o.size)).collect();
    got.sort();
    ensure(got == expected, || {
        format!("list {PROBE_PREFIX:?}: got {got:?}, expected {expected:?}")
    })?;
    let nested = sink.list_all(&format!("{PROBE_PREFIX}nested/")).await?;
    ensure(nested.len() == 1, || {
        format!(
            "list {PROBE_PREFIX}nested/: {} objects, expected 1",
            nested.len()
        )
    })?;
    ensure(
        sink.stat(&format!("{PROBE_PREFIX}absent")).await?.is_none(),
        || "stat of an absent key returned an object".into(),
    )?;
    report.ok("list and stat: keys and sizes as written, prefixes respected, absent keys absent");

    let upload = sink.put(&objects[1].0, true).await?;
    sink.write(&upload, b"must not replace".to_vec()).await?;
    match sink.finish(upload).await {
        Err(PluginError::Plugin {
            error: PluginErrorKind::AlreadyExists(_),
            ..
        }) => {}
        Err(other) => {
            return Err(TestError::Check(format!(
                "put-if-absent on a taken key failed with {other}, expected already-exists"
            )));
        }
        Ok(_) => {
            return Err(TestError::Check(format!(
                "put-if-absent replaced the existing object {}",
                objects[1].0
            )));
        }
    }
    ensure(
        sink.stat(&objects[1].0).await?.map(|s| s.size) == Some(1000),
        || "a refused put-if-absent changed the object".into(),
    )?;
    report.ok("put-if-absent: a taken key is refused with already-exists and left as it was");

    for (key, _) in &objects {
        sink.delete(key).await?;
        ensure(sink.stat(key).await?.is_none(), || {
            format!("delete {key}: still there")
        })?;
    }
    sink.delete(&objects[0].0).await?;
    ensure(sink.list_all(PROBE_PREFIX).await?.is_empty(), || {
        "list after delete still finds objects".into()
    })?;
    report.ok("delete: objects gone, deleting an absent key succeeds");

    round_trip(ctx, scratch, report).await?;
    let sink = worker.sink();
    let leftovers = sink.list_all("").await?;
    for object in &leftovers {
        sink.delete(&object.key).await?;
    }
    ensure(sink.list_all("").await?.is_empty(), || {
        "the sink still lists objects after deleting them".into()
    })?;
    report.ok(format!(
        "cleanup: the repository's {} object(s) deleted",
        leftovers.len()
    ));
    Ok(())
}
