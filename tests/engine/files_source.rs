//! The built-in `files` source: a generated tree (modes, owners, nanosecond mtimes,
//! symlinks, hard links, raw names) backs up and restores exactly; `only`, dry runs,
//! overwrite refusal, abort and corrupted streams behave as the contract says.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use runner::capabilities::StageGrants;
use runner::config::{DirAccess, DirGrant, Grants, Limits, StageKind};
use runner::engine::bindings::PluginErrorKind;
use runner::engine::contract::{Artifact, RestoreMode, RestoreOptions, RestoreReport};
use runner::engine::{Engine, PluginError, SourceInstance};
use serde_json::json;

use crate::common::{self, Prng};

type Metadata = Vec<(String, String)>;

/// One backed-up artifact: what was listed, its bytes, and the metadata learned reading it.
struct Backup {
    artifact: Artifact,
    bytes: Vec<u8>,
    metadata: Metadata,
}

async fn start(
    engine: &Engine,
    dirs: &[(&Path, DirAccess)],
    config: serde_json::Value,
) -> Result<SourceInstance, PluginError> {
    let builtin =
        runner::plugins::builtin(StageKind::Source, "files").expect("the files source is built in");
    let loaded = engine.load("files", builtin.wasm).unwrap();
    let grants = Grants {
        dirs: dirs
            .iter()
            .map(|(path, access)| DirGrant {
                path: path.to_path_buf(),
                access: *access,
            })
            .collect(),
        ..Default::default()
    };
    let grants = StageGrants {
        grants,
        ..Default::default()
    };
    SourceInstance::start(
        engine,
        &loaded,
        "source (files)",
        &config.to_string(),
        grants,
        &Limits::default(),
    )
    .await
}

fn config_for(roots: &[&Path]) -> serde_json::Value {
    json!({ "paths": roots.iter().map(|r| r.to_string_lossy()).collect::<Vec<_>>() })
}

/// Backs up `roots` (granted read-only), reading at most `max` bytes per call.
async fn backup(
    engine: &Engine,
    roots: &[&Path],
    config: serde_json::Value,
    max: u32,
) -> Result<Vec<Backup>, PluginError> {
    let dirs: Vec<_> = roots.iter().map(|r| (*r, DirAccess::Read)).collect();
    let mut source = start(engine, &dirs, config).await?;
    let session = source.begin_backup(None).await?;
    let mut backups = Vec::new();
    for artifact in source.artifacts(&session).await? {
        let reader = source.open(&session, &artifact.name).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = source.read(&reader, max).await? {
            assert!(
                !chunk.is_empty() && chunk.len() <= max as usize,
                "read returned {} bytes for max {max}",
                chunk.len()
            );
            bytes.extend_from_slice(&chunk);
        }
        let metadata = source.finish_read(reader).await?;
        backups.push(Backup {
            artifact,
            bytes,
            metadata,
        });
    }
    source.close_backup(session).await?;
    Ok(backups)
}

fn options(target: &Path) -> RestoreOptions {
    RestoreOptions {
        target: Some(target.to_string_lossy().into_owned()),
        only: Vec::new(),
        mode: RestoreMode::Merge,
        dry_run: false,
        overwrite: false,
    }
}

/// How a restore ends once every artifact was written.
#[derive(Clone, Copy, PartialEq)]
enum Ending {
    Commit,
    Abort,
}

/// Restores `backups` into `target` (granted read-write), writing each stream in random
/// pieces. Any failure aborts the session, as the host does, and is returned.
async fn restore(
    engine: &Engine,
    backups: &[(Artifact, Vec<u8>)],
    options: &RestoreOptions,
    ending: Ending,
) -> Result<Vec<RestoreReport>, PluginError> {
    let target = PathBuf::from(options.target.clone().unwrap());
    let mut source = start(
        engine,
        &[(&target, DirAccess::ReadWrite)],
        config_for(&[&target]),
    )
    .await?;
    let session = source.begin_restore(options).await?;
    let mut prng = Prng::new(backups.len() as u64);
    let mut written: Result<(), PluginError> = Ok(());
    'artifacts: for (artifact, bytes) in backups {
        let writer = match source.write_artifact(&session, artifact).await {
            Ok(writer) => writer,
            Err(e) => {
                written = Err(e);
                break;
            }
        };
        for piece in prng.split(bytes, 200_000) {
            if let Err(e) = source.write(&writer, piece.to_vec()).await {
                written = Err(e);
                break 'artifacts;
            }
        }
        if let Err(e) = source.finish_write(writer).await {
            written = Err(e);
            break;
        }
    }
    match (written, ending) {
        (Ok(()), Ending::Commit) => source.commit(session).await,
        (Ok(()), Ending::Abort) => source.abort(session).await.map(|()| Vec::new()),
        (Err(e), _) => {
            source.abort(session).await?;
            Err(e)
        }
    }
}

