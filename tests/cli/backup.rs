//! The files pipeline end to end through the real binary: run, snapshots, restore, verify,
//! wrong keys, corruption, killed runs and changed pipelines.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::tree;
use crate::{stderr, stdout};

pub const PASSPHRASE: &str = "correct horse battery staple";
pub const CHAIN: &str = "[[transform]]\ntype = \"checksum\"\n\n[[transform]]\ntype = \"zstd\"\nlevel = 3\n\n[[transform]]\ntype = \"aes-gcm\"\n";

/// The `[sink]` table of a repository in `repo/` next to the pipeline.
pub const LOCAL_SINK: &str = "[sink]\ntype = \"local\"\npath = \"repo\"\n";

/// A directory with a data tree, a pipeline file backing it up, and a repository.
pub struct Setup {
    pub dir: tempfile::TempDir,
    sink: String,
}

impl Setup {
    pub fn new(chain: &str) -> Self {
        Self::with_sink(chain, LOCAL_SINK)
    }

    /// A pipeline storing into the given `[sink]` table.
    pub fn with_sink(chain: &str, sink: &str) -> Self {
        let setup = Setup {
            dir: tempfile::tempdir().unwrap(),
            sink: sink.to_string(),
        };
        std::fs::create_dir(setup.data()).unwrap();
        setup.write_pipeline(chain);
        setup
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    pub fn pipeline(&self) -> PathBuf {
        self.dir.path().join("pipeline.toml")
    }

    /// Points the pipeline at another `[sink]` table, keeping the chain.
    pub fn write_sink(&self, sink: &str) {
        let text = std::fs::read_to_string(self.pipeline()).unwrap();
        let head = &text[..text.find("[sink]").unwrap()];
        std::fs::write(self.pipeline(), format!("{head}{sink}")).unwrap();
    }

    pub fn write_pipeline(&self, chain: &str) {
        let text = format!(
            "[repository]\npassphrase = \"${{env:TEST_PASSPHRASE}}\"\n\n[source]\ntype = \"files\"\npaths = [\"data\"]\n\n{chain}\n{}",
            self.sink
        );
        std::fs::write(self.pipeline(), text).unwrap();
    }

    pub fn command(&self, args: &[&str], passphrase: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runner"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("RUNNER_CACHE_DIR", crate::common::cache_dir())
            .env("TEST_PASSPHRASE", passphrase);
        cmd
    }

    pub fn runner(&self, args: &[&str]) -> Output {
        self.command(args, PASSPHRASE).output().unwrap()
    }

    /// Runs and expects success.
    pub fn ok(&self, args: &[&str]) -> String {
        crate::succeeded(&self.runner(args), args)
    }

    pub fn snapshots(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["snapshots", "pipeline.toml", "--json"])).unwrap()
    }

    /// The first snapshot manifest in the repository, relative to it.
    pub fn manifest(&self) -> PathBuf {
        self.repo_files()
            .into_iter()
            .find(|p| p.starts_with("snapshots"))
            .expect("a snapshot manifest")
    }

    /// Files under the repository, relative.
    pub fn repo_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        list(&self.repo(), &self.repo(), &mut files);
        files.sort();
        files
    }
}

fn list(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            list(root, &path, out);
        } else {
            out.push(path.strip_prefix(root).unwrap().to_path_buf());
        }
    }
}

fn is_empty_dir(path: &Path) -> bool {
    !path.exists() || std::fs::read_dir(path).unwrap().next().is_none()
}

/// Runs a command to completion and returns its output with its peak RSS in bytes.
///
/// The peak is the child's own VmHWM, polled from /proc while it runs: `ru_maxrss` would
/// also count the test process, whose address space the child borrows until `exec`.
pub fn run_measured(mut cmd: Command) -> (Output, u64) {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = std::thread::spawn({
        let done = done.clone();
        move || {
            let mut peak = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                // Gone, or a zombie without memory: the last value read stands.
                let Some(kib) = std::fs::read_to_string(&status_file).ok().and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("VmHWM:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                }) else {
                    break;
                };
                peak = peak.max(kib * 1024);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            peak
        }
    });
    let output = child.wait_with_output().unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    (output, poller.join().unwrap())
}

