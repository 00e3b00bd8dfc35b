//! Operating from cron through the real binary: snapshot selection (`--as-of`, tags, id
//! prefixes), `--json` events, exit codes per failure kind, Ctrl-C, hooks and run history.

use std::io::BufRead;
use std::process::{Command, Stdio};

use crate::backup::{CHAIN, PASSPHRASE, Setup};
use crate::common::s3_server::{self, S3Server};
use crate::remote;
use crate::{stderr, stdout};

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
        })
        .collect()
}

fn events<'a>(lines: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    lines.iter().filter(|l| l["event"] == kind).collect()
}

/// Runs `runner --json run` and returns the committed snapshot id.
fn run_json(setup: &Setup, extra: &[&str]) -> String {
    let mut args = vec!["--json", "run", "pipeline.toml"];
    args.extend_from_slice(extra);
    let lines = json_lines(&setup.ok(&args));
    events(&lines, "summary")[0]["snapshot"]
        .as_str()
        .unwrap()
        .to_string()
}

fn restored_snapshot(setup: &Setup, selection: &[&str]) -> std::process::Output {
    let mut args = vec![
        "--json",
        "restore",
        "pipeline.toml",
        "--dry-run",
        "--target",
        "restored",
    ];
    args.extend_from_slice(selection);
    setup.runner(&args)
}

fn selected(setup: &Setup, selection: &[&str]) -> String {
    let output = restored_snapshot(setup, selection);
    let text = crate::succeeded(&output, selection);
    let lines = json_lines(&text);
    events(&lines, "summary")[0]["snapshot"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn snapshots_are_selected_by_time_tag_and_prefix() {
    let setup = Setup::new(CHAIN);
    std::fs::write(setup.data().join("a.txt"), "one").unwrap();
    std::fs::create_dir(setup.dir.path().join("restored")).unwrap();
    let first = run_json(&setup, &["--tag", "pre-upgrade"]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let second = run_json(&setup, &[]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let third = run_json(&setup, &["--tag", "weekly"]);
    let listed = setup.snapshots();
    let time_of = |id: &str| {
        listed.iter().find(|s| s["id"] == id).unwrap()["time"]
            .as_str()
            .unwrap()
            .to_string()
    };

    assert_eq!(selected(&setup, &[]), third, "latest by default");
    assert_eq!(selected(&setup, &["--snapshot", "latest"]), third);
    // At or before: exactly the second's start picks it; just before the third too.
    assert_eq!(selected(&setup, &["--as-of", &time_of(&second)]), second);
    let before_third: jiff::Timestamp = time_of(&third).parse().unwrap();
    let before_third = before_third - jiff::SignedDuration::from_millis(1);
    assert_eq!(
        selected(&setup, &["--as-of", &before_third.to_string()]),
        second
    );
    // Tags: the newest carrying every tag given, alone or with --as-of.
    assert_eq!(selected(&setup, &["--tag", "pre-upgrade"]), first);
    selected_err(
        &setup,
        &["--tag", "weekly", "--as-of", &before_third.to_string()],
        "has the tag(s) weekly",
    );
    // A time before every snapshot selects nothing, and says so.
    selected_err(
        &setup,
        &["--as-of", "2001-01-01"],
        "started at or before 2001-01-01",
    );
    // Bad times are usage errors naming the accepted forms.
    selected_err(&setup, &["--as-of", "last tuesday"], "YYYY-MM-DD HH:MM");

    // Unique prefixes select; an ambiguous one is an error listing every match. Runs
    // until two ids share a first digit (at most 17 by pigeonhole).
    assert_eq!(selected(&setup, &["--snapshot", &first[..6]]), first);
    let mut ids = vec![first, second, third];
    let shared = loop {
        let mut firsts: Vec<char> = ids.iter().map(|id| id.chars().next().unwrap()).collect();
        firsts.sort();
        if let Some(pair) = firsts.windows(2).find(|w| w[0] == w[1]) {
            break pair[0];
        }
        ids.push(run_json(&setup, &[]));
    };
    let output = restored_snapshot(&setup, &["--snapshot", &shared.to_string()]);
    assert_eq!(output.status.code(), Some(2));
    let message = both(&output);
    assert!(message.contains("ambiguous"), "{message}");
    for id in ids.iter().filter(|id| id.starts_with(shared)) {
        assert!(message.contains(id.as_str()), "{id} not listed: {message}");
    }
    // An id with a filter is contradictory.
    let output = restored_snapshot(&setup, &["--snapshot", &ids[0][..8], "--tag", "weekly"]);
    assert_eq!(output.status.code(), Some(2));
    // verify takes the same selection.
    setup.ok(&["verify", "pipeline.toml", "--tag", "pre-upgrade"]);
}

/// Expects a selection to fail (exit 2) with `needle` in the message.
fn selected_err(setup: &Setup, selection: &[&str], needle: &str) {
    let output = restored_snapshot(setup, selection);
    assert_eq!(output.status.code(), Some(2), "{}", both(&output));
    assert!(both(&output).contains(needle), "{}", both(&output));
}

/// Errors go to stdout as JSON with `--json`, to stderr without; clap's to stderr.
fn both(output: &std::process::Output) -> String {
    format!("{}{}", stdout(output), stderr(output))
}

#[test]
fn json_output_is_one_event_per_line_without_secrets() {
    let setup = Setup::new(CHAIN);
    std::fs::write(setup.data().join("a.txt"), "hello").unwrap();
    let output = setup.runner(&["--json", "run", "pipeline.toml"]);
    let text = crate::succeeded(&output, &["run"]);
    let lines = json_lines(&text);
    let kinds: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"start"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"summary"), "{kinds:?}");
    for kind in ["listed", "artifact_start", "progress", "artifact_done"] {
        assert!(kinds.contains(&kind), "no {kind} event: {kinds:?}");
    }
    let done = events(&lines, "artifact_done")[0];
    assert_eq!(done["artifact"], "data");
    assert!(done["objects"].as_u64().unwrap() >= 1);
    let summary = events(&lines, "summary")[0];
    assert_eq!(summary["outcome"], "success");
    assert_eq!(summary["exit_code"], 0);
    assert!(!text.contains(PASSPHRASE) && !stderr(&output).contains(PASSPHRASE));

    // A failure is an `error` event with the exit code, still JSON.
    let output = setup
        .command(&["--json", "run", "pipeline.toml"], "wrong passphrase")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(6));
    let lines = json_lines(&stdout(&output));
    let error = events(&lines, "error")[0];
    assert_eq!(error["exit_code"], 6);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("wrong passphrase")
    );
    assert!(!stdout(&output).contains("wrong passphrase\""));
}