fn pairs(backups: &[Backup]) -> Vec<(Artifact, Vec<u8>)> {
    backups
        .iter()
        .map(|b| (b.artifact.clone(), b.bytes.clone()))
        .collect()
}

fn value<'a>(metadata: &'a Metadata, key: &str) -> &'a str {
    metadata
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {metadata:?}"))
}

fn set_mtime(path: &Path, seconds: i64, nanoseconds: i64) {
    let time = rustix::fs::Timespec {
        tv_sec: seconds,
        tv_nsec: nanoseconds,
    };
    let times = rustix::fs::Timestamps {
        last_access: time,
        last_modification: time,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn raw(base: &Path, name: &[u8]) -> PathBuf {
    base.join(OsStr::from_bytes(name))
}

/// Builds `base/data`, the tree every test backs up, next to `base/outside`, which
/// only a symlink points at. Returns the root.
fn build_tree(base: &Path) -> PathBuf {
    let outside = base.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"OUTSIDE-SECRET-CONTENT").unwrap();

    let root = base.join("data");
    let mut prng = Prng::new(42);
    for dir in ["a/b", "a/empty", "sticky", "nested/one/two/three"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::create_dir_all(raw(&root, b"raw-dir-\x80")).unwrap();
    std::fs::write(root.join("a/b/deep.txt"), b"deep").unwrap();
    std::fs::write(root.join("a/hard"), b"one inode, three names").unwrap();
    std::fs::hard_link(root.join("a/hard"), root.join("hard-second")).unwrap();
    std::fs::hard_link(root.join("a/hard"), root.join("nested/hard-third")).unwrap();
    std::fs::write(root.join("exec.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::write(root.join("secret"), b"private").unwrap();
    std::fs::write(root.join("setuid"), b"elevated").unwrap();
    std::fs::write(root.join("sticky/note"), b"shared").unwrap();
    std::fs::write(root.join("zero"), b"").unwrap();
    std::fs::write(root.join("big.bin"), prng.mixed((3 << 20) + 123)).unwrap();
    std::fs::write(root.join("café-ünï ✓.txt"), "unicode".as_bytes()).unwrap();
    std::fs::write(raw(&root, b"raw-\xff\xfe name"), b"not utf-8").unwrap();
    std::fs::write(raw(&root, b"raw-dir-\x80/inner"), b"inside a raw directory").unwrap();
    std::fs::write(root.join("nested/one/two/three/leaf"), prng.bytes(5000)).unwrap();
    std::os::unix::fs::symlink("a/b/deep.txt", root.join("rel-link")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), root.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../outside", root.join("escape-dir")).unwrap();
    std::os::unix::fs::symlink("a", root.join("dir-link")).unwrap();
    std::os::unix::fs::symlink("no/such/target", root.join("dangling")).unwrap();
    // Special files: skipped and counted, never read.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo").as_path(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap();

    // Owners first: chown clears setuid.
    std::os::unix::fs::chown(root.join("a"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::chown(root.join("secret"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::chown(root.join("setuid"), Some(4321), Some(0)).unwrap();
    std::os::unix::fs::lchown(root.join("rel-link"), Some(2222), Some(3333)).unwrap();
    chmod(&root, 0o750);
    chmod(&root.join("a"), 0o700);
    chmod(&root.join("exec.sh"), 0o755);
    chmod(&root.join("secret"), 0o600);
    chmod(&root.join("setuid"), 0o4755);
    chmod(&root.join("sticky"), 0o1777);
    chmod(&root.join("zero"), 0o444);

    // Distinct mtimes with nanoseconds on everything, the root last.
    let mut paths: Vec<PathBuf> = snapshot(&root)
        .into_keys()
        .map(|p| raw(&root, &p))
        .collect();
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, path) in paths.iter().enumerate() {
        set_mtime(
            path,
            1_500_000_000 + i as i64 * 1000,
            (i as i64 * 7_919_111 + 1) % 1_000_000_000,
        );
    }
    root
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Directory,
    File { digest: [u8; 32], size: u64 },
    Symlink(Vec<u8>),
    Special,
}

/// Everything a restore must reproduce about one item.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    node: Node,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    /// For files with several names: the first of them, so link structure compares.
    link_group: Option<Vec<u8>>,
}

/// The tree under `root`, by raw relative path ("" is the root), without following symlinks.
fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, Item> {
    fn walk(
        root: &Path,
        rel: &[u8],
        items: &mut BTreeMap<Vec<u8>, Item>,
        inodes: &mut Vec<(u64, Vec<u8>)>,
    ) {
        let path = if rel.is_empty() {
            root.to_path_buf()
        } else {
            raw(root, rel)
        };
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let kind = meta.file_type();
        let node = if kind.is_dir() {
            Node::Directory
        } else if kind.is_file() {
            if meta.nlink() > 1 {
                inodes.push((meta.ino(), rel.to_vec()));
            }
            Node::File {
                digest: *blake3::hash(&std::fs::read(&path).unwrap()).as_bytes(),
                size: meta.len(),
            }
        } else if kind.is_symlink() {
            Node::Symlink(
                std::fs::read_link(&path)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            )
        } else {
            Node::Special
        };
        let mode = if kind.is_symlink() {
            0
        } else {
            meta.mode() & 0o7777
        };
        items.insert(
            rel.to_vec(),
            Item {
                node,
                mode,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                link_group: None,
            },
        );
        if kind.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                let name = entry.unwrap().file_name();
                let child = if rel.is_empty() {
                    name.as_bytes().to_vec()
                } else {
                    [rel, b"/", name.as_bytes()].concat()
                };
                walk(root, &child, items, inodes);
            }
        }
    }
    let mut items = BTreeMap::new();
    let mut inodes = Vec::new();
    walk(root, b"", &mut items, &mut inodes);
    inodes.sort();
    for (inode, path) in &inodes {
        let first = inodes
            .iter()
            .filter(|(i, _)| i == inode)
            .map(|(_, p)| p)
            .min()
            .unwrap()
            .clone();
        items.get_mut(path).unwrap().link_group = Some(first);
    }
    items
}

fn without_specials(mut items: BTreeMap<Vec<u8>, Item>) -> BTreeMap<Vec<u8>, Item> {
    items.retain(|_, item| item.node != Node::Special);
    items
}

fn assert_same_tree(expected: &BTreeMap<Vec<u8>, Item>, actual: &BTreeMap<Vec<u8>, Item>) {
    for (path, item) in expected {
        let shown = String::from_utf8_lossy(path);
        match actual.get(path) {
            Some(got) => assert_eq!(got, item, "{shown:?} differs after restore"),
            None => panic!("{shown:?} is missing after restore"),
        }
    }
    if let Some(extra) = actual.keys().find(|p| !expected.contains_key(*p)) {
        panic!(
            "{:?} was restored but is not in the source",
            String::from_utf8_lossy(extra)
        );
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn assert_error<T: std::fmt::Debug>(
    result: Result<T, PluginError>,
    what: &str,
    expected: impl Fn(&PluginErrorKind) -> bool,
) -> String {
    match result {
        Err(e) if e.plugin_error().is_some_and(&expected) => e.to_string(),
        other => panic!("{what}: unexpected outcome {other:?}"),
    }
}

#[tokio::test]
async fn a_tree_backs_up_and_restores_exactly() {
    let engine = common::engine();
    let base = tempfile::tempdir().unwrap();
    let root = build_tree(base.path());
    let source_tree = snapshot(&root);
    let outside_before = snapshot(&base.path().join("outside"));

    let backups = backup(&engine, &[&root], config_for(&[&root]), 1 << 20)
        .await
        .unwrap();
    assert_eq!(backups.len(), 1);
    let Backup {
        artifact,
        bytes,
        metadata,
    } = &backups[0];
    assert_eq!(artifact.name, "data");
    assert_eq!(artifact.media_type, "application/x-runner-files");
    assert_eq!(value(metadata, "root"), root.to_string_lossy());
    let expected_files = source_tree
        .values()
        .filter(|i| matches!(i.node, Node::File { .. }))
        .count()
        - 2;
    assert_eq!(
        value(metadata, "files"),
        expected_files.to_string(),
        "a file with three names is stored once"
    );
    assert_eq!(value(metadata, "hardlinks"), "2");
    assert_eq!(value(metadata, "symlinks"), "5");
    assert_eq!(
        value(metadata, "directories"),
        source_tree
            .values()
            .filter(|i| i.node == Node::Directory)
            .count()
            .to_string()
    );
    assert_eq!(value(metadata, "skipped"), "2", "the fifo and the socket");
    // Content is stored once per inode, under its first name.
    let content_bytes: u64 = source_tree
        .iter()
        .filter_map(|(path, item)| match &item.node {
            Node::File { size, .. }
                if item.link_group.as_ref().is_none_or(|first| first == path) =>
            {
                Some(*size)
            }
            _ => None,
        })
        .sum();
    assert_eq!(value(metadata, "bytes"), content_bytes.to_string());
    assert!(
        !bytes.windows(22).any(|w| w == b"OUTSIDE-SECRET-CONTENT"),
        "the file a symlink points at outside the root was read"
    );

    // Reading in small pieces gives the same stream, never more than asked for.
    let small = backup(&engine, &[&root], config_for(&[&root]), 4093)
        .await
        .unwrap();
    assert!(
        small[0].bytes == *bytes,
        "the stream depends on the read size"
    );

    let target_base = tempfile::tempdir().unwrap();
    let target = target_base.path().join("restore");
    std::fs::create_dir(&target).unwrap();
    let reports = restore(&engine, &pairs(&backups), &options(&target), Ending::Commit)
        .await
        .unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].artifact, "data");
    assert!(
        reports[0].warnings.is_empty(),
        "restoring as root warns about nothing: {:?}",
        reports[0].warnings
    );
    for key in ["files", "directories", "symlinks", "hardlinks", "bytes"] {
        assert_eq!(
            value(&reports[0].metadata, key),
            value(metadata, key),
            "restore report {key}"
        );
    }
    assert_eq!(
        names(&target),
        ["data"],
        "staging is gone and only the artifact was restored"
    );
    assert_same_tree(
        &without_specials(source_tree),
        &snapshot(&target.join("data")),
    );
    assert_eq!(snapshot(&base.path().join("outside")), outside_before);
    let restored = target.join("data");
    assert_eq!(
        std::fs::read_link(restored.join("abs-link")).unwrap(),
        base.path().join("outside/secret")
    );
    assert_eq!(
        std::fs::read_link(restored.join("escape-dir")).unwrap(),
        Path::new("../outside")
    );
    let inode = |p: &str| std::fs::metadata(restored.join(p)).unwrap().ino();
    assert_eq!(inode("a/hard"), inode("hard-second"));
    assert_eq!(inode("a/hard"), inode("nested/hard-third"));
    assert_eq!(
        std::fs::metadata(restored.join("a/hard")).unwrap().nlink(),
        3
    );
}

#[tokio::test]
async fn only_restores_the_matching_items_and_their_parents() {
    let engine = common::engine();
    let base = tempfile::tempdir().unwrap();
    let root = build_tree(base.path());
    let source_tree = snapshot(&root);
    let backups = backup(&engine, &[&root], config_for(&[&root]), 1 << 20)
        .await
        .unwrap();

    let target = base.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let mut opts = options(&target);
    // A directory (brings its subtree), a hard link whose first name is not selected,
    // and a raw name matched by a wildcard.
    opts.only = vec![
        "data/a/b".into(),
        "data/nested/hard-third".into(),
        "data/raw-*name".into(),
    ];
    let reports = restore(&engine, &pairs(&backups), &opts, Ending::Commit)
        .await
        .unwrap();

    let restored = snapshot(&target.join("data"));
    let restored_paths: Vec<String> = restored
        .keys()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    assert_eq!(
        restored_paths,
        [
            "",
            "a",
            "a/b",
            "a/b/deep.txt",
            "nested",
            "nested/hard-third",
            "raw-\u{fffd}\u{fffd} name"
        ],
        "exactly the selected items and their parents"
    );
    for (path, item) in &restored {
        let mut expected = source_tree[path].clone();
        expected.link_group = None; // its other names were not restored
        assert_eq!(item, &expected, "{:?}", String::from_utf8_lossy(path));
    }
    let report = &reports[0];
    assert_eq!(value(&report.metadata, "files"), "2");
    assert_eq!(value(&report.metadata, "hardlinks"), "1");
    assert_eq!(value(&report.metadata, "directories"), "4");
    assert!(value(&report.metadata, "excluded").parse::<u64>().unwrap() > 10);
    assert_eq!(names(&target), ["data"]);
}

#[tokio::test]
async fn a_dry_run_reports_and_writes_nothing() {
    let engine = common::engine();
    let base = tempfile::tempdir().unwrap();
    let root = build_tree(base.path());
    let backups = backup(&engine, &[&root], config_for(&[&root]), 1 << 20)
        .await
        .unwrap();

    let target = base.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let mut opts = options(&target);
    opts.dry_run = true;
    let reports = restore(&engine, &pairs(&backups), &opts, Ending::Commit)
        .await
        .unwrap();
    assert!(
        names(&target).is_empty(),
        "a dry run wrote {:?}",
        names(&target)
    );
    for key in ["files", "directories", "symlinks", "hardlinks", "bytes"] {
        assert_eq!(
            value(&reports[0].metadata, key),
            value(&backups[0].metadata, key),
            "dry-run report {key}"
        );
    }
}

#[tokio::test]
async fn a_non_empty_target_needs_overwrite_and_then_merges_or_replaces() {
    let engine = common::engine();
    let base = tempfile::tempdir().unwrap();
    let root = build_tree(base.path());
    let source_tree = without_specials(snapshot(&root));
    let backups = backup(&engine, &[&root], config_for(&[&root]), 1 << 20)
        .await
        .unwrap();

    let target = base.path().join("target");
    std::fs::create_dir_all(target.join("data/a/b")).unwrap();
    std::fs::write(target.join("keep"), b"not part of the backup").unwrap();
    std::fs::write(target.join("data/extra"), b"only in the target").unwrap();
    std::fs::write(target.join("data/a/b/deep.txt"), b"stale content").unwrap();
    std::fs::create_dir(target.join("data/zero")).unwrap(); // a directory where the backup has a file
    let before = snapshot(&target);

    let refused = restore(&engine, &pairs(&backups), &options(&target), Ending::Commit).await;
    let message = assert_error(refused, "restore into a non-empty target", |e| {
        matches!(e, PluginErrorKind::AlreadyExists(_))
    });
    assert!(message.contains("not empty"), "{message}");
    assert_eq!(
        snapshot(&target),
        before,
        "a refused restore changed the target"
    );

    // Merge: the backup's items replace their namesakes; everything else stays.
    let mut opts = options(&target);
    opts.overwrite = true;
    restore(&engine, &pairs(&backups), &opts, Ending::Commit)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(target.join("keep")).unwrap(),
        b"not part of the backup"
    );
    let mut merged = snapshot(&target.join("data"));
    let extra = merged
        .remove(b"extra".as_slice())
        .expect("an item only in the target survives a merge");
    assert_eq!(extra.node, before[b"data/extra".as_slice()].node);
    assert_same_tree(&source_tree, &merged);

    // Replace: the artifact's directory holds exactly the backup.
    std::fs::write(target.join("data/extra"), b"again").unwrap();
    opts.mode = RestoreMode::Replace;
    restore(&engine, &pairs(&backups), &opts, Ending::Commit)
        .await
        .unwrap();
    assert_same_tree(&source_tree, &snapshot(&target.join("data")));
    assert_eq!(names(&target), ["data", "keep"]);
}

#[tokio::test]
async fn abort_leaves_the_target_as_it_was() {
    let engine = common::engine();
    let base = tempfile::tempdir().unwrap();
    let root = build_tree(base.path());
    let backups = backup(&engine, &[&root], config_for(&[&root]), 1 << 20)
        .await
        .unwrap();

    let target = base.path().join("target");
    std::fs::create_dir_all(target.join("data")).unwrap();
    std::fs::write(target.join("data/existing"), b"untouched").unwrap();
    let before = snapshot(&target);
    let mut opts = options(&target);
    opts.overwrite = true;
    restore(&engine, &pairs(&backups), &opts, Ending::Abort)
        .await
        .unwrap();
    let mut after = snapshot(&target);
    // Creating and removing staging touches the target directory's own mtime, nothing else.
    after.get_mut(&Vec::new()).unwrap().mtime = before[&Vec::new()].mtime;
    assert_eq!(after, before);
}

#[tokio::test]
async fn corrupted_streams_fail_as_corrupt_and_are_never_committed() {
    let engine = common::engine();
    let base = tempfile::tempdir().unwrap();
    let root = build_tree(base.path());
    let backups = backup(&engine, &[&root], config_for(&[&root]), 1 << 20)
        .await
        .unwrap();
    let good = &backups[0].bytes;
    let artifact = backups[0].artifact.clone();

    let flip = |offset: usize| {
        let mut bytes = good.clone();
        bytes[offset] ^= 0x20;
        bytes
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a flipped magic byte", flip(2)),
        ("a flipped version byte", flip(8)),
        ("a flipped record tag", flip(12)),
        ("a flipped header length", flip(14)),
        ("a flipped mode byte in the first header", flip(12 + 5 + 2)),
        ("a flipped byte in the trailer", flip(good.len() - 10)),
        ("a flipped header crc", flip(good.len() - 1)),
        ("truncated after the magic", good[..12].to_vec()),
        ("truncated inside the first header", good[..30].to_vec()),
        ("truncated inside a file", good[..good.len() / 2].to_vec()),
        (
            "truncated before the trailer's last byte",
            good[..good.len() - 1].to_vec(),
        ),
        (
            "bytes after the trailer",
            [good.as_slice(), b"junk"].concat(),
        ),
        ("an empty stream", Vec::new()),
    ];
    for (case, bytes) in cases {
        let target = base.path().join("target");
        std::fs::create_dir_all(&target).unwrap();
        let result = restore(
            &engine,
            &[(artifact.clone(), bytes)],
            &options(&target),
            Ending::Commit,
        )
        .await;
        assert_error(result, case, |e| matches!(e, PluginErrorKind::Corrupt(_)));
        assert!(
            names(&target).is_empty(),
            "{case}: the target holds {:?}",
            names(&target)
        );
    }
}

#[tokio::test]
async fn a_symlink_pointing_outside_is_stored_as_a_link() {
    let engine = common::engine();
    let base = tempfile::tempdir().unwrap();
    let outside = base.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"OUTSIDE-SECRET-CONTENT").unwrap();
    let root = base.path().join("links");
    std::fs::create_dir(&root).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), root.join("absolute")).unwrap();
    std::os::unix::fs::symlink("../outside", root.join("relative-dir")).unwrap();

    let backups = backup(&engine, &[&root], config_for(&[&root]), 1 << 20)
        .await
        .unwrap();
    assert!(
        !backups[0]
            .bytes
            .windows(22)
            .any(|w| w == b"OUTSIDE-SECRET-CONTENT")
    );
    assert_eq!(value(&backups[0].metadata, "files"), "0");
    assert_eq!(value(&backups[0].metadata, "symlinks"), "2");

    let target = base.path().join("target");
    std::fs::create_dir(&target).unwrap();
    restore(&engine, &pairs(&backups), &options(&target), Ending::Commit)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_link(target.join("links/absolute")).unwrap(),
        outside.join("secret")
    );
    assert_eq!(
        std::fs::read_link(target.join("links/relative-dir")).unwrap(),
        Path::new("../outside")
    );
    assert_eq!(
        names(&outside),
        ["secret"],
        "the restore wrote through a link"
    );
}