#[test]
fn a_large_tree_round_trips_exactly_with_flat_memory() {
    let setup = Setup::new(CHAIN);
    tree::generate(&setup.data(), 1 << 30, 10_000);

    let (output, run_rss) = run_measured(setup.command(&["run", "pipeline.toml"], PASSPHRASE));
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(stdout(&output).contains("committed"), "{}", stdout(&output));

    let target = setup.dir.path().join("restored");
    let (output, restore_rss) = run_measured(setup.command(
        &[
            "restore",
            "pipeline.toml",
            "--target",
            target.to_str().unwrap(),
        ],
        PASSPHRASE,
    ));
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    tree::assert_same(&setup.data(), &target.join("data"));

    println!(
        "peak RSS: run {} MiB, restore {} MiB",
        run_rss >> 20,
        restore_rss >> 20
    );
    assert!(
        run_rss < 200 << 20,
        "runner run peaked at {} MiB",
        run_rss >> 20
    );
    assert!(
        restore_rss < 200 << 20,
        "runner restore peaked at {} MiB",
        restore_rss >> 20
    );

    let verified = setup.ok(&["verify", "pipeline.toml", "--read-data"]);
    assert!(verified.contains(": ok"), "{verified}");
}

#[test]
fn only_restores_matching_paths_and_dry_run_writes_nothing() {
    let setup = Setup::new(CHAIN);
    tree::generate(&setup.data(), 0, 50);
    setup.ok(&["run", "pipeline.toml"]);

    let target = setup.dir.path().join("partial");
    setup.ok(&[
        "restore",
        "pipeline.toml",
        "--target",
        "partial",
        "--only",
        "data/a/**",
    ]);
    assert!(target.join("data/a/b/c/deep.txt").exists());
    assert!(target.join("data/a/original").exists());
    assert!(
        !target.join("data/many").exists(),
        "--only restored more than asked"
    );
    assert!(!target.join("data/zero-bytes").exists());

    let dry = setup.dir.path().join("dry");
    std::fs::create_dir(&dry).unwrap();
    let listing = setup.ok(&["restore", "pipeline.toml", "--target", "dry", "--dry-run"]);
    assert!(listing.contains("would restore"), "{listing}");
    assert!(is_empty_dir(&dry), "--dry-run wrote into the target");
}

#[test]
fn a_non_empty_target_is_refused_unless_told() {
    let setup = Setup::new(CHAIN);
    tree::generate(&setup.data(), 0, 0);
    setup.ok(&["run", "pipeline.toml"]);
    let target = setup.dir.path().join("busy");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep-me"), b"precious").unwrap();
    let output = setup.runner(&["restore", "pipeline.toml", "--target", "busy"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("not empty"), "{}", stderr(&output));
    assert_eq!(std::fs::read(target.join("keep-me")).unwrap(), b"precious");
    setup.ok(&[
        "restore",
        "pipeline.toml",
        "--target",
        "busy",
        "--overwrite",
    ]);
    tree::assert_same(&setup.data(), &target.join("data"));
}

#[test]
fn a_wrong_passphrase_fails_at_once_and_writes_nothing() {
    let setup = Setup::new(CHAIN);
    tree::generate(&setup.data(), 0, 10);
    setup.ok(&["run", "pipeline.toml"]);
    let before = setup.repo_files();
    let target = setup.dir.path().join("target");
    for args in [
        vec!["run", "pipeline.toml"],
        vec!["restore", "pipeline.toml", "--target", "target"],
        vec!["verify", "pipeline.toml", "--read-data"],
        vec!["snapshots", "pipeline.toml"],
    ] {
        let output = setup.command(&args, "not the passphrase").output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(6),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("wrong passphrase"),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            !stderr(&output).contains("not the passphrase"),
            "the passphrase leaked into the error"
        );
    }
    assert_eq!(
        setup.repo_files(),
        before,
        "a failed unlock wrote into the repository"
    );
    assert!(
        is_empty_dir(&target),
        "a failed unlock wrote into the target"
    );
}

