//! Retention and prune end to end through the real binary, on a local and an S3 repository:
//! snapshots with recorded times (`run --time`), `prune --dry-run` deleting nothing,
//! `prune` leaving exactly the kept snapshots and removing orphans of a killed run,
//! `auto = true`, and `max_total_size`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::backup::{CHAIN, PASSPHRASE, Setup};
use crate::common::Prng;
use crate::common::s3_server::{self, S3Server};
use crate::{stderr, stdout};

const BUCKET: &str = "backups";

/// A pipeline with `retention` as its `[retention]` table, storing into `sink`.
fn setup(retention: &str, sink: &str) -> Setup {
    let setup = Setup::with_sink(&format!("{CHAIN}\n[retention]\n{retention}\n"), sink);
    write_random(&setup.data().join("a.bin"), 200 << 10, 1);
    std::fs::write(setup.data().join("note.txt"), "retention\n").unwrap();
    setup
}

fn write_random(path: &Path, size: usize, seed: u64) {
    std::fs::write(path, Prng::new(seed).bytes(size)).unwrap();
}

/// `runner …` in the setup's directory, in UTC, with the S3 secret available.
fn command(setup: &Setup, args: &[&str]) -> Command {
    let mut command = setup.command(args, PASSPHRASE);
    command
        .env("TZ", "UTC")
        .env("TEST_S3_SECRET", s3_server::SECRET_KEY);
    command
}

fn ok(setup: &Setup, args: &[&str]) -> String {
    crate::succeeded(&command(setup, args).output().unwrap(), args)
}

fn snapshots(setup: &Setup) -> Vec<serde_json::Value> {
    serde_json::from_str(&ok(setup, &["--json", "snapshots", "pipeline.toml"])).unwrap()
}

/// The recorded start times of the snapshots, oldest first.
fn snapshot_times(setup: &Setup) -> Vec<String> {
    snapshots(setup)
        .iter()
        .map(|s| s["time"].as_str().unwrap().to_string())
        .collect()
}

fn run_at(setup: &Setup, time: &str, tags: &[&str]) {
    let mut args = vec!["run", "pipeline.toml", "--time", time];
    for tag in tags {
        args.extend(["--tag", tag]);
    }
    ok(setup, &args);
}

/// A run killed after its objects are stored, before its manifest: orphans only.
fn killed_run(setup: &Setup) {
    let output: Output = command(setup, &["run", "pipeline.toml"])
        .env("RUNNER_TEST_FAILPOINT", "before-manifest")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGKILL),
        "the failpoint did not fire: {}",
        stderr(&output)
    );
}

/// Five snapshots over three days; `keep_daily = 2` and `keep_tag = ["keep"]` keep three.
const TIMES: [(&str, &[&str]); 5] = [
    ("2025-01-01 02:00", &["keep"]),
    ("2025-01-01 14:00", &[]),
    ("2025-01-02 03:00", &[]),
    ("2025-01-03 01:00", &[]),
    ("2025-01-03 05:00:30", &["other"]),
];
const KEPT: [&str; 3] = [
    "2025-01-01T02:00:00Z",
    "2025-01-02T03:00:00Z",
    "2025-01-03T05:00:30Z",
];
const POLICY: &str = "keep_daily = 2\nkeep_tag = [\"keep\"]\n";

/// Keys under `data/`, whatever the storage.
type Listing<'a> = dyn Fn() -> BTreeSet<String> + 'a;

