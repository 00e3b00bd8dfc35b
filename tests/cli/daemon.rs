//! `runner daemon` through the real binary, on a test clock (`RUNNER_TEST_CLOCK`): runs on
//! the schedule, one catch-up run for missed times, no overlap, `/health` flipping to 503
//! when stale, `/metrics` parsed as Prometheus text, the bearer token of `POST /run`, and
//! SIGTERM leaving no snapshot and no lock behind.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::backup::{CHAIN, PASSPHRASE, Setup};
use crate::common::background::{Gate, Running};
use crate::common::webhook::Receiver;
use crate::stdout;

const TOKEN: &str = "daemon-token-7f3a";

/// A pipeline with `extra` tables in front of the usual one.
fn setup_with(extra: &str) -> Setup {
    let setup = Setup::new(CHAIN);
    std::fs::write(setup.data().join("a.txt"), "scheduled").unwrap();
    let text = std::fs::read_to_string(setup.pipeline()).unwrap();
    std::fs::write(setup.pipeline(), format!("{extra}\n\n{text}")).unwrap();
    setup
}

struct Daemon {
    running: Running,
    address: String,
    clock: PathBuf,
}

impl Daemon {
    /// Starts `runner daemon pipeline.toml` at the test clock's `time`; `prepare` may add
    /// arguments and environment.
    fn start(setup: &Setup, time: &str, prepare: impl FnOnce(&mut Command)) -> Daemon {
        Self::start_on(setup, "pipeline.toml", time, prepare)
    }

    /// `runner daemon PIPELINES` (a file or a directory).
    fn start_on(
        setup: &Setup,
        pipelines: &str,
        time: &str,
        prepare: impl FnOnce(&mut Command),
    ) -> Daemon {
        let clock = setup.dir.path().join("clock");
        set_clock(&clock, time);
        let mut cmd = setup.command(
            &[
                "daemon",
                pipelines,
                "--listen",
                "127.0.0.1:0",
                "--token",
                "${env:TEST_TOKEN}",
            ],
            PASSPHRASE,
        );
        cmd.env("RUNNER_TEST_CLOCK", &clock)
            .env("TEST_TOKEN", TOKEN)
            .env_remove("RUNNER_LOG");
        prepare(&mut cmd);
        let running = Running::spawn(cmd);
        running.wait_for_line("listening on http://");
        let address = running
            .lines
            .lock()
            .unwrap()
            .iter()
            .find_map(|line| line.split("listening on http://").nth(1))
            .unwrap()
            .trim()
            .to_string();
        Daemon {
            running,
            address,
            clock,
        }
    }

    fn set_clock(&self, time: &str) {
        set_clock(&self.clock, time);
    }

    fn request(&self, method: &str, path: &str, headers: &[&str]) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: 0\r\n",
            self.address
        );
        for header in headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        (status, body)
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, &[])
    }

    fn health(&self) -> (u16, serde_json::Value) {
        let (status, body) = self.get("/health");
        (status, serde_json::from_str(&body).unwrap())
    }

    fn post_run(&self, pipeline: &str, token: Option<&str>) -> (u16, String) {
        let header = token.map(|t| format!("Authorization: Bearer {t}"));
        self.request(
            "POST",
            &format!("/run/{pipeline}"),
            header
                .as_slice()
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice(),
        )
    }

    /// SIGTERM; returns the exit code and stderr.
    fn stop(self) -> (Option<i32>, String) {
        let pid = rustix::process::Pid::from_raw(self.running.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let (code, _, err) = self.running.finish();
        (code, err)
    }

    fn log(&self) -> String {
        self.running.lines.lock().unwrap().join("\n")
    }
}

/// Written whole, then renamed: the daemon never reads half a time.
fn set_clock(path: &PathBuf, time: &str) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, time).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