/// Damages a copy of a repository and expects verify --read-data and restore to fail
/// naming the place, with nothing left in the restore target.
fn assert_damage_detected(setup: &Setup, damage: impl FnOnce(&Path), expected: &[&str]) {
    let copy = tempfile::tempdir().unwrap();
    let repo = copy.path().join("repo");
    let status = Command::new("cp")
        .args(["-a", setup.repo().to_str().unwrap(), repo.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    damage(&repo);
    let pipeline = copy.path().join("pipeline.toml");
    std::fs::write(
        &pipeline,
        std::fs::read_to_string(setup.pipeline()).unwrap().replace(
            "paths = [\"data\"]",
            &format!("paths = [{:?}]", setup.data()),
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_runner"))
            .args(args)
            .current_dir(copy.path())
            .env("RUNNER_CACHE_DIR", crate::common::cache_dir())
            .env("TEST_PASSPHRASE", PASSPHRASE)
            .output()
            .unwrap()
    };
    let verify = run(&["verify", "pipeline.toml", "--read-data"]);
    let verify_text = format!("{}{}", stdout(&verify), stderr(&verify));
    assert_eq!(
        verify.status.code(),
        Some(5),
        "verify should fail with the integrity code:\n{verify_text}"
    );
    for part in expected {
        assert!(
            verify_text.contains(part),
            "verify output lacks {part:?}:\n{verify_text}"
        );
    }
    let restore = run(&["restore", "pipeline.toml", "--target", "target"]);
    assert!(
        !restore.status.success(),
        "restore of a damaged snapshot succeeded"
    );
    let target = copy.path().join("target");
    assert!(
        is_empty_dir(&target),
        "a failed restore left files in the target: {:?}",
        std::fs::read_dir(&target).map(|d| d.count())
    );
}

#[test]
fn damaged_repositories_are_detected_and_named() {
    let setup = Setup::new(CHAIN);
    tree::generate(&setup.data(), 3 << 20, 20);
    setup.ok(&["run", "pipeline.toml"]);
    let objects: Vec<PathBuf> = setup
        .repo_files()
        .into_iter()
        .filter(|p| p.starts_with("data"))
        .collect();
    let manifest = setup.manifest();
    let object = objects[0].clone();

    assert_damage_detected(
        &setup,
        |repo| {
            let path = repo.join(&object);
            let mut bytes = std::fs::read(&path).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x01;
            std::fs::write(&path, bytes).unwrap();
        },
        &["artifact data", "object", "stored object"],
    );

    assert_damage_detected(
        &setup,
        |repo| {
            let path = repo.join(&object);
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
        },
        &["artifact data", "object"],
    );

    assert_damage_detected(
        &setup,
        |repo| std::fs::remove_file(repo.join(&object)).unwrap(),
        &["artifact data", "missing"],
    );

    assert_damage_detected(
        &setup,
        |repo| {
            let path = repo.join(&manifest);
            let mut bytes = std::fs::read(&path).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 0x40;
            std::fs::write(&path, bytes).unwrap();
        },
        &["snapshots/", "does not authenticate"],
    );

    // A manifest from another repository (same passphrase, other master key).
    let other = Setup::new(CHAIN);
    tree::generate(&other.data(), 0, 1);
    other.ok(&["run", "pipeline.toml"]);
    let foreign_bytes = std::fs::read(other.repo().join(other.manifest())).unwrap();
    assert_damage_detected(
        &setup,
        |repo| {
            std::fs::write(repo.join(&manifest), &foreign_bytes).unwrap();
        },
        &["does not authenticate"],
    );
}

/// A stage that gives more than the manifest recorded for it is stopped there: a damaged
/// object (a decompression bomb) cannot fill memory or the target before the digests are
/// compared at its end.
#[test]
fn a_stage_giving_more_than_recorded_is_stopped_at_the_recorded_size() {
    let setup = Setup::new("");
    // No key, so the manifest is plain JSON and the test can lower a recorded size.
    std::fs::write(
        setup.pipeline(),
        format!("[source]\ntype = \"files\"\npaths = [\"data\"]\n\n[[transform]]\ntype = \"zstd\"\n\n{LOCAL_SINK}"),
    )
    .unwrap();
    std::fs::write(setup.data().join("zeros"), vec![0u8; 8 << 20]).unwrap();
    setup.ok(&["run", "pipeline.toml"]);
    let manifest = setup.repo().join(setup.manifest());
    let mut edited: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let recorded = &mut edited["artifacts"][0]["objects"][0]["stages"][0]["bytes"];
    assert!(recorded.as_u64().unwrap() > 8 << 20, "{recorded}");
    *recorded = (1u64 << 20).into();
    std::fs::write(&manifest, serde_json::to_vec(&edited).unwrap()).unwrap();

    let restore = setup.runner(&["restore", "pipeline.toml", "--target", "target"]);
    let text = stderr(&restore);
    assert!(!restore.status.success(), "{text}");
    assert!(
        text.contains("stage 0 (source) mismatch: expected 1048576 bytes"),
        "{text}"
    );
    // Decoder output comes in pieces of at most 1 MiB: the first piece past the recorded
    // size ends the decode.
    let got: u64 = text
        .split(", got ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in:\n{text}"));
    assert!(
        got > 1 << 20 && got <= 2 << 20,
        "the decode went on to {got} bytes:\n{text}"
    );
    assert!(is_empty_dir(&setup.dir.path().join("target")));
}

#[test]
fn killed_runs_leave_no_snapshot_and_earlier_ones_intact() {
    let setup = Setup::new(CHAIN);
    tree::generate(&setup.data(), 40 << 20, 100);
    setup.ok(&["run", "pipeline.toml"]);
    assert_eq!(setup.snapshots().len(), 1);

    for failpoint in ["after-upload:2", "before-manifest", "mid-manifest"] {
        let output = setup
            .command(&["run", "pipeline.toml"], PASSPHRASE)
            .env("RUNNER_TEST_FAILPOINT", failpoint)
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            output.status.signal(),
            Some(libc::SIGKILL),
            "{failpoint}: the failpoint did not fire: {}",
            stderr(&output)
        );
        assert_eq!(
            setup.snapshots().len(),
            1,
            "{failpoint}: a killed run left a snapshot"
        );
    }
    // And at a random moment.
    for delay_ms in [150, 400, 900] {
        let mut child = setup
            .command(&["run", "pipeline.toml"], PASSPHRASE)
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        // A kill after the manifest was written (while history, lock release and the
        // summary still run) leaves a complete snapshot; `verify --all --read-data` below
        // proves it whole. A kill before it leaves none.
        let count = setup.snapshots().len();
        if status.success() {
            assert_eq!(count, 2, "a successful run committed no snapshot");
        } else {
            assert!(
                count == 1 || count == 2,
                "kill after {delay_ms} ms: {count} snapshots"
            );
        }
        if count == 2 {
            break;
        }
    }
    let verified = setup.ok(&["verify", "pipeline.toml", "--all", "--read-data"]);
    assert!(!verified.contains("FAILED"), "{verified}");
    let first = setup.snapshots()[0]["id"].as_str().unwrap().to_string();
    setup.ok(&[
        "restore",
        "pipeline.toml",
        "--snapshot",
        &first[..8],
        "--target",
        "restored",
    ]);
    tree::assert_same(&setup.data(), &setup.dir.path().join("restored/data"));
}

#[test]
fn an_old_snapshot_restores_with_its_recorded_chain_after_the_pipeline_changed() {
    let setup = Setup::new(CHAIN);
    tree::generate(&setup.data(), 2 << 20, 30);
    setup.ok(&["run", "pipeline.toml"]);
    let old = setup.snapshots()[0]["id"].as_str().unwrap().to_string();

    // Different order, different level, no checksum.
    setup.write_pipeline("[[transform]]\ntype = \"zstd\"\nlevel = 19\n\n[[transform]]\ntype = \"aes-gcm\"\nsegment_size = 4096\n");
    setup.ok(&["run", "pipeline.toml"]);
    assert_eq!(setup.snapshots().len(), 2);

    setup.ok(&[
        "restore",
        "pipeline.toml",
        "--snapshot",
        &old,
        "--target",
        "old",
    ]);
    tree::assert_same(&setup.data(), &setup.dir.path().join("old/data"));
    setup.ok(&[
        "restore",
        "pipeline.toml",
        "--snapshot",
        "latest",
        "--target",
        "new",
    ]);
    tree::assert_same(&setup.data(), &setup.dir.path().join("new/data"));
    let verified = setup.ok(&["verify", "pipeline.toml", "--all", "--read-data"]);
    assert_eq!(verified.matches(": ok").count(), 2, "{verified}");
}

#[test]
fn snapshots_lists_manifests_with_sizes() {
    let setup = Setup::new(CHAIN);
    tree::generate(&setup.data(), 1 << 20, 5);
    setup.ok(&["run", "pipeline.toml", "--tag", "first"]);
    let listed = setup.snapshots();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["artifacts"], 1);
    assert_eq!(listed[0]["tags"][0], "first");
    assert!(listed[0]["bytes_in"].as_u64().unwrap() > 1 << 20);
    assert!(listed[0]["bytes_stored"].as_u64().unwrap() < listed[0]["bytes_in"].as_u64().unwrap());
    let table = setup.ok(&["snapshots", "pipeline.toml"]);
    assert!(
        table.contains(&listed[0]["id"].as_str().unwrap()[..8]),
        "{table}"
    );
}