#[test]
fn the_files_source_lists_the_bytes_it_will_read() {
    let setup = Setup::new(CHAIN);
    let data = setup.data();
    std::fs::create_dir_all(data.join("sub/deeper")).unwrap();
    std::fs::create_dir(data.join("cache")).unwrap();
    std::fs::write(data.join("a.bin"), vec![7u8; 300_000]).unwrap();
    std::fs::write(data.join("sub/deeper/b.txt"), "hello").unwrap();
    std::fs::hard_link(data.join("a.bin"), data.join("sub/a-again.bin")).unwrap();
    std::os::unix::fs::symlink("../a.bin", data.join("sub/link")).unwrap();
    // Excluded: not read, so not counted.
    std::fs::write(data.join("cache/big.tmp"), vec![1u8; 500_000]).unwrap();
    let text = std::fs::read_to_string(setup.pipeline()).unwrap();
    let text = text.replace(
        "paths = [\"data\"]",
        "paths = [\"data\"]\nexclude = [\"data/cache/**\"]",
    );
    std::fs::write(setup.pipeline(), text).unwrap();

    let output = setup.runner(&["--json", "run", "pipeline.toml"]);
    let lines = json_lines(&crate::succeeded(&output, &["run"]));
    let hint = events(&lines, "listed")[0]["bytes_hint"]
        .as_u64()
        .expect("the files source estimates its bytes");
    let read = events(&lines, "artifact_done")[0]["bytes"]
        .as_u64()
        .unwrap();
    // The content once (a hard link is a header), plus headers: the estimate is off by
    // at most the name lengths it guesses (a hard link's first path).
    assert!(
        (300_000..310_000).contains(&read),
        "read {read}: content twice or the excluded file"
    );
    assert!(hint.abs_diff(read) <= 64, "estimated {hint}, read {read}");
}