fn eventually(what: &str, daemon: &Daemon, condition: impl Fn() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "never: {what}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Snapshots so far (none while the first run has not created the repository).
fn snapshot_count(setup: &Setup) -> usize {
    let output = setup.runner(&["snapshots", "pipeline.toml", "--json"]);
    if !output.status.success() {
        return 0;
    }
    serde_json::from_slice::<Vec<serde_json::Value>>(&output.stdout)
        .unwrap()
        .len()
}

fn snapshot_times(setup: &Setup) -> Vec<String> {
    setup
        .snapshots()
        .iter()
        .map(|s| s["time"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn idle(daemon: &Daemon) -> bool {
    let (_, health) = daemon.health();
    health["pipelines"][0]["running"] == false
}

#[test]
fn runs_on_the_schedule_catch_up_once_and_coalesce_missed_times() {
    let setup = setup_with("[pipeline]\nschedule = \"0 2 * * *\"\ntime_zone = \"UTC\"");
    // No run recorded yet: one catch-up run at startup.
    let daemon = Daemon::start(&setup, "2026-11-22T01:59:00Z", |_| {});
    eventually("the catch-up run", &daemon, || {
        snapshot_count(&setup) == 1 && idle(&daemon)
    });
    // 02:00 passes: the scheduled run.
    daemon.set_clock("2026-11-22T02:00:30Z");
    eventually("the 02:00 run", &daemon, || {
        snapshot_count(&setup) == 2 && idle(&daemon)
    });
    // Three days at once (a suspended machine): one run, not three.
    daemon.set_clock("2026-11-25T02:00:30Z");
    eventually("the coalesced run", &daemon, || {
        snapshot_count(&setup) == 3 && idle(&daemon)
    });
    std::thread::sleep(Duration::from_millis(800));
    let (_, health) = daemon.health();
    assert_eq!(health["pipelines"][0]["next_run"], "2026-11-26T02:00:00Z");
    assert_eq!(health["pipelines"][0]["schedule"], "0 2 * * * (UTC)");
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("starting a catch-up (no run recorded yet) run"),
        "{log}"
    );
    assert_eq!(log.matches("starting a scheduled run").count(), 2, "{log}");
    let times = snapshot_times(&setup);
    assert_eq!(times.len(), 3, "{times:?}");
    for (time, expected) in
        times
            .iter()
            .zip(["2026-11-22T01:59", "2026-11-22T02:00", "2026-11-25T02:00"])
    {
        assert!(time.starts_with(expected), "{times:?}");
    }

    // Restarted after the last scheduled time ran: nothing to catch up.
    let daemon = Daemon::start(&setup, "2026-11-25T09:00:00Z", |_| {});
    std::thread::sleep(Duration::from_millis(1500));
    let (_, log) = daemon.stop();
    assert!(!log.contains("starting a"), "{log}");
    assert_eq!(setup.snapshots().len(), 3);
    // Restarted after a missed 02:00: one catch-up run.
    let daemon = Daemon::start(&setup, "2026-11-27T09:00:00Z", |_| {});
    eventually("the catch-up run after downtime", &daemon, || {
        snapshot_count(&setup) == 4 && idle(&daemon)
    });
    let (_, log) = daemon.stop();
    assert!(
        log.contains(
            "catch-up (a scheduled time passed since the last run at 2026-11-25T02:00:30Z)"
        ),
        "{log}"
    );
    // `missed = "skip"`: the missed time is not made up.
    let text = std::fs::read_to_string(setup.pipeline()).unwrap();
    std::fs::write(
        setup.pipeline(),
        text.replace(
            "time_zone = \"UTC\"",
            "time_zone = \"UTC\"\nmissed = \"skip\"",
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&setup, "2026-11-29T09:00:00Z", |_| {});
    std::thread::sleep(Duration::from_millis(1500));
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0));
    assert!(!log.contains("starting a"), "{log}");
    assert_eq!(setup.snapshots().len(), 4);

    // `runner status` shows the next scheduled run.
    let status = setup.ok(&["--json", "status", "pipeline.toml"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status[0]["schedule"], "0 2 * * * (UTC)");
    assert!(
        status[0]["next_run"]
            .as_str()
            .unwrap()
            .ends_with("T02:00:00Z"),
        "{status}"
    );
}

#[test]
fn never_two_runs_of_one_pipeline_at_once() {
    // Every minute; each run holds its lock until the gate opens.
    let setup = setup_with("[pipeline]\nschedule = \"* * * * *\"\nmissed = \"skip\"");
    let gate = Gate::new(setup.dir.path(), "go");
    let daemon = Daemon::start(&setup, "2026-11-22T10:00:30Z", |cmd| gate.arm(cmd));
    daemon.set_clock("2026-11-22T10:01:00Z");
    gate.wait_paused(&daemon.running);
    // Two more minutes pass while the first run holds on; POST /run is refused too.
    daemon.set_clock("2026-11-22T10:02:00Z");
    daemon
        .running
        .wait_for_line("the run scheduled for 2026-11-22T10:02:00Z is skipped");
    daemon.set_clock("2026-11-22T10:03:00Z");
    daemon
        .running
        .wait_for_line("the run scheduled for 2026-11-22T10:03:00Z is skipped");
    let (status, body) = daemon.post_run("pipeline", Some(TOKEN));
    assert_eq!(status, 409, "{body}");
    gate.open();
    eventually("the first run's end", &daemon, || {
        snapshot_count(&setup) == 1 && idle(&daemon)
    });
    // The next minute runs again.
    daemon.set_clock("2026-11-22T10:04:00Z");
    eventually("the 10:04 run", &daemon, || {
        snapshot_count(&setup) == 2 && idle(&daemon)
    });
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(log.matches("starting a scheduled run").count(), 2, "{log}");
}

#[test]
fn health_metrics_and_the_run_endpoint() {
    let receiver = Receiver::start(200);
    let setup = setup_with(
        "[monitor]\nmax_age = \"26h\"\n\n[[notify]]\ntype = \"webhook\"\non = [\"stale\"]\nurl = \"${env:TEST_WEBHOOK}\"",
    );
    let daemon = Daemon::start(&setup, "2026-11-22T10:00:00Z", |cmd| {
        cmd.env("TEST_WEBHOOK", &receiver.url);
    });
    // No schedule, no snapshot: stale, said once.
    let (status, health) = daemon.health();
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "unhealthy");
    assert_eq!(health["pipelines"][0]["problems"][0]["problem"], "stale");
    eventually("the stale notification", &daemon, || {
        receiver.received().len() == 1
    });
    assert_eq!(receiver.received()[0]["event"]["event"], "stale");

    // POST /run: the token is required and checked; names are checked.
    let (status, body) = daemon.post_run("pipeline", None);
    assert_eq!(status, 401, "{body}");
    let (status, _) = daemon.post_run("pipeline", Some("wrong-token"));
    assert_eq!(status, 401);
    let (status, body) = daemon.post_run("nightly", Some(TOKEN));
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("\"pipeline\""), "{body}");
    let (status, body) = daemon.request("GET", "/run/pipeline", &[]);
    assert_eq!(status, 405, "{body}");
    let (status, body) = daemon.post_run("pipeline", Some(TOKEN));
    assert_eq!(status, 202, "{body}");
    eventually("fresh after the run", &daemon, || daemon.health().0 == 200);
    assert_eq!(setup.snapshots().len(), 1);

    // /metrics: Prometheus text, the run's numbers.
    let (status, text) = daemon.get("/metrics");
    assert_eq!(status, 200);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get("pipeline") == Some("pipeline"))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("{name}: {other:?}"),
            })
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    let ten = "2026-11-22T10:00:00Z"
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_second() as f64;
    assert_eq!(value("runner_snapshots"), 1.0);
    assert_eq!(value("runner_last_run_success"), 1.0);
    assert_eq!(value("runner_last_success_timestamp_seconds"), ten);
    assert_eq!(value("runner_failed_runs"), 0.0);
    assert_eq!(value("runner_stale"), 0.0);
    assert_eq!(value("runner_run_in_progress"), 0.0);
    assert!(value("runner_repository_stored_bytes") > 0.0);
    assert!(value("runner_last_run_duration_seconds") > 0.0);

    // 27 hours later: stale again, one more notification (not one per tick).
    daemon.set_clock("2026-11-23T13:00:00Z");
    eventually("stale after max_age", &daemon, || daemon.health().0 == 503);
    let (_, health) = daemon.health();
    assert_eq!(health["pipelines"][0]["age_seconds"], 27 * 3600);
    eventually("the second stale notification", &daemon, || {
        receiver.received().len() == 2
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.received().len(), 2);
    let (status, text) = daemon.get("/metrics");
    assert_eq!(status, 200);
    assert!(
        text.contains("runner_stale{pipeline=\"pipeline\"} 1"),
        "{text}"
    );
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains(TOKEN), "{log}");
}

