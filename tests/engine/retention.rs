//! The retention policy against its oracle: for snapshots at the same times with the same
//! tags and the same rules, runner keeps exactly the snapshots `restic forget` keeps, for
//! the same reasons (restic's words), with calendar fields read in UTC (TZ=UTC for restic).

use std::path::PathBuf;
use std::process::Command;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use runner::config::{Retention, parse_calendar_span};
use runner::pipeline::retention::{self, Candidate};

use crate::common::Prng;

const HOST: &str = "oracle-host";
const PASSWORD: &str = "oracle";

/// Snapshot times over two years: irregular gaps from minutes to weeks (so several share an
/// hour or a day), and the edges the rules care about: a year boundary, ISO week 1 of 2025
/// starting in December 2024, a leap day, and a newest snapshot on the 31st so that
/// "1 month before" must be normalized as Go does (31 November 21:00 is 1 December 21:00;
/// clamped to 30 November, 1 December 10:00 would be kept).
fn snapshot_times() -> Vec<(Timestamp, Vec<String>)> {
    let mut times: Vec<Timestamp> = [
        "2023-12-31T23:30:00Z",
        "2024-01-01T00:10:00Z",
        "2024-02-29T12:00:00Z",
        "2024-03-31T08:00:00Z",
        "2024-11-30T22:00:00Z",
        "2024-12-01T10:00:00Z",
        "2024-12-01T22:00:00Z",
        "2024-12-29T18:00:00Z",
        "2024-12-30T10:00:00Z",
        "2024-12-31T09:15:00Z",
        "2024-12-31T09:40:00Z",
        "2024-12-31T21:00:00Z",
    ]
    .iter()
    .map(|t| t.parse().unwrap())
    .collect();
    let mut prng = Prng::new(6);
    let mut time: Timestamp = "2023-01-03T04:17:00Z".parse().unwrap();
    let gaps_minutes = [
        7, 25, 50, 190, 600, 1_500, 4_400, 10_000, 21_000, 33_000, 47_000,
    ];
    while times.len() < 48 {
        time += jiff::SignedDuration::from_mins(gaps_minutes[prng.below(gaps_minutes.len())]);
        if time >= "2024-12-31T00:00:00Z".parse::<Timestamp>().unwrap() {
            break;
        }
        times.push(time);
    }
    times.sort();
    times.dedup();
    times
        .into_iter()
        .map(|t| {
            let tags: &[&str] = match prng.below(7) {
                0 => &["monthly"],
                1 => &["a"],
                2 => &["a", "b"],
                3 => &["b"],
                _ => &[],
            };
            (t, tags.iter().map(|t| t.to_string()).collect())
        })
        .collect()
}

/// A restic repository with one snapshot of a tiny file per time, built once.
struct Oracle {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    snapshots: Vec<(Timestamp, Vec<String>)>,
}