#[test]
fn failure_kinds_exit_with_their_documented_codes() {
    // Config: an unknown key, with file:line.
    let setup = Setup::new(CHAIN);
    std::fs::write(setup.data().join("a.txt"), "x").unwrap();
    let text = std::fs::read_to_string(setup.pipeline()).unwrap();
    std::fs::write(setup.pipeline(), format!("bogus = 1\n{text}")).unwrap();
    let output = setup.runner(&["run", "pipeline.toml"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("pipeline.toml:1:1"),
        "{}",
        stderr(&output)
    );
    std::fs::write(setup.pipeline(), text).unwrap();

    // Wrong key: 6.
    setup.ok(&["run", "pipeline.toml"]);
    let output = setup
        .command(&["run", "pipeline.toml"], "not the passphrase")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(6), "{}", stderr(&output));

    // Integrity: a damaged object fails verify --read-data with 5.
    let object = setup
        .repo_files()
        .into_iter()
        .find(|p| p.starts_with("data"))
        .unwrap();
    let path = setup.repo().join(object);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let output = setup.runner(&["verify", "pipeline.toml", "--read-data"]);
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));

    // Sink unreachable: nothing listens on the endpoint.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let setup = Setup::with_sink(CHAIN, &remote::s3_sink(&endpoint, "retries = 1"));
    std::fs::write(setup.data().join("a.txt"), "x").unwrap();
    let output = remote::command(&setup, &["run", "pipeline.toml"], s3_server::SECRET_KEY)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(7), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("unreachable"),
        "{}",
        stderr(&output)
    );
}

