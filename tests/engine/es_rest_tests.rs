//! The Elasticsearch emulator against the official YAML REST tests of the endpoints the
//! elasticsearch source uses (vendored in tests/fixtures/es-rest-tests, see its README):
//! every selected test must pass on Elasticsearch 7.17 and 8.15, and OpenSearch's
//! point-in-time tests on OpenSearch 2.11 and 3.3. Tests not selected are listed here
//! with the reason; `skip`/`requires` skips are counted and printed.

use std::path::{Path, PathBuf};

use crate::common::es_emulator::EmulatorOptions;
use crate::common::es_yaml::{self, Outcome, Report, Spec, Target};

/// Tests of the vendored files not run, and why: (file, test, reason). Only what the
/// source never asks of a cluster is left out.
const NOT_SELECTED: &[(&str, &str, &str)] = &[
    (
        "search/350_point_in_time.yml",
        "msearch",
        "_msearch: neither backup nor restore calls it, so the emulator does not serve it",
    ),
    (
        "indices.create/10_basic.yml",
        "Create with alias containing date math",
        "date math in index and alias names (`<logs_{2022-12-31||/d{yyyy-MM-dd}}>`) and indices.exists_alias: the source names indices literally",
    ),
    (
        "search/90_search_after.yml",
        "date",
        "sorting on a date field with a custom Java date format (yyyy-MM-dd HH:mm:ss.SSS): the source sorts by _shard_doc or _id only",
    ),
    (
        "search/90_search_after.yml",
        "date_nanos",
        "date_nanos sort values: the source sorts by _shard_doc or _id only",
    ),
    (
        "search/90_search_after.yml",
        "Format sort values",
        "formatted sort values (`format` in a sort): the source sorts by _shard_doc or _id only",
    ),
];

/// Elasticsearch 8 no longer returns `_type`; this vendored version of the file still
/// expects it (a 7.x assertion), so on 8.x that one test is not selected.
const NOT_SELECTED_ON_8: &[(&str, &str, &str)] = &[(
    "search/90_search_after.yml",
    "search with search_after parameter",
    "asserts `_type: _doc` in hits, which Elasticsearch removed in 8.0 (run on 7.17)",
)];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/es-rest-tests")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yml") {
            out.push(path);
        }
    }
}

fn run_suite(
    spec: &Spec,
    target: &Target,
    tests: &Path,
    not_selected: &[&[(&str, &str, &str)]],
) -> Vec<Report> {
    let mut files = Vec::new();
    yaml_files(tests, &mut files);
    let mut reports = Vec::new();
    for file in files {
        let name = file
            .strip_prefix(tests)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let excluded: Vec<(&str, &str)> = not_selected
            .iter()
            .flat_map(|list| list.iter())
            .filter(|(f, _, _)| *f == name)
            .map(|(_, test, why)| (*test, *why))
            .collect();
        reports.extend(es_yaml::run_file(spec, target, tests, &file, &excluded));
    }
    reports
}

/// Prints every test's outcome and fails on any failure or when fewer than `floor`
/// tests ran (skipping everything must not pass).
fn check(label: &str, reports: &[Report], floor: usize) {
    let (text, passed, skipped, failed) = es_yaml::summary(reports);
    println!("{label}:\n{text}{label}: {passed} passed, {failed} failed, {skipped} skipped");
    assert_eq!(
        failed,
        0,
        "{label}: failing YAML REST tests:\n{}",
        reports
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
            .map(|r| format!("{} / {}: {:?}\n", r.file, r.test, r.outcome))
            .collect::<String>()
    );
    assert!(
        passed >= floor,
        "{label}: only {passed} tests ran and passed (at least {floor} expected)"
    );
}

#[test]
fn emulator_passes_the_official_elasticsearch_yaml_rest_tests() {
    let root = root();
    let spec = Spec::load(&[&root.join("api")]);
    for (version, floor, extra) in [("7.17.0", 30, &[][..]), ("8.15.0", 30, NOT_SELECTED_ON_8)] {
        let target = Target {
            options: EmulatorOptions {
                version: version.into(),
                ..Default::default()
            },
        };
        let reports = run_suite(&spec, &target, &root.join("test"), &[NOT_SELECTED, extra]);
        check(&format!("Elasticsearch {version}"), &reports, floor);
    }
}

#[test]
fn emulator_passes_the_official_opensearch_point_in_time_tests() {
    let root = root();
    let spec = Spec::load(&[&root.join("api"), &root.join("opensearch/api")]);
    for (version, floor) in [("2.11.0", 2), ("3.3.0", 2)] {
        let target = Target {
            options: EmulatorOptions {
                version: version.into(),
                opensearch: true,
                ..Default::default()
            },
        };
        let reports = run_suite(&spec, &target, &root.join("opensearch/test"), &[]);
        check(&format!("OpenSearch {version}"), &reports, floor);
    }
}
