//! Repository locks through the real binary: concurrent runs on a local and an S3
//! repository (one waits or exits with code 4 naming the holder), readers beside a run,
//! exclusive locks blocking everyone, stale locks of killed runs, `runner unlock`, and a
//! run that lost its lock committing nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::backup::{CHAIN, PASSPHRASE, Setup};
use crate::common::background::{Gate, Running};
use crate::common::s3_server::{self, S3Server};
use crate::remote::{self, BUCKET};
use crate::{stderr, stdout};

const LOCKED: i32 = 4;

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

fn write_data(setup: &Setup) {
    for i in 0..8 {
        std::fs::write(
            setup.data().join(format!("file-{i}.txt")),
            format!("content {i}\n").repeat(1000 * (i + 1)),
        )
        .unwrap();
    }
}

/// How a test runs `runner` against one repository (local, or S3 with its credentials).
type Runner<'a> = &'a dyn Fn(&[&str]) -> Command;

fn ok(runner: Runner, args: &[&str]) -> String {
    crate::succeeded(&runner(args).output().unwrap(), args)
}

fn snapshot_count(runner: Runner) -> usize {
    serde_json::from_str::<Vec<serde_json::Value>>(&ok(
        runner,
        &["snapshots", "pipeline.toml", "--json"],
    ))
    .unwrap()
    .len()
}

/// Two runs at once: without --lock-wait the second exits 4 naming the first; readers
/// work beside the run; with --lock-wait the second waits and both commit.
fn concurrent_runs(runner: Runner, dir: &Path, lock_objects: &dyn Fn() -> Vec<Vec<u8>>) {
    ok(runner, &["run", "pipeline.toml"]);

    let gate = Gate::new(dir, "go");
    let mut first = runner(&["run", "pipeline.toml"]);
    gate.arm(&mut first);
    let first = Running::spawn(first);
    let first_pid = gate.wait_paused(&first);
    let held = lock_objects();
    assert_eq!(
        held.len(),
        1,
        "one lock object while the first run holds it"
    );
    // The repository is encrypted: the lock is sealed, its holder unreadable to the store.
    assert!(held[0].starts_with(b"RUNNER-LOCK-SEALED-1\n"));
    assert!(
        !held[0]
            .windows(hostname().len())
            .any(|w| w == hostname().as_bytes())
    );

    // No wait: exit code 4, naming the holder.
    let second = runner(&["run", "pipeline.toml"]).output().unwrap();
    assert_eq!(second.status.code(), Some(LOCKED), "{}", stderr(&second));
    let message = stderr(&second);
    let holder = format!("`run` (append lock, pid {first_pid} on {}", hostname());
    assert!(message.contains(&holder), "{message}");
    assert!(message.contains("--lock-wait"), "{message}");

    // Readers are not blocked by a run.
    ok(runner, &["verify", "pipeline.toml", "--read-data"]);
    let target = dir.join("restored");
    ok(
        runner,
        &[
            "restore",
            "pipeline.toml",
            "--target",
            target.to_str().unwrap(),
        ],
    );
    crate::common::tree::assert_same(&dir.join("data"), &target.join("data"));

    // With --lock-wait the second run waits for the first, then commits too.
    let waiting = Running::spawn(runner(&["run", "pipeline.toml", "--lock-wait", "2m"]));
    waiting.wait_for_line("waiting up to 2m 0s for the append lock");
    gate.open();
    let (code, out, err) = first.finish();
    assert_eq!(code, Some(0), "first run: {out}{err}");
    let (code, out, err) = waiting.finish();
    assert_eq!(code, Some(0), "waiting run: {out}{err}");
    assert!(out.contains("committed"), "{out}");

    assert_eq!(snapshot_count(runner), 3);
    let verified = ok(runner, &["verify", "pipeline.toml", "--all", "--read-data"]);
    assert_eq!(verified.matches(": ok").count(), 3, "{verified}");
    assert!(lock_objects().is_empty(), "every lock was released");
}

fn local_lock_objects(setup: &Setup) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(setup.repo().join("locks")) else {
        return Vec::new();
    };
    entries
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect()
}