/// The whole scenario on one repository: `data_keys` lists the objects under `data/`, `all_keys` every key.
fn prune_scenario(setup: &Setup, data_keys: &Listing<'_>, all_keys: &Listing<'_>) {
    for (time, tags) in TIMES {
        run_at(setup, time, tags);
    }
    let before_kill = data_keys();
    killed_run(setup);
    let orphans: BTreeSet<String> = data_keys().difference(&before_kill).cloned().collect();
    assert!(!orphans.is_empty(), "the killed run stored objects");
    assert_eq!(snapshots(setup).len(), 5);

    // Dry run: the report, and nothing deleted.
    let keys_before = all_keys();
    let report: serde_json::Value = serde_json::from_str(&ok(
        setup,
        &["prune", "pipeline.toml", "--dry-run", "--json"],
    ))
    .unwrap();
    assert_eq!(all_keys(), keys_before, "a dry run deleted something");
    assert_eq!(report["dry_run"], true);
    assert_eq!(
        (report["kept"].as_u64(), report["removed"].as_u64()),
        (Some(3), Some(2))
    );
    let reasons: Vec<(String, bool, String)> = report["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let reasons: Vec<&str> = s["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            (
                s["time"].as_str().unwrap().to_string(),
                s["keep"].as_bool().unwrap(),
                reasons.join(", "),
            )
        })
        .collect();
    let expected = [
        ("2025-01-03T05:00:30Z", true, "daily snapshot"),
        ("2025-01-03T01:00:00Z", false, ""),
        ("2025-01-02T03:00:00Z", true, "daily snapshot"),
        ("2025-01-01T14:00:00Z", false, ""),
        ("2025-01-01T02:00:00Z", true, "has tags [keep]"),
    ];
    let expected: Vec<(String, bool, String)> = expected
        .iter()
        .map(|(t, k, r)| (t.to_string(), *k, r.to_string()))
        .collect();
    assert_eq!(reasons, expected);
    let removed_objects: u64 = snapshots(setup)
        .iter()
        .filter(|s| !KEPT.contains(&s["time"].as_str().unwrap()))
        .map(|s| s["objects"].as_u64().unwrap())
        .sum();
    assert_eq!(
        report["unreferenced_objects"].as_u64().unwrap(),
        orphans.len() as u64 + removed_objects,
        "orphans of the killed run plus the objects of the two forgotten snapshots"
    );
    let human = ok(setup, &["prune", "pipeline.toml", "--dry-run"]);
    assert!(human.contains("would remove 2 of 5 snapshot(s)"), "{human}");
    assert!(human.contains("has tags [keep]"), "{human}");
    assert_eq!(all_keys(), keys_before, "a dry run deleted something");

    // The prune itself.
    let human = ok(setup, &["prune", "pipeline.toml"]);
    assert!(human.contains("removed 2 of 5 snapshot(s)"), "{human}");
    assert_eq!(snapshot_times(setup), KEPT);
    let left = data_keys();
    assert!(
        left.is_disjoint(&orphans),
        "orphans left: {:?}",
        left.intersection(&orphans)
    );
    let referenced: u64 = snapshots(setup)
        .iter()
        .map(|s| s["objects"].as_u64().unwrap())
        .sum();
    assert_eq!(
        left.len() as u64,
        referenced,
        "exactly the kept snapshots' objects remain"
    );
    let verified = ok(setup, &["verify", "pipeline.toml", "--all", "--read-data"]);
    assert_eq!(verified.matches(": ok").count(), 3, "{verified}");
    // Idempotent: nothing more to do.
    let again: serde_json::Value =
        serde_json::from_str(&ok(setup, &["--json", "prune", "pipeline.toml"])).unwrap();
    assert_eq!(
        (
            again["removed"].as_u64(),
            again["unreferenced_objects"].as_u64()
        ),
        (Some(0), Some(0))
    );
}

fn local_keys(root: PathBuf, under: &'static str) -> Box<Listing<'static>> {
    Box::new(move || {
        let mut keys = BTreeSet::new();
        walk(&root, &root.join(under), &mut keys);
        keys
    })
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(root, &path, out);
        } else {
            out.insert(
                path.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
}

#[test]
fn prune_keeps_the_policy_and_removes_orphans_on_a_local_repository() {
    let setup = setup(POLICY, crate::backup::LOCAL_SINK);
    // Objects of other writers of the repository, which prune must never touch. (Locks
    // are real now: an unreadable planted one would block the prune, as it should.)
    let repo = setup.repo();
    let protected = ["history/2025-01-01.json"];
    let data_keys = local_keys(repo.clone(), "data");
    let all_keys = local_keys(repo.clone(), "");
    std::fs::create_dir_all(&repo).unwrap();
    prune_scenario(
        &setup,
        &|| {
            // Written on first use, after the repository exists.
            for key in protected {
                let path = repo.join(key);
                if !path.exists() && repo.join("config").exists() {
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(path, "not prune's").unwrap();
                }
            }
            data_keys()
        },
        &all_keys,
    );
    let left = all_keys();
    for key in protected.iter().chain(&["config"]) {
        assert!(left.contains(*key), "{key} was deleted: {left:?}");
    }
    assert!(left.iter().any(|k| k.starts_with("keys/")), "{left:?}");
    // Every run's own history record stays too.
    assert!(
        left.iter().filter(|k| k.starts_with("history/")).count() > 3,
        "{left:?}"
    );
}

#[test]
fn prune_keeps_the_policy_and_removes_orphans_on_s3() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path());
    server.create_bucket(BUCKET);
    let sink = format!(
        "[sink]\ntype = \"s3\"\nbucket = \"{BUCKET}\"\nprefix = \"runner/prune\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"${{env:TEST_S3_SECRET}}\"\n",
        server.endpoint(),
        s3_server::ACCESS_KEY
    );
    let setup = setup(POLICY, &sink);
    let keys = |prefix: &'static str| {
        let server = &server;
        move || -> BTreeSet<String> {
            server
                .objects(BUCKET)
                .into_iter()
                .map(|(key, _)| key)
                .filter(|key| key.starts_with(prefix))
                .collect()
        }
    };
    prune_scenario(&setup, &keys("runner/prune/data/"), &keys(""));
    let left = keys("")();
    assert!(left.contains("runner/prune/config"), "{left:?}");
}