#[test]
fn sigterm_aborts_a_run_cleanly_or_lets_it_finish_within_the_grace() {
    let setup = setup_with("");
    let runs = || stdout(&setup.runner(&["--json", "history", "pipeline.toml"]));
    // Starts a daemon with `--grace`, a run paused holding its lock, then SIGTERM.
    let paused_run_then_sigterm = |gate: &str, grace: &str| {
        let gate = Gate::new(setup.dir.path(), gate);
        let daemon = Daemon::start(&setup, "2026-11-22T10:00:00Z", |cmd| {
            gate.arm(cmd);
            cmd.args(["--grace", grace]);
        });
        let (status, _) = daemon.post_run("pipeline", Some(TOKEN));
        assert_eq!(status, 202);
        gate.wait_paused(&daemon.running);
        let pid = rustix::process::Pid::from_raw(daemon.running.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        (daemon, gate, Instant::now())
    };
    let no_lock_left = || {
        let locks = std::fs::read_dir(setup.repo().join("locks")).map_or(0, |d| d.count());
        assert_eq!(locks, 0, "a lock was left behind");
    };

    // No grace: aborted at once — no snapshot, no lock, history says "interrupted".
    let (daemon, _gate, signalled) = paused_run_then_sigterm("go-1", "0");
    let (code, _, log) = daemon.running.finish();
    assert_eq!(code, Some(0), "{log}");
    // Generous bounds: CI machines are loaded; what matters is "soon", not "after the run".
    assert!(signalled.elapsed() < Duration::from_secs(30), "{log}");
    assert!(log.contains("aborting 1 run(s)"), "{log}");
    assert!(setup.snapshots().is_empty());
    no_lock_left();
    assert!(runs().contains("\"interrupted\""), "{}", runs());

    // A grace the run does not finish within: aborted when it ends, not before.
    let (daemon, _gate, signalled) = paused_run_then_sigterm("go-2", "2s");
    let (code, _, log) = daemon.running.finish();
    let took = signalled.elapsed();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("they may finish within 2s"), "{log}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(32),
        "{took:?}\n{log}"
    );
    assert!(setup.snapshots().is_empty());
    no_lock_left();

    // A run that finishes within the grace commits, and the repository verifies.
    let (daemon, gate, _) = paused_run_then_sigterm("go-3", "2m");
    daemon.running.wait_for_line("they may finish within 120s");
    gate.open();
    let (code, _, log) = daemon.running.finish();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(setup.snapshots().len(), 1);
    no_lock_left();
    let verified = setup.ok(&["verify", "pipeline.toml", "--all", "--read-data"]);
    assert!(!verified.contains("FAILED"), "{verified}");
}