#[tokio::test]
async fn include_exclude_and_one_artifact_per_root() {
    let engine = common::engine();
    let base = tempfile::tempdir().unwrap();
    let root = build_tree(base.path());
    let second = base.path().join("second");
    std::fs::create_dir_all(second.join("logs")).unwrap();
    std::fs::write(second.join("logs/app.log"), b"log").unwrap();
    std::fs::write(second.join("logs/app.tmp"), b"tmp").unwrap();

    let mut config = config_for(&[&root, &second]);
    config["include"] = json!(["data/a/**", "second"]);
    config["exclude"] = json!(["**/*.tmp", "data/a/empty"]);
    let backups = backup(&engine, &[&root, &second], config, 1 << 20)
        .await
        .unwrap();
    let listed: Vec<&str> = backups.iter().map(|b| b.artifact.name.as_str()).collect();
    assert_eq!(listed, ["data", "second"]);

    let target = base.path().join("target");
    std::fs::create_dir(&target).unwrap();
    restore(&engine, &pairs(&backups), &options(&target), Ending::Commit)
        .await
        .unwrap();
    let data: Vec<String> = snapshot(&target.join("data"))
        .keys()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    assert_eq!(data, ["", "a", "a/b", "a/b/deep.txt", "a/hard"]);
    let second_restored: Vec<String> = snapshot(&target.join("second"))
        .keys()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    assert_eq!(second_restored, ["", "logs", "logs/app.log"]);
}