#[test]
fn concurrent_runs_on_a_local_repository_wait_or_exit_with_the_lock_code() {
    let setup = Setup::new(CHAIN);
    write_data(&setup);
    let runner = |args: &[&str]| setup.command(args, PASSPHRASE);
    concurrent_runs(&runner, setup.dir.path(), &|| local_lock_objects(&setup));
}

#[test]
fn concurrent_runs_on_an_s3_repository_wait_or_exit_with_the_lock_code() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path());
    server.create_bucket(BUCKET);
    let setup = Setup::with_sink(CHAIN, &remote::s3_sink(&server.endpoint(), ""));
    write_data(&setup);
    let runner = |args: &[&str]| remote::command(&setup, args, s3_server::SECRET_KEY);
    let locks = || {
        server
            .objects(BUCKET)
            .into_iter()
            .filter(|(key, _)| key.starts_with("runner/test/locks/"))
            .map(|(key, _)| std::fs::read(root.path().join(BUCKET).join(key)).unwrap())
            .collect()
    };
    concurrent_runs(&runner, setup.dir.path(), &locks);
}

#[test]
fn a_killed_run_leaves_a_stale_lock_that_unlock_removes() {
    let setup = Setup::new(CHAIN);
    write_data(&setup);
    setup.ok(&["run", "pipeline.toml"]);
    let killed = setup
        .command(&["run", "pipeline.toml"], PASSPHRASE)
        .env("RUNNER_TEST_FAILPOINT", "before-manifest")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(killed.status.signal(), Some(libc::SIGKILL));
    assert_eq!(local_lock_objects(&setup).len(), 1, "the killed run's lock");

    // The next command reports it as stale, ignores it and works.
    let verify = setup.runner(&["verify", "pipeline.toml"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    let warning = stderr(&verify);
    assert!(
        warning.contains("ignoring stale lock")
            && warning.contains("its process is gone")
            && warning.contains("`runner unlock PIPELINE` removes it")
            && warning.contains(&format!("on {}", hostname())),
        "{warning}"
    );

    // `runner unlock` removes it and says what it removed.
    let unlocked: serde_json::Value =
        serde_json::from_str(&setup.ok(&["unlock", "pipeline.toml", "--json"])).unwrap();
    let removed = unlocked["removed"].as_array().unwrap();
    assert_eq!(removed.len(), 1, "{unlocked}");
    assert_eq!(removed[0]["command"], "run");
    assert_eq!(removed[0]["kind"], "append");
    assert_eq!(removed[0]["host"], hostname().as_str());
    assert_eq!(removed[0]["reason"], "its process is gone");
    assert!(unlocked["kept"].as_array().unwrap().is_empty());
    assert!(local_lock_objects(&setup).is_empty());
    assert_eq!(
        setup.ok(&["unlock", "pipeline.toml"]).trim(),
        "no stale locks"
    );

    // The next run succeeds with nothing to report.
    let run = setup.runner(&["run", "pipeline.toml"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(!stderr(&run).contains("stale"), "{}", stderr(&run));
    assert_eq!(setup.snapshots().len(), 2);
    setup.ok(&["verify", "pipeline.toml", "--all"]);
}

/// An unencrypted pipeline (its lock objects are plain JSON a test can write).
fn plain_setup(extra_repository: &str) -> Setup {
    let setup = Setup::new(CHAIN);
    write_data(&setup);
    std::fs::write(
        setup.pipeline(),
        format!(
            "[repository]\n{extra_repository}\n[source]\ntype = \"files\"\npaths = [\"data\"]\n\n[[transform]]\ntype = \"checksum\"\n\n[sink]\ntype = \"local\"\npath = \"repo\"\n"
        ),
    )
    .unwrap();
    setup
}

/// Writes a lock object as another machine's runner would.
fn foreign_lock(setup: &Setup, kind: &str, command: &str, refreshed_ago: Duration) -> PathBuf {
    let refreshed = (jiff::Timestamp::now() - refreshed_ago).to_string();
    let record = serde_json::json!({
        "format": 1, "id": "0123456789abcdef0123456789abcdef", "kind": kind,
        "host": "elsewhere", "pid": 77, "process_space": "other-boot/pid:[1]",
        "command": command, "pipeline": "pipeline",
        "created": refreshed, "refreshed": refreshed,
    });
    std::fs::create_dir_all(setup.repo().join("locks")).unwrap();
    let path = setup.repo().join("locks/0123456789abcdef0123456789abcdef");
    std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
    path
}

fn plain_ok(setup: &Setup, args: &[&str]) -> String {
    crate::succeeded(&setup.command(args, "").output().unwrap(), args)
}

fn plain_locked(setup: &Setup, args: &[&str], holder: &str) {
    let output = setup.command(args, "").output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(LOCKED),
        "{args:?}: {}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(stderr(&output).contains(holder), "{}", stderr(&output));
}

#[test]
fn an_exclusive_lock_blocks_readers_and_runs_until_unlocked() {
    let setup = plain_setup("");
    plain_ok(&setup, &["run", "pipeline.toml"]);
    let target = setup.dir.path().join("restored");
    let restore = [
        "restore",
        "pipeline.toml",
        "--target",
        target.to_str().unwrap(),
    ];

    let lock = foreign_lock(&setup, "exclusive", "prune", Duration::from_secs(60));
    let holder = "`prune` (exclusive lock, pid 77 on elsewhere, pipeline pipeline)";
    plain_locked(&setup, &["verify", "pipeline.toml"], holder);
    plain_locked(&setup, &restore, holder);
    plain_locked(&setup, &["run", "pipeline.toml"], holder);
    // Waiting does not help while it is held; the error says how long it waited.
    let waited = setup
        .command(&["verify", "pipeline.toml", "--lock-wait", "2s"], "")
        .output()
        .unwrap();
    assert_eq!(waited.status.code(), Some(LOCKED));
    assert!(
        stderr(&waited).contains("gave up after waiting 2s"),
        "{}",
        stderr(&waited)
    );
    assert!(!target.exists(), "a blocked restore wrote nothing");

    // Another machine's live lock is not stale: plain `unlock` keeps it, --all removes it.
    let kept = plain_ok(&setup, &["unlock", "pipeline.toml"]);
    assert!(
        kept.contains("no stale locks") && kept.contains("kept locks/"),
        "{kept}"
    );
    assert!(lock.exists());
    let removed = plain_ok(&setup, &["unlock", "pipeline.toml", "--all"]);
    assert!(
        removed.contains("removed locks/") && removed.contains(holder),
        "{removed}"
    );
    assert!(!lock.exists());
    plain_ok(&setup, &["verify", "pipeline.toml"]);
    plain_ok(&setup, &restore);

    // An append lock (another machine's run) blocks runs, not readers.
    foreign_lock(&setup, "append", "run", Duration::from_secs(60));
    plain_locked(
        &setup,
        &["run", "pipeline.toml"],
        "`run` (append lock, pid 77 on elsewhere",
    );
    plain_ok(&setup, &["verify", "pipeline.toml"]);

    // Not refreshed for longer than lock_stale_after (30m by default): stale, ignored
    // with a warning, and removed by a plain `unlock`.
    let old = foreign_lock(&setup, "exclusive", "prune", Duration::from_secs(2 * 3600));
    let output = setup
        .command(&["verify", "pipeline.toml"], "")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("not refreshed for 2h 0m"),
        "{}",
        stderr(&output)
    );
    // With a longer lock_stale_after the same lock is live again.
    std::fs::write(
        setup.pipeline(),
        std::fs::read_to_string(setup.pipeline()).unwrap().replace(
            "[repository]\n",
            "[repository]\nlock_stale_after = \"3h\"\n",
        ),
    )
    .unwrap();
    plain_locked(&setup, &["verify", "pipeline.toml"], holder);
    std::fs::write(
        setup.pipeline(),
        std::fs::read_to_string(setup.pipeline())
            .unwrap()
            .replace("lock_stale_after = \"3h\"\n", ""),
    )
    .unwrap();
    let unlocked: serde_json::Value =
        serde_json::from_str(&plain_ok(&setup, &["unlock", "pipeline.toml", "--json"])).unwrap();
    assert_eq!(unlocked["removed"][0]["reason"], "not refreshed for 2h 0m");
    assert_eq!(unlocked["removed"][0]["host"], "elsewhere");
    assert!(!old.exists());
    plain_ok(&setup, &["run", "pipeline.toml"]);
}

#[test]
fn readers_hold_read_locks_that_do_not_block_runs() {
    let setup = plain_setup("");
    plain_ok(&setup, &["run", "pipeline.toml"]);
    let gate = Gate::new(setup.dir.path(), "go");
    let mut verify = setup.command(&["verify", "pipeline.toml", "--read-data"], "");
    gate.arm(&mut verify);
    let verify = Running::spawn(verify);
    gate.wait_paused(&verify);
    let held: Vec<serde_json::Value> = std::fs::read_dir(setup.repo().join("locks"))
        .unwrap()
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0]["kind"], "read");
    assert_eq!(held[0]["command"], "verify");
    // A run and another reader work beside it.
    plain_ok(&setup, &["run", "pipeline.toml"]);
    plain_ok(&setup, &["verify", "pipeline.toml", "--all"]);
    gate.open();
    let (code, out, err) = verify.finish();
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        !setup.repo().join("locks").exists()
            || std::fs::read_dir(setup.repo().join("locks"))
                .unwrap()
                .next()
                .is_none()
    );
}