#[test]
fn key_slots_can_be_added_used_and_removed_without_reencrypting() {
    let setup = Setup::new(CHAIN);
    tree::generate(&setup.data(), 0, 3);
    setup.ok(&["run", "pipeline.toml"]);
    let data_before: Vec<PathBuf> = setup
        .repo_files()
        .into_iter()
        .filter(|p| p.starts_with("data"))
        .collect();
    let output = setup
        .command(
            &[
                "key",
                "add",
                "pipeline.toml",
                "--new-passphrase",
                "${env:NEW_PASS}",
            ],
            PASSPHRASE,
        )
        .env("NEW_PASS", "second passphrase")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let slots: Vec<serde_json::Value> =
        serde_json::from_str(&setup.ok(&["key", "list", "pipeline.toml", "--json"])).unwrap();
    assert_eq!(slots.len(), 2);
    // The new passphrase opens the repository and restores the old data.
    let output = setup
        .command(
            &["restore", "pipeline.toml", "--target", "with-new-key"],
            "second passphrase",
        )
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    tree::assert_same(&setup.data(), &setup.dir.path().join("with-new-key/data"));
    // Remove the original slot; the old passphrase stops working, the new one still does.
    let original = slots
        .iter()
        .find(|s| s["label"] == "created with the repository")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    setup.ok(&["key", "remove", "pipeline.toml", &original]);
    assert_eq!(
        setup.runner(&["snapshots", "pipeline.toml"]).status.code(),
        Some(6)
    );
    let output = setup
        .command(
            &["key", "remove", "pipeline.toml", "x"],
            "second passphrase",
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let data_after: Vec<PathBuf> = setup
        .repo_files()
        .into_iter()
        .filter(|p| p.starts_with("data"))
        .collect();
    assert_eq!(data_before, data_after, "key changes must not rewrite data");
}
