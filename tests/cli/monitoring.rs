//! Monitoring through the real binary: webhook and command notifications, `runner check`
//! staleness, `runner status`, and the node-exporter metrics file.

use crate::backup::{CHAIN, PASSPHRASE, Setup};
use crate::common::webhook::Receiver;
use crate::{stderr, stdout};

/// A pipeline with `extra` tables in front of the usual one.
fn setup_with(extra: &str) -> Setup {
    let setup = Setup::new(CHAIN);
    std::fs::write(setup.data().join("a.txt"), "watched").unwrap();
    let text = std::fs::read_to_string(setup.pipeline()).unwrap();
    std::fs::write(setup.pipeline(), format!("{extra}\n\n{text}")).unwrap();
    setup
}

fn run_with_hook(
    setup: &Setup,
    args: &[&str],
    url: &str,
    passphrase: &str,
) -> std::process::Output {
    setup
        .command(args, passphrase)
        .env("TEST_WEBHOOK", url)
        .output()
        .unwrap()
}

#[test]
fn a_webhook_gets_one_event_per_run_and_a_dead_one_fails_nothing() {
    let receiver = Receiver::start(200);
    let setup = setup_with(
        "[[notify]]\ntype = \"webhook\"\non = [\"failure\", \"success\"]\nurl = \"${env:TEST_WEBHOOK}\"\n\n[[notify]]\ntype = \"command\"\non = [\"success\"]\ncommand = \"cat > notified.json\"",
    );
    let output = run_with_hook(
        &setup,
        &["--json", "run", "pipeline.toml"],
        &receiver.url,
        PASSPHRASE,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let snapshot = setup.snapshots()[0]["id"].as_str().unwrap().to_string();
    let received = receiver.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let body = &received[0];
    assert!(
        body["text"].as_str().unwrap().contains("backup pipeline"),
        "{body}"
    );
    assert_eq!(body["event"]["event"], "success");
    assert_eq!(body["event"]["pipeline"], "pipeline");
    assert_eq!(body["event"]["run"]["snapshot"], snapshot.as_str());
    assert_eq!(body["event"]["run"]["outcome"], "success");
    assert!(body["event"]["run"]["bytes_read"].as_u64().unwrap() > 0);
    // The command got the same document on stdin.
    let by_command: serde_json::Value =
        serde_json::from_slice(&std::fs::read(setup.dir.path().join("notified.json")).unwrap())
            .unwrap();
    assert_eq!(by_command["event"]["run"]["snapshot"], snapshot.as_str());

    // A failed run: exactly one `failure` event, with the exit code and error.
    let output = run_with_hook(
        &setup,
        &["run", "pipeline.toml"],
        &receiver.url,
        "wrong passphrase",
    );
    assert_eq!(output.status.code(), Some(6));
    let received = receiver.received();
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!(received[1]["event"]["event"], "failure");
    assert_eq!(received[1]["event"]["run"]["exit_code"], 6);
    assert!(
        received[1]["text"]
            .as_str()
            .unwrap()
            .contains("wrong passphrase")
    );

    // Receiver down (and a 500 answer): the backup still succeeds; the URL, which holds a
    // token, is in no message.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/hooks/secret-token", closed.local_addr().unwrap());
    drop(closed);
    let failing = Receiver::start(500);
    for url in [dead.as_str(), failing.url.as_str()] {
        let setup = setup_with(&format!(
            "[[notify]]\ntype = \"webhook\"\non = [\"success\"]\nurl = \"${{env:TEST_WEBHOOK}}\"\nretries = 1\ntimeout = \"2s\""
        ));
        let output = run_with_hook(&setup, &["run", "pipeline.toml"], url, PASSPHRASE);
        assert!(output.status.success(), "{}", stderr(&output));
        let message = stderr(&output);
        assert!(
            message.contains("notification was not delivered"),
            "{message}"
        );
        assert!(!message.contains("secret-token"), "{message}");
    }
    // Retried: the failing receiver saw the first attempt and one retry.
    assert_eq!(failing.received().len(), 2);
}

#[test]
fn check_exits_stale_when_the_newest_snapshot_is_older_than_max_age() {
    let receiver = Receiver::start(200);
    let setup = setup_with(
        "[monitor]\nmax_age = \"3s\"\n\n[[notify]]\ntype = \"webhook\"\non = [\"stale\"]\nurl = \"${env:TEST_WEBHOOK}\"",
    );
    // No snapshot yet: stale.
    let output = run_with_hook(
        &setup,
        &["check", "pipeline.toml"],
        &receiver.url,
        PASSPHRASE,
    );
    assert_eq!(output.status.code(), Some(8), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("no snapshot yet"),
        "{}",
        stderr(&output)
    );
    // Fresh after a run (the run's success is not a `stale` event: no notification).
    let output = run_with_hook(&setup, &["run", "pipeline.toml"], &receiver.url, PASSPHRASE);
    assert!(output.status.success());
    let output = run_with_hook(
        &setup,
        &["check", "pipeline.toml"],
        &receiver.url,
        PASSPHRASE,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("ok, newest snapshot"),
        "{}",
        stdout(&output)
    );
    // Older than max_age: stale, notified, JSON says why.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let output = run_with_hook(
        &setup,
        &["--json", "check", "pipeline.toml"],
        &receiver.url,
        PASSPHRASE,
    );
    assert_eq!(output.status.code(), Some(8));
    let first: serde_json::Value =
        serde_json::from_str(stdout(&output).lines().next().unwrap()).unwrap();
    assert_eq!(first["ok"], false);
    assert_eq!(first["problems"][0]["problem"], "stale");
    let received = receiver.received();
    assert_eq!(received.len(), 2, "{received:?}");
    assert!(received.iter().all(|b| b["event"]["event"] == "stale"));
    assert!(received[1]["text"].as_str().unwrap().contains("is stale"));
    // --no-notify reports without notifying.
    let output = run_with_hook(
        &setup,
        &["check", "pipeline.toml", "--no-notify"],
        &receiver.url,
        PASSPHRASE,
    );
    assert_eq!(output.status.code(), Some(8));
    assert_eq!(receiver.received().len(), 2);

    // warn_size: more stored than allowed is a problem too.
    let setup = setup_with("[monitor]\nwarn_size = \"10B\"");
    setup.ok(&["run", "pipeline.toml"]);
    let output = setup.runner(&["check", "pipeline.toml"]);
    assert_eq!(output.status.code(), Some(8));
    assert!(stderr(&output).contains("warn_size"), "{}", stderr(&output));
    // Nothing to check is a configuration error.
    let setup = setup_with("");
    let output = setup.runner(&["check", "pipeline.toml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("max_age"), "{}", stderr(&output));
}

#[test]
fn status_and_the_metrics_file_describe_the_pipeline() {
    let setup = setup_with("[monitor]\nmax_age = \"26h\"\nmetrics_file = \"metrics/runner.prom\"");
    std::fs::create_dir(setup.dir.path().join("metrics")).unwrap();
    setup.ok(&["run", "pipeline.toml"]);
    setup.ok(&["run", "pipeline.toml"]);
    let output = setup
        .command(&["run", "pipeline.toml"], "wrong passphrase")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(6));

    let text = std::fs::read_to_string(setup.dir.path().join("metrics/runner.prom")).unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("not Prometheus text ({e}):\n{text}"));
    let value = |name: &str| {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get("pipeline") == Some("pipeline"))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"));
        match sample.value {
            prometheus_parse::Value::Gauge(v) => v,
            ref other => panic!("{name} is not a gauge: {other:?}"),
        }
    };
    // Written by the second (successful) run: the failed one could not open the repository.
    assert_eq!(value("runner_snapshots"), 2.0);
    assert_eq!(value("runner_last_run_success"), 1.0);
    assert_eq!(value("runner_stale"), 0.0);
    assert!(value("runner_last_success_timestamp_seconds") > 1.7e9);
    assert!(value("runner_repository_stored_bytes") > 0.0);

    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&setup.ok(&["status", "pipeline.toml", "--json"])).unwrap();
    let status = &listed[0];
    assert_eq!(status["pipeline"], "pipeline");
    assert_eq!(status["snapshots"], 2);
    assert_eq!(status["runs"], 3);
    assert_eq!(status["failed_runs"], 1);
    assert_eq!(status["last_run"]["outcome"], "failure");
    let rate = status["success_rate"].as_f64().unwrap();
    assert!((rate - 2.0 / 3.0).abs() < 1e-9, "{rate}");
    assert!(status["mean_seconds"].as_f64().unwrap() > 0.0);
    assert!(status["problems"].as_array().unwrap().is_empty());
    let table = setup.ok(&["status", "pipeline.toml"]);
    assert!(
        table.contains("PIPELINE") && table.contains("67%"),
        "{table}"
    );
}