#[test]
fn a_run_whose_lock_was_removed_commits_nothing() {
    let setup = plain_setup("");
    plain_ok(&setup, &["run", "pipeline.toml"]);
    let gate = Gate::new(setup.dir.path(), "go");
    let mut run = setup.command(&["run", "pipeline.toml"], "");
    gate.arm(&mut run);
    let run = Running::spawn(run);
    gate.wait_paused(&run);
    // Someone forces the lock away while the run works.
    let removed = plain_ok(&setup, &["unlock", "pipeline.toml", "--all"]);
    assert!(removed.contains("removed locks/"), "{removed}");
    gate.open();
    let (code, out, err) = run.finish();
    assert_eq!(code, Some(LOCKED), "{out}{err}");
    assert!(
        err.contains("append lock was lost") && err.contains("nothing was committed"),
        "{err}"
    );
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&plain_ok(&setup, &["snapshots", "pipeline.toml", "--json"])).unwrap();
    assert_eq!(
        listed.len(),
        1,
        "the run without its lock committed a snapshot"
    );
}

#[test]
fn prune_during_a_run_deletes_nothing_of_it() {
    let setup = Setup::new(CHAIN);
    write_data(&setup);
    let text = std::fs::read_to_string(setup.pipeline()).unwrap();
    std::fs::write(
        setup.pipeline(),
        format!("{text}\n[retention]\nkeep_last = 1\n"),
    )
    .unwrap();
    setup.ok(&["run", "pipeline.toml"]);
    setup.ok(&["run", "pipeline.toml"]);
    let gate = Gate::new(setup.dir.path(), "go");
    let mut cmd = setup.command(&["run", "pipeline.toml"], PASSPHRASE);
    gate.arm(&mut cmd);
    let running = Running::spawn(cmd);
    gate.wait_paused(&running);
    let unlocked = |files: Vec<PathBuf>| -> Vec<PathBuf> {
        files
            .into_iter()
            .filter(|f| !f.starts_with("locks"))
            .collect()
    };
    let before = unlocked(setup.repo_files());
    // The run holds its append lock: prune may not delete anything, and says who holds it.
    let output = setup.runner(&["prune", "pipeline.toml"]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(stderr(&output).contains("run"), "{}", stderr(&output));
    assert_eq!(
        unlocked(setup.repo_files()),
        before,
        "prune deleted something"
    );
    gate.open();
    let (code, _, err) = running.finish();
    assert_eq!(code, Some(0), "{err}");
    setup.ok(&["verify", "pipeline.toml", "--all", "--read-data"]);
    // Afterwards prune goes ahead: the newest snapshot (the paused run's) stays, verified.
    setup.ok(&["prune", "pipeline.toml"]);
    assert_eq!(setup.snapshots().len(), 1);
    setup.ok(&["verify", "pipeline.toml", "--all", "--read-data"]);
}