/// A file and a directory the runner may not read: as an unprivileged user when the
/// tests run as root (root reads mode 000 files).
#[test]
fn unreadable_files_make_a_partial_snapshot_with_exit_code_3() {
    use std::os::unix::fs::PermissionsExt;
    let setup = Setup::new("");
    let data = setup.data();
    std::fs::write(data.join("readable.txt"), "fine").unwrap();
    std::fs::write(data.join("secret.txt"), "no").unwrap();
    std::fs::create_dir(data.join("private")).unwrap();
    std::fs::write(data.join("private/inside.txt"), "no").unwrap();
    std::fs::set_permissions(
        data.join("secret.txt"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    std::fs::set_permissions(data.join("private"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let cache = setup.dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    for dir in [setup.dir.path(), &cache] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let as_user = |args: &[&str]| {
        let mut cmd = if rustix::process::geteuid().is_root() {
            let mut cmd = Command::new("setpriv");
            cmd.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                env!("CARGO_BIN_EXE_runner"),
            ]);
            cmd
        } else {
            Command::new(env!("CARGO_BIN_EXE_runner"))
        };
        cmd.args(args)
            .current_dir(setup.dir.path())
            .env("RUNNER_CACHE_DIR", &cache)
            .env("TEST_PASSPHRASE", PASSPHRASE)
            .env_remove("HOME")
            .output()
            .unwrap()
    };
    let output = as_user(&["--json", "run", "pipeline.toml"]);
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let lines = json_lines(&stdout(&output));
    let summary = events(&lines, "summary")[0];
    assert_eq!(summary["outcome"], "partial");
    assert_eq!(summary["incomplete"], 2);
    assert!(
        stderr(&output).contains("secret.txt"),
        "{}",
        stderr(&output)
    );
    assert!(stderr(&output).contains("private"), "{}", stderr(&output));
    // Committed: the readable part restores.
    let output = as_user(&["restore", "pipeline.toml", "--target", "restored"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        std::fs::read_to_string(setup.dir.path().join("restored/data/readable.txt")).unwrap(),
        "fine"
    );
    assert!(!setup.dir.path().join("restored/data/secret.txt").exists());
    let history = as_user(&["history", "pipeline.toml", "--json"]);
    let records: Vec<serde_json::Value> = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(records.last().unwrap()["outcome"], "partial");
    assert_eq!(records.last().unwrap()["exit_code"], 3);
    std::fs::set_permissions(data.join("private"), std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn sigint_aborts_cleanly_without_a_snapshot() {
    let setup = Setup::new(CHAIN);
    remote::write_data(&setup.data(), 256 << 20, 7);
    let mut child = setup
        .command(&["--json", "run", "pipeline.toml"], PASSPHRASE)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the run is reading data.
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let progressing = line.contains("\"progress\"");
        seen.push(line);
        if progressing {
            break;
        }
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen:?} {rest:?}");
    let error = json_lines(&rest.join("\n"));
    assert!(
        error
            .iter()
            .any(|e| e["event"] == "error" && e["exit_code"] == 130),
        "{rest:?}"
    );
    assert!(
        setup.snapshots().is_empty(),
        "an interrupted run committed a snapshot"
    );
    assert!(
        !setup.repo().join("locks").exists()
            || std::fs::read_dir(setup.repo().join("locks"))
                .unwrap()
                .next()
                .is_none(),
        "an interrupted run left its lock"
    );
    let history: Vec<serde_json::Value> =
        serde_json::from_str(&setup.ok(&["history", "pipeline.toml", "--json"])).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["outcome"], "interrupted");
    assert_eq!(history[0]["exit_code"], 130);
    // The repository is fine: the next run commits.
    std::fs::remove_file(setup.data().join("big.bin")).unwrap();
    setup.ok(&["run", "pipeline.toml"]);
    setup.ok(&["verify", "pipeline.toml", "--all"]);
}

fn hooks_setup(hooks: &str) -> Setup {
    let setup = Setup::new(CHAIN);
    std::fs::write(setup.data().join("a.txt"), "hooked").unwrap();
    let text = std::fs::read_to_string(setup.pipeline()).unwrap();
    std::fs::write(setup.pipeline(), format!("[hooks]\n{hooks}\n\n{text}")).unwrap();
    setup
}

fn env_file(setup: &Setup, name: &str) -> String {
    std::fs::read_to_string(setup.dir.path().join(name)).unwrap_or_default()
}

#[test]
fn a_failing_before_hook_stops_the_run_before_the_source_is_read() {
    let setup = hooks_setup(
        "before = \"echo preparing; echo 'database is in maintenance' >&2; exit 3\"\non_failure = \"env | grep ^RUNNER_ | sort > failure.env\"\nfinally = \"env | grep ^RUNNER_ | sort > finally.env\"",
    );
    let output = setup.runner(&["--json", "run", "pipeline.toml"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let lines = json_lines(&stdout(&output));
    assert!(
        events(&lines, "artifact_start").is_empty(),
        "the source was read"
    );
    let error = events(&lines, "error")[0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("hooks.before") && error.contains("exit status 3"),
        "{error}"
    );
    assert!(error.contains("database is in maintenance"), "{error}");
    assert!(!setup.repo().join("snapshots").exists() || setup.snapshots().is_empty());
    let failure = env_file(&setup, "failure.env");
    assert!(failure.contains("RUNNER_OUTCOME=failure"), "{failure}");
    assert!(failure.contains("RUNNER_EXIT_CODE=1"), "{failure}");
    assert!(
        failure.contains("RUNNER_ERROR=hooks.before command failed"),
        "{failure}"
    );
    assert!(env_file(&setup, "finally.env").contains("RUNNER_HOOK=finally"));
}

#[test]
fn hooks_see_the_outcome_and_respect_on_error_and_timeout() {
    let setup = hooks_setup(
        "after = \"env | grep ^RUNNER_ | sort > after.env\"\nfinally = \"env | grep ^RUNNER_ | sort > finally.env\"",
    );
    let snapshot = run_json(&setup, &[]);
    let after = env_file(&setup, "after.env");
    assert!(after.contains("RUNNER_OUTCOME=success"), "{after}");
    assert!(
        after.contains(&format!("RUNNER_SNAPSHOT={snapshot}")),
        "{after}"
    );
    assert!(after.contains("RUNNER_PIPELINE=pipeline"), "{after}");
    assert!(after.contains("RUNNER_BYTES_READ="), "{after}");
    assert!(env_file(&setup, "finally.env").contains("RUNNER_HOOK=finally"));
    assert!(!after.contains(PASSPHRASE));

    // on_error = "warn": a failing before hook is logged, the run goes on.
    let setup = hooks_setup("before = \"exit 1\"\non_error = \"warn\"");
    let output = setup.runner(&["run", "pipeline.toml"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("hook failed"),
        "{}",
        stderr(&output)
    );
    assert_eq!(setup.snapshots().len(), 1);

    // A hook past its timeout is killed, with what it started.
    let setup = hooks_setup("before = \"sleep 30 & sleep 30\"\ntimeout = \"1s\"");
    let started = std::time::Instant::now();
    let output = setup.runner(&["run", "pipeline.toml"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("timed out after 1s"),
        "{}",
        stderr(&output)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(25));

    // A bad [hooks] table is a config error at its line.
    let setup = hooks_setup("on_error = \"ignore\"\nbefor = \"true\"");
    let output = setup.runner(&["validate", "pipeline.toml"]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("pipeline.toml:2:1") && message.contains("unknown key \"befor\""),
        "{message}"
    );
    assert!(
        message.contains("unknown hooks.on_error \"ignore\""),
        "{message}"
    );
}

#[test]
fn history_is_kept_in_the_repository_and_survives_an_outage() {
    let store = tempfile::tempdir().unwrap();
    let server = S3Server::start(store.path());
    server.create_bucket("backups");
    let port = server
        .endpoint()
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    let setup = Setup::with_sink(CHAIN, &remote::s3_sink(&server.endpoint(), "retries = 1"));
    std::fs::write(setup.data().join("a.txt"), "history").unwrap();
    let cache = setup.dir.path().join("cache");
    let run = |args: &[&str], cache_dir: &std::path::Path| {
        remote::command(&setup, args, s3_server::SECRET_KEY)
            .env("RUNNER_CACHE_DIR", cache_dir)
            .output()
            .unwrap()
    };
    let output = run(&["run", "pipeline.toml"], &cache);
    assert!(output.status.success(), "{}", stderr(&output));
    // The sink goes away: the failed run's record waits in the local cache...
    server.stop();
    let output = run(&["run", "pipeline.toml"], &cache);
    assert_eq!(output.status.code(), Some(7), "{}", stderr(&output));
    let pending: Vec<serde_json::Value> =
        serde_json::from_slice(&run(&["history", "pipeline.toml", "--json"], &cache).stdout)
            .unwrap();
    assert_eq!(pending.len(), 2, "{pending:?}");
    assert_eq!(pending[1]["outcome"], "failure");
    assert_eq!(pending[1]["pending"], true);
    // ...and reaches the repository with the next run, so a stateless job (a fresh
    // cache) sees all three.
    let server = S3Server::start_on(store.path(), port);
    let output = run(&["run", "pipeline.toml"], &cache);
    assert!(output.status.success(), "{}", stderr(&output));
    let fresh = setup.dir.path().join("fresh-cache");
    let output = run(&["history", "pipeline.toml", "--json"], &fresh);
    assert!(output.status.success(), "{}", stderr(&output));
    let records: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    let outcomes: Vec<&str> = records
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["success", "failure", "success"]);
    assert!(records.iter().all(|r| r["pending"] == false));
    assert_eq!(records[1]["exit_code"], 7);
    assert!(
        records[1]["error"]
            .as_str()
            .unwrap()
            .contains("unreachable")
    );
    assert!(records[2]["bytes_read"].as_u64().unwrap() > 0);
    assert!(records[2]["snapshot"].is_string());
    // Records are sealed like manifests: no plaintext in the bucket.
    let raw = std::fs::read_dir(store.path().join("backups/runner/test/history"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect::<Vec<_>>();
    assert_eq!(raw.len(), 3);
    assert!(
        raw.iter()
            .all(|bytes| !String::from_utf8_lossy(bytes).contains("bytes_read"))
    );
    // The human table.
    let table = stdout(&run(&["history", "pipeline.toml"], &fresh));
    assert!(
        table.contains("OUTCOME") && table.contains("3 run(s)"),
        "{table}"
    );
    server.stop();
}
