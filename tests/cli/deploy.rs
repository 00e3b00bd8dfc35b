//! deploy/ checked as far as this machine allows: the systemd units pass `systemd-analyze
//! verify`, and every `runner` command in the units, the Containerfile and the Kubernetes
//! CronJob parses with the real command line; the CronJob's pipeline validates with the
//! secrets its Secret provides.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;

use crate::{runner, stderr, stdout};

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

/// Asserts `args` (without the program name) is a command line the real CLI accepts.
fn assert_cli_accepts(args: &[String], origin: &str) {
    let argv = std::iter::once("runner".to_string()).chain(args.iter().cloned());
    if let Err(e) = runner::cli::Cli::try_parse_from(argv) {
        panic!(
            "{origin}: `runner {}` is not a valid command line:\n{e}",
            args.join(" ")
        );
    }
}

#[test]
fn the_systemd_units_verify_and_run_a_real_command() {
    let service = std::fs::read_to_string(deploy("systemd/runner@.service")).unwrap();
    let exec = service
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut words = exec.split_whitespace().map(|w| w.replace("%i", "daily"));
    assert_eq!(words.next().unwrap(), "/usr/local/bin/runner");
    assert_cli_accepts(&words.collect::<Vec<_>>(), "runner@.service");
    let daemon = std::fs::read_to_string(deploy("systemd/runner-daemon.service")).unwrap();
    let daemon_exec = daemon
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    // `$$` is systemd's escape for a literal `$`.
    let mut words = daemon_exec.split_whitespace().map(|w| w.replace("$$", "$"));
    assert_eq!(words.next().unwrap(), "/usr/local/bin/runner");
    assert_cli_accepts(&words.collect::<Vec<_>>(), "runner-daemon.service");
    let timer = std::fs::read_to_string(deploy("systemd/runner@.timer")).unwrap();
    assert!(timer.contains("Persistent=true") && timer.contains("WantedBy=timers.target"));

    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed: unit verification skipped");
        return;
    }
    // Verified as instance "daily", with ExecStart pointing at the binary under test
    // (verify checks that the command exists and is executable).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("runner@.service"),
        service.replace("/usr/local/bin/runner", env!("CARGO_BIN_EXE_runner")),
    )
    .unwrap();
    std::fs::write(dir.path().join("runner@.timer"), &timer).unwrap();
    std::fs::write(
        dir.path().join("runner-daemon.service"),
        daemon.replace("/usr/local/bin/runner", env!("CARGO_BIN_EXE_runner")),
    )
    .unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("runner@daily.service"))
        .arg(dir.path().join("runner@daily.timer"))
        .arg(dir.path().join("runner-daemon.service"))
        .output()
        .unwrap();
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "systemd-analyze verify:\n{}{}",
        stdout(&output),
        stderr(&output)
    );
}

#[test]
fn the_containerfile_precompiles_with_a_real_command_and_the_workspace_toolchain() {
    let text = std::fs::read_to_string(deploy("Containerfile")).unwrap();
    let precompile = text
        .lines()
        .find_map(|l| l.strip_prefix("RUN runner "))
        .expect("a RUN runner … line");
    let args: Vec<String> = precompile
        .split("&&")
        .next()
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(args[..2], ["plugins", "precompile"]);
    assert_cli_accepts(&args, "Containerfile");
    assert!(
        text.contains("ENV RUNNER_CACHE_DIR="),
        "the cache must be where the runner looks"
    );
    assert!(text.contains("ENTRYPOINT [\"runner\"]"));
    let workspace: toml::Table = std::fs::read_to_string(deploy("../Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let rust = workspace["workspace"]["package"]["rust-version"]
        .as_str()
        .unwrap();
    assert!(
        text.contains(&format!("rust:{rust}-")),
        "the build stage must use the workspace's Rust {rust}"
    );
}

#[test]
fn the_cronjob_runs_a_real_command_on_its_configmap_pipeline_with_secrets_from_a_secret() {
    let text = std::fs::read_to_string(deploy("kubernetes/cronjob.yaml")).unwrap();
    let documents: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kind = |k: &str| {
        documents
            .iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let cronjob = kind("CronJob");
    assert_eq!(cronjob["apiVersion"], "batch/v1");
    assert_eq!(cronjob["spec"]["concurrencyPolicy"], "Forbid");
    let pod = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let container = &pod["containers"][0];
    let strings = |v: &serde_yaml::Value| -> Vec<String> {
        v.as_sequence()
            .map(|s| s.iter().map(|x| x.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    assert_eq!(strings(&container["command"]), ["runner"]);
    let args = strings(&container["args"]);
    assert_eq!(args[0], "run");
    assert_cli_accepts(&args, "cronjob.yaml");

    // The pipeline argument is a file of the mounted ConfigMap.
    let pipeline_path = Path::new(&args[1]);
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| Path::new(m["mountPath"].as_str().unwrap()) == pipeline_path.parent().unwrap())
        .expect("a volume mounted where the pipeline is");
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let configmap = kind("ConfigMap");
    assert_eq!(volume["configMap"]["name"], configmap["metadata"]["name"]);
    let file_name = pipeline_path.file_name().unwrap().to_str().unwrap();
    let pipeline = configmap["data"][file_name]
        .as_str()
        .expect("the pipeline in the ConfigMap");

    // Every ${env:…} in the pipeline comes from the Secret, none is written anywhere.
    let env: Vec<&serde_yaml::Value> = container["env"].as_sequence().unwrap().iter().collect();
    let mut referenced = Vec::new();
    for piece in pipeline.split("${env:").skip(1) {
        let name = piece.split('}').next().unwrap();
        let var = env
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} is referenced but not set"));
        assert_eq!(
            var["valueFrom"]["secretKeyRef"]["name"], "runner-backup",
            "{name}"
        );
        assert!(
            var.get("value").is_none(),
            "{name} must come from the Secret"
        );
        referenced.push(name.to_string());
    }
    for name in [
        "RUNNER_PASSPHRASE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        assert!(
            referenced.iter().any(|r| r == name),
            "{name} not used by the pipeline"
        );
    }

    // The pipeline itself validates (its data volume replaced by a local directory); until
    // this binary has the s3 sink built in, the only complaint allowed is about that sink.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(
        dir.path().join("pipeline.toml"),
        pipeline.replace("paths = [\"/data\"]", "paths = [\"data\"]"),
    )
    .unwrap();
    let listed = stdout(&runner(&["plugins", "--json"], dir.path()));
    let has_s3 = listed.contains("\"name\":\"s3\"");
    let output = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["validate", "pipeline.toml"])
        .current_dir(dir.path())
        .env("RUNNER_CACHE_DIR", crate::common::cache_dir())
        .env("RUNNER_PASSPHRASE", "placeholder passphrase")
        .env("AWS_ACCESS_KEY_ID", "AKIAPLACEHOLDER")
        .env("AWS_SECRET_ACCESS_KEY", "placeholder-secret")
        .output()
        .unwrap();
    let report = format!("{}{}", stdout(&output), stderr(&output));
    if has_s3 {
        assert!(output.status.success(), "{report}");
    } else {
        assert_eq!(output.status.code(), Some(2), "{report}");
        assert!(report.contains("\"s3\""), "{report}");
        assert_eq!(
            report.matches("error").count(),
            1,
            "only the s3 sink may be missing:\n{report}"
        );
    }
}