impl Oracle {
    fn build() -> Oracle {
        let version = Command::new("restic")
            .arg("version")
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "restic is the retention oracle and must be installed (.ci/setup does it): {e}"
                )
            });
        println!(
            "oracle: {}",
            String::from_utf8_lossy(&version.stdout).trim()
        );
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::write(dir.path().join("file.txt"), "retention oracle\n").unwrap();
        let oracle = Oracle {
            repo,
            snapshots: snapshot_times(),
            _dir: dir,
        };
        oracle.restic(&["init"]);
        // restic opens its key with scrypt on every command: a few at a time.
        for batch in oracle.snapshots.chunks(4) {
            let children: Vec<_> = batch
                .iter()
                .map(|(time, tags)| {
                    let time = time.strftime("%Y-%m-%d %H:%M:%S").to_string();
                    let mut args = vec!["backup", "--host", HOST, "--time", &time];
                    for tag in tags {
                        args.extend(["--tag", tag]);
                    }
                    args.push("file.txt");
                    oracle.command(&args).spawn().unwrap()
                })
                .collect();
            for child in children {
                let output = child.wait_with_output().unwrap();
                assert!(output.status.success(), "restic backup: {output:?}");
            }
        }
        oracle
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("restic");
        command
            .args(["--quiet", "--no-cache", "-r"])
            .arg(&self.repo)
            .args(args)
            .current_dir(self.repo.parent().unwrap())
            .env("RESTIC_PASSWORD", PASSWORD)
            .env("TZ", "UTC")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        command
    }

    fn restic(&self, args: &[&str]) -> Vec<u8> {
        let output = self.command(args).output().unwrap();
        assert!(
            output.status.success(),
            "restic {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    /// What `restic forget --dry-run` keeps: (time, reasons), newest first.
    fn kept(&self, policy: &Retention) -> Vec<(Timestamp, Vec<String>)> {
        let mut args = vec!["forget".to_string(), "--dry-run".into(), "--json".into()];
        args.extend(restic_flags(policy));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let groups: serde_json::Value = serde_json::from_slice(&self.restic(&args)).unwrap();
        let groups = groups.as_array().unwrap();
        assert_eq!(groups.len(), 1, "one host and path: one group");
        groups[0]["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|reason| {
                let time = reason["snapshot"]["time"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                let matches = reason["matches"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_str().unwrap().to_string())
                    .collect();
                (time, matches)
            })
            .collect()
    }
}

/// The `restic forget` flags of a policy.
fn restic_flags(policy: &Retention) -> Vec<String> {
    let mut flags = Vec::new();
    for (count, flag) in [
        (policy.keep_last, "--keep-last"),
        (policy.keep_hourly, "--keep-hourly"),
        (policy.keep_daily, "--keep-daily"),
        (policy.keep_weekly, "--keep-weekly"),
        (policy.keep_monthly, "--keep-monthly"),
        (policy.keep_yearly, "--keep-yearly"),
    ] {
        if count > 0 {
            flags.extend([flag.to_string(), count.to_string()]);
        }
    }
    if let Some(within) = policy.keep_within {
        flags.extend(["--keep-within".to_string(), within.to_string()]);
    }
    for tags in &policy.keep_tag {
        flags.extend(["--keep-tag".to_string(), tags.join(",")]);
    }
    flags
}

/// What runner keeps: (time, reasons), newest first.
fn ours(
    policy: &Retention,
    snapshots: &[(Timestamp, Vec<String>)],
) -> Vec<(Timestamp, Vec<String>)> {
    let candidates = snapshots
        .iter()
        .enumerate()
        .map(|(i, (time, tags))| Candidate {
            id: format!("{i:04}"),
            time: *time,
            tags: tags.clone(),
            stored_bytes: 1,
        })
        .collect();
    retention::apply(policy, candidates, &TimeZone::UTC, Timestamp::now())
        .into_iter()
        .filter(|d| d.keep())
        .map(|d| {
            let reasons = d.kept_by.iter().map(ToString::to_string).collect();
            (d.snapshot.time, reasons)
        })
        .collect()
}

fn policies() -> Vec<(&'static str, Retention)> {
    let span = |text| Some(parse_calendar_span(text).unwrap());
    let tags = |lists: &[&str]| {
        lists
            .iter()
            .map(|l| l.split(',').map(str::to_string).collect())
            .collect()
    };
    let base = Retention::default;
    vec![
        (
            "last+daily+weekly+monthly+yearly",
            Retention {
                keep_last: 3,
                keep_daily: 7,
                keep_weekly: 5,
                keep_monthly: 12,
                keep_yearly: 3,
                ..base()
            },
        ),
        (
            "daily+monthly",
            Retention {
                keep_daily: 10,
                keep_monthly: 6,
                ..base()
            },
        ),
        (
            "weekly+yearly",
            Retention {
                keep_weekly: 8,
                keep_yearly: 2,
                ..base()
            },
        ),
        (
            "more monthly than months",
            Retention {
                keep_monthly: 100,
                ..base()
            },
        ),
        (
            "hourly",
            Retention {
                keep_hourly: 10,
                ..base()
            },
        ),
        (
            "last+hourly+daily",
            Retention {
                keep_last: 2,
                keep_hourly: 5,
                keep_daily: 3,
                ..base()
            },
        ),
        (
            "last only, more than exist",
            Retention {
                keep_last: 1000,
                ..base()
            },
        ),
        (
            "within 1m (31 Dec minus a month)",
            Retention {
                keep_within: span("1m"),
                ..base()
            },
        ),
        (
            "within 6m",
            Retention {
                keep_within: span("6m"),
                ..base()
            },
        ),
        (
            "within 1y2m3d4h",
            Retention {
                keep_within: span("1y2m3d4h"),
                ..base()
            },
        ),
        (
            "within 36h",
            Retention {
                keep_within: span("36h"),
                ..base()
            },
        ),
        (
            "tags",
            Retention {
                keep_tag: tags(&["monthly", "a,b"]),
                ..base()
            },
        ),
        (
            "tags+daily+within",
            Retention {
                keep_tag: tags(&["b"]),
                keep_daily: 4,
                keep_within: span("10d"),
                ..base()
            },
        ),
        (
            "everything",
            Retention {
                keep_last: 2,
                keep_hourly: 3,
                keep_daily: 4,
                keep_weekly: 3,
                keep_monthly: 4,
                keep_yearly: 1,
                keep_within: span("2d"),
                keep_tag: tags(&["monthly"]),
                ..base()
            },
        ),
    ]
}

#[test]
fn retention_keeps_exactly_what_restic_forget_keeps() {
    let oracle = Oracle::build();
    assert!(oracle.snapshots.len() >= 40, "{}", oracle.snapshots.len());
    let mut mismatches = Vec::new();
    for (name, policy) in policies() {
        let expected = oracle.kept(&policy);
        let actual = ours(&policy, &oracle.snapshots);
        assert!(
            (!expected.is_empty() && expected.len() < oracle.snapshots.len())
                || name.contains("more than exist"),
            "{name}: the policy should keep some snapshots and forget others ({} of {})",
            expected.len(),
            oracle.snapshots.len()
        );
        println!(
            "{name:<34} restic keeps {:>2}, runner keeps {:>2} of {}",
            expected.len(),
            actual.len(),
            oracle.snapshots.len()
        );
        if expected != actual {
            mismatches.push(format!(
                "{name} (restic {}):\n  restic: {expected:?}\n  runner: {actual:?}",
                restic_flags(&policy).join(" ")
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    // The oracle really covers the edges the snapshot times were chosen for.
    let within_month = ours(&policies()[7].1, &oracle.snapshots);
    let has = |t: &str| {
        within_month
            .iter()
            .any(|(time, _)| *time == t.parse::<Timestamp>().unwrap())
    };
    assert!(
        has("2024-12-01T22:00:00Z") && !has("2024-12-01T10:00:00Z") && !has("2024-11-30T22:00:00Z"),
        "{within_month:?}"
    );
}