#[test]
fn a_directory_of_pipelines_runs_each_on_its_own_schedule() {
    let setup =
        setup_with("[pipeline]\nname = \"hourly\"\nschedule = \"@hourly\"\nmissed = \"skip\"");
    let text = std::fs::read_to_string(setup.pipeline()).unwrap();
    let nightly = text
        .replace("name = \"hourly\"", "name = \"nightly\"")
        .replace("@hourly", "0 3 * * *")
        .replace("path = \"repo\"", "path = \"repo-nightly\"");
    std::fs::write(setup.dir.path().join("nightly.toml"), &nightly).unwrap();
    let daemon = Daemon::start_on(&setup, ".", "2026-11-22T02:30:00Z", |_| {});
    let runs = |name: &str| daemon.log().matches(&format!("pipeline={name}")).count();
    // 03:00 is due for nightly only; 03:00 is also the top of an hour for hourly.
    daemon.set_clock("2026-11-22T03:00:10Z");
    eventually("both 03:00 runs", &daemon, || {
        let (_, text) = daemon.get("/metrics");
        text.contains("runner_snapshots{pipeline=\"hourly\"} 1")
            && text.contains("runner_snapshots{pipeline=\"nightly\"} 1")
    });
    // 04:00: hourly only.
    daemon.set_clock("2026-11-22T04:00:10Z");
    eventually("the 04:00 run", &daemon, || {
        let (_, text) = daemon.get("/metrics");
        text.contains("runner_snapshots{pipeline=\"hourly\"} 2")
    });
    let (_, text) = daemon.get("/metrics");
    assert!(
        text.contains("runner_snapshots{pipeline=\"nightly\"} 1"),
        "{text}"
    );
    assert!(runs("hourly") > 0 && runs("nightly") > 0);
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");

    // Two files with one name are refused before anything runs.
    std::fs::write(
        setup.dir.path().join("nightly.toml"),
        nightly.replace("name = \"nightly\"", "name = \"hourly\""),
    )
    .unwrap();
    let output = setup.runner(&["daemon", ".", "--no-listen"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        crate::stderr(&output).contains("are both named \"hourly\""),
        "{}",
        crate::stderr(&output)
    );
}

#[test]
fn bad_schedules_are_config_errors_with_their_location() {
    for (schedule, expected) in [
        ("schedule = \"0 2 * *\"", "has 4 field(s); expected 5"),
        (
            "schedule = \"0 25 * * *\"",
            "invalid schedule \"0 25 * * *\"",
        ),
        (
            "schedule = \"@daily\"\ntime_zone = \"Mars/Olympus\"",
            "unknown time zone \"Mars/Olympus\"",
        ),
        (
            "schedule = \"@daily\"\nmissed = \"twice\"",
            "unknown missed-run policy \"twice\"",
        ),
        ("time_zone = \"UTC\"", "without a `schedule`"),
    ] {
        let setup = setup_with(&format!("[pipeline]\n{schedule}"));
        let output = setup.runner(&["validate", "pipeline.toml"]);
        assert_eq!(output.status.code(), Some(2), "{schedule}");
        let message = crate::stderr(&output);
        assert!(message.contains(expected), "{schedule}: {message}");
        assert!(message.contains("pipeline.toml:"), "{message}");
    }
    // A valid one shows its next times in its zone.
    let setup =
        setup_with("[pipeline]\nschedule = \"30 4 * * MON\"\ntime_zone = \"Europe/Berlin\"");
    let shown = setup.ok(&["validate", "pipeline.toml"]);
    assert!(
        shown.contains("schedule 30 4 * * MON (Europe/Berlin), missed runs: run-once; next: Mon "),
        "{shown}"
    );
    assert!(shown.contains("04:30 CET"), "{shown}");
}