#[tokio::test]
async fn a_file_that_changes_size_while_read_fails_its_artifact() {
    let engine = common::engine();
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("live");
    std::fs::create_dir(&root).unwrap();
    for (name, change) in [("grows.log", 1i64), ("shrinks.log", -1)] {
        std::fs::write(root.join(name), vec![b'x'; 1 << 20]).unwrap();
        let mut source = start(&engine, &[(&root, DirAccess::Read)], config_for(&[&root]))
            .await
            .unwrap();
        let session = source.begin_backup(None).await.unwrap();
        let reader = source.open(&session, "live").await.unwrap();
        source.read(&reader, 64 << 10).await.unwrap().unwrap();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(root.join(name))
            .unwrap();
        file.set_len(((1 << 20) + change * 4096) as u64).unwrap();
        let mut outcome = Ok(());
        while outcome.is_ok() {
            match source.read(&reader, 64 << 10).await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => outcome = Err(e),
            }
        }
        let error = outcome
            .expect_err("a file that changed size was stored")
            .to_string();
        assert!(
            error.contains(name) && error.contains("changed size"),
            "{error}"
        );
        std::fs::remove_file(root.join(name)).unwrap();
    }
}

#[tokio::test]
async fn bad_configurations_are_refused_with_the_field() {
    let engine = common::engine();
    let base = tempfile::tempdir().unwrap();
    let one = base.path().join("one/same");
    let two = base.path().join("two/same");
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&two).unwrap();

    let clash = backup(&engine, &[&one, &two], config_for(&[&one, &two]), 1 << 20)
        .await
        .map(|b| b.len());
    let message = assert_error(clash, "two roots named alike", |e| {
        matches!(e, PluginErrorKind::Config(_))
    });
    assert!(message.contains("same"), "{message}");

    for (config, field) in [
        (
            json!({ "paths": [one.to_string_lossy()], "follow_symlinks": true }),
            None,
        ),
        (
            json!({ "paths": [one.to_string_lossy()], "include": ["a[" ] }),
            Some("include[0]"),
        ),
        (json!({ "paths": [] }), Some("paths")),
    ] {
        let started = start(&engine, &[(&one, DirAccess::Read)], config.clone()).await;
        match started {
            Err(PluginError::Plugin {
                error: PluginErrorKind::Config(e),
                ..
            }) => {
                if let Some(field) = field {
                    assert_eq!(e.field.as_deref(), Some(field), "{config}");
                }
            }
            Err(other) => panic!("{config}: expected a configuration error, got {other}"),
            Ok(_) => panic!("{config}: accepted"),
        }
    }

    let target = base.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let mut source = start(
        &engine,
        &[(&target, DirAccess::ReadWrite)],
        config_for(&[&target]),
    )
    .await
    .unwrap();
    let mut opts = options(&base.path().join("not-granted"));
    let refused = source.begin_restore(&opts).await.map(|_| ());
    assert_error(refused, "an ungranted target", |e| {
        matches!(e, PluginErrorKind::Config(_))
    });
    opts.target = None;
    let mut source = start(
        &engine,
        &[(&target, DirAccess::ReadWrite)],
        config_for(&[&target]),
    )
    .await
    .unwrap();
    let refused = source.begin_restore(&opts).await.map(|_| ());
    assert_error(refused, "no target", |e| {
        matches!(e, PluginErrorKind::Config(_))
    });
}