#[test]
fn auto_prunes_after_each_committed_run() {
    let setup = setup("keep_last = 2\nauto = true\n", crate::backup::LOCAL_SINK);
    for (i, time) in ["2025-03-01 10:00", "2025-03-02 10:00", "2025-03-03 10:00"]
        .iter()
        .enumerate()
    {
        let output = ok(&setup, &["run", "pipeline.toml", "--time", time]);
        assert!(output.contains("snapshot"), "{output}");
        let kept = if i < 2 {
            "removed 0 of"
        } else {
            "removed 1 of 3"
        };
        assert!(output.contains(kept), "run {i}: {output}");
        assert_eq!(snapshots(&setup).len(), (i + 1).min(2));
    }
    assert_eq!(
        snapshot_times(&setup),
        ["2025-03-02T10:00:00Z", "2025-03-03T10:00:00Z"]
    );
    // JSON: the run's summary, then the prune event.
    let output = ok(
        &setup,
        &[
            "--json",
            "run",
            "pipeline.toml",
            "--time",
            "2025-03-04 10:00",
        ],
    );
    let events: Vec<serde_json::Value> = output
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.last().unwrap()["event"], "prune", "{output}");
    assert_eq!(events.last().unwrap()["removed"], 1, "{output}");
    let referenced: u64 = snapshots(&setup)
        .iter()
        .map(|s| s["objects"].as_u64().unwrap())
        .sum();
    assert_eq!(local_keys(setup.repo(), "data")().len() as u64, referenced);
    ok(&setup, &["verify", "pipeline.toml", "--all", "--read-data"]);

    // Without auto, a run prunes nothing.
    let manual = self::setup("keep_last = 1\n", crate::backup::LOCAL_SINK);
    run_at(&manual, "2025-03-01 10:00", &[]);
    let output = ok(&manual, &["run", "pipeline.toml"]);
    assert!(!output.contains("removed"), "{output}");
    assert_eq!(snapshots(&manual).len(), 2);
}

#[test]
fn max_total_size_keeps_the_newest_within_budget_and_never_the_newest_alone() {
    // Each snapshot stores ~200 KiB (random data through zstd and aes-gcm).
    let setup = setup(
        "keep_last = 10\nmax_total_size = \"500KiB\"\n",
        crate::backup::LOCAL_SINK,
    );
    for time in ["2025-05-01 00:00", "2025-05-02 00:00", "2025-05-03 00:00"] {
        run_at(&setup, time, &[]);
    }
    let sizes: Vec<u64> = snapshots(&setup)
        .iter()
        .map(|s| s["bytes_stored"].as_u64().unwrap())
        .collect();
    assert!(
        sizes.iter().all(|&s| s > 200 << 10 && s < 210 << 10),
        "{sizes:?}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&ok(&setup, &["--json", "prune", "pipeline.toml"])).unwrap();
    assert_eq!(report["removed"], 1, "{report}");
    assert_eq!(report["snapshots"][2]["over_budget"], true, "{report}");
    assert_eq!(
        snapshot_times(&setup),
        ["2025-05-02T00:00:00Z", "2025-05-03T00:00:00Z"]
    );
    // A newest snapshot alone over the budget stays; every older one goes.
    write_random(&setup.data().join("big.bin"), 600 << 10, 2);
    run_at(&setup, "2025-05-04 00:00", &[]);
    let human = ok(&setup, &["prune", "pipeline.toml"]);
    assert!(
        human.contains("over max_total_size (kept by last snapshot)"),
        "{human}"
    );
    assert_eq!(snapshot_times(&setup), ["2025-05-04T00:00:00Z"]);
    ok(&setup, &["verify", "pipeline.toml", "--all", "--read-data"]);
}

#[test]
fn prune_without_a_policy_and_bad_times_are_usage_errors() {
    let setup = Setup::new(CHAIN);
    std::fs::write(setup.data().join("f.txt"), "x").unwrap();
    setup.ok(&["run", "pipeline.toml"]);
    let output = setup.runner(&["prune", "pipeline.toml"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("has no [retention] table"),
        "{}",
        stderr(&output)
    );
    let output = setup.runner(&["run", "pipeline.toml", "--time", "last tuesday"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("expected \"YYYY-MM-DD HH:MM[:SS]\""),
        "{}",
        stderr(&output)
    );
    assert_eq!(setup.snapshots().len(), 1, "{}", stdout(&output));
}
