//! A runner for the official Elasticsearch (and OpenSearch) YAML REST tests against the
//! emulator: each `do` becomes the request the REST API spec (`api/*.json`) describes,
//! and the response is checked with `match`, `length`, `is_true`, `is_false`, `gt`,
//! `gte`, `lt`, `lte`, with `set` stashing values for `$var` references, `catch` for
//! expected errors, `skip`/`requires` honoured (a skipped test is counted with its
//! reason), and `setup`/`teardown` around every test. Every test gets a fresh emulator,
//! as the official runner wipes the cluster between tests.
//!
//! The format is the one `rest-api-spec/src/yamlRestTest/resources/rest-api-spec/test/
//! README.asciidoc` describes; only what the vendored tests use is implemented, and any
//! step outside that fails the test (it never passes silently).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize as _;
use serde_json::{Map, Value, json};

use super::es_emulator::{Answer, Emulator, EmulatorOptions};

/// Test-runner features (`skip: features`) this runner implements.
const FEATURES: &[&str] = &["headers"];

/// One API of the REST spec: its paths (with their parts and methods) and whether its
/// body is NDJSON.
#[derive(Debug)]
struct Api {
    paths: Vec<ApiPath>,
    bulk_body: bool,
}

#[derive(Debug)]
struct ApiPath {
    path: String,
    methods: Vec<String>,
    parts: Vec<String>,
}

/// The REST API spec: every `*.json` of the given directories, by API name.
pub struct Spec {
    apis: BTreeMap<String, Api>,
}

impl Spec {
    pub fn load(dirs: &[&Path]) -> Spec {
        let mut apis = BTreeMap::new();
        for dir in dirs {
            for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            {
                let path = entry.unwrap().path();
                if path.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let value: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                for (name, api) in value.as_object().unwrap() {
                    apis.insert(name.clone(), parse_api(api));
                }
            }
        }
        Spec { apis }
    }
}

/// Both spec layouts: `url.paths` as objects with their own methods and parts (7.x+),
/// or as strings with one `methods` list and shared `url.parts` (older files).
fn parse_api(api: &Value) -> Api {
    let url = &api["url"];
    let shared_methods: Vec<String> = strings(&api["methods"]);
    let mut paths = Vec::new();
    for path in url["paths"].as_array().into_iter().flatten() {
        let (text, methods) = match path {
            Value::String(p) => (p.clone(), shared_methods.clone()),
            other => (
                other["path"].as_str().unwrap().to_string(),
                strings(&other["methods"]),
            ),
        };
        let parts = text
            .split('{')
            .skip(1)
            .filter_map(|p| p.split_once('}').map(|(name, _)| name.to_string()))
            .collect();
        paths.push(ApiPath {
            path: text,
            methods,
            parts,
        });
    }
    Api {
        paths,
        bulk_body: api["body"]["serialize"] == "bulk",
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// What happened to one test.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Passed,
    Skipped(String),
    Failed(String),
}

/// One test's result, named `file / test`.
#[derive(Debug, Clone)]
pub struct Report {
    pub file: String,
    pub test: String,
    pub outcome: Outcome,
}

/// Where the tests run: the emulated cluster's options and the version skips compare with.
pub struct Target {
    pub options: EmulatorOptions,
}

impl Target {
    fn version(&self) -> (u32, u32, u32) {
        let mut parts = self
            .options
            .version
            .split('.')
            .map(|p| p.parse().unwrap_or(0));
        (
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
        )
    }
}

/// Runs every test of one YAML file (`excluded`: test names not run, with the reason).
pub fn run_file(
    spec: &Spec,
    target: &Target,
    root: &Path,
    file: &Path,
    excluded: &[(&str, &str)],
) -> Vec<Report> {
    let name = file
        .strip_prefix(root)
        .unwrap_or(file)
        .to_string_lossy()
        .into_owned();
    let text = std::fs::read_to_string(file).unwrap();
    let mut setup: Vec<Value> = Vec::new();
    let mut teardown: Vec<Value> = Vec::new();
    let mut tests: Vec<(String, Vec<Value>)> = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(document)
            .unwrap_or_else(|e| panic!("{name}: not YAML: {e}"));
        let value = yaml_to_json(value);
        let Value::Object(sections) = value else {
            continue; // an empty document (a leading `---`)
        };
        for (section, steps) in sections {
            let steps = steps.as_array().cloned().unwrap_or_default();
            match section.as_str() {
                "setup" => setup = steps,
                "teardown" => teardown = steps,
                _ => tests.push((section, steps)),
            }
        }
    }
    let mut reports = Vec::new();
    for (test, steps) in tests {
        let outcome = if let Some((_, why)) = excluded.iter().find(|(t, _)| *t == test) {
            Outcome::Skipped(format!("not selected: {why}"))
        } else if let Some(why) =
            skip_reason(target, &setup).or_else(|| skip_reason(target, &steps))
        {
            Outcome::Skipped(why)
        } else {
            let emulator = Emulator::start(target.options.clone());
            let mut run = Run {
                spec,
                emulator: &emulator,
                stash: Map::new(),
                last: None,
            };
            let result = run
                .steps(&setup, "setup")
                .and_then(|()| run.steps(&steps, "test"))
                .and_then(|()| run.steps(&teardown, "teardown"));
            match result {
                Ok(()) => Outcome::Passed,
                Err(why) => Outcome::Failed(why),
            }
        };
        reports.push(Report {
            file: name.clone(),
            test,
            outcome,
        });
    }
    reports
}

/// YAML as JSON: the tests' bodies are JSON documents written in YAML.
fn yaml_to_json(value: serde_yaml::Value) -> Value {
    match value {
        serde_yaml::Value::Null => Value::Null,
        serde_yaml::Value::Bool(b) => Value::Bool(b),
        serde_yaml::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                json!(i)
            } else if let Some(u) = n.as_u64() {
                json!(u)
            } else {
                json!(n.as_f64().unwrap())
            }
        }
        serde_yaml::Value::String(s) => Value::String(s),
        serde_yaml::Value::Sequence(items) => {
            Value::Array(items.into_iter().map(yaml_to_json).collect())
        }
        serde_yaml::Value::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = match yaml_to_json(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        serde_yaml::Value::Tagged(tagged) => yaml_to_json(tagged.value),
    }
}

/// Why the `skip` or `requires` among `steps` skips them, if it does.
fn skip_reason(target: &Target, steps: &[Value]) -> Option<String> {
    for step in steps {
        if let Some(skip) = step.get("skip") {
            let reason = skip["reason"].as_str().unwrap_or("").to_string();
            if let Some(ranges) = skip.get("version").and_then(Value::as_str)
                && version_in(target.version(), ranges)
            {
                return Some(format!(
                    "skip: version {} is in [{ranges}]: {reason}",
                    target.options.version
                ));
            }
            let features = match skip.get("features") {
                Some(Value::String(f)) => vec![f.clone()],
                Some(other) => strings(other),
                None => Vec::new(),
            };
            if let Some(missing) = features.iter().find(|f| !FEATURES.contains(&f.as_str())) {
                return Some(format!("skip: runner feature [{missing}] not implemented"));
            }
        }
        if let Some(requires) = step.get("requires") {
            let reason = requires["reason"].as_str().unwrap_or("");
            for key in ["cluster_features", "test_runner_features", "capabilities"] {
                if let Some(wanted) = requires.get(key) {
                    // `gte_vX.Y.Z`: the feature every cluster of that version or later has.
                    if key == "cluster_features"
                        && strings(wanted).iter().all(|f| {
                            f.strip_prefix("gte_v")
                                .is_some_and(|v| version_in(target.version(), &format!("{v} - ")))
                        })
                    {
                        continue;
                    }
                    let wanted = match wanted {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    if key == "test_runner_features"
                        && strings(&requires[key])
                            .iter()
                            .all(|f| FEATURES.contains(&f.as_str()))
                    {
                        continue;
                    }
                    return Some(format!(
                        "requires {key} {wanted} that the emulator does not declare: {reason}"
                    ));
                }
            }
        }
    }
    None
}

/// Whether a version is in a skip's ranges (" - 7.12.99", "7.0.0 - 7.9.99", "all").
fn version_in(version: (u32, u32, u32), ranges: &str) -> bool {
    let parse = |text: &str| -> Option<(u32, u32, u32)> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        let mut parts = text.split('.').map(|p| p.trim().parse().unwrap_or(0));
        Some((
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
        ))
    };
    ranges.split(',').any(|range| {
        let range = range.trim();
        if range == "all" {
            return true;
        }
        let (low, high) = range.split_once('-').unwrap_or((range, range));
        parse(low).is_none_or(|l| version >= l) && parse(high).is_none_or(|h| version <= h)
    })
}

/// One test's state: the stash and the last response.
struct Run<'a> {
    spec: &'a Spec,
    emulator: &'a Emulator,
    stash: Map<String, Value>,
    last: Option<Answer>,
}

impl Run<'_> {
    fn steps(&mut self, steps: &[Value], section: &str) -> Result<(), String> {
        for (i, step) in steps.iter().enumerate() {
            let Some((kind, arg)) = step.as_object().and_then(|o| o.iter().next()) else {
                return Err(format!("{section} step {}: not a step: {step}", i + 1));
            };
            self.step(kind, arg)
                .map_err(|e| format!("{section} step {} ({kind} {arg}): {e}", i + 1))?;
        }
        Ok(())
    }

    fn step(&mut self, kind: &str, arg: &Value) -> Result<(), String> {
        match kind {
            "skip" | "requires" => Ok(()), // decided before the test ran
            "do" => self.call(arg),
            "set" => {
                for (path, var) in pairs(arg)? {
                    let value = self.lookup(&path)?;
                    let var = var.as_str().ok_or("`set` names a variable")?;
                    self.stash.insert(var.to_string(), value);
                }
                Ok(())
            }
            "match" => {
                for (path, expected) in pairs(arg)? {
                    let actual = self.lookup(&path)?;
                    let expected = self.substitute(&expected);
                    if !matches_expected(&actual, &expected) {
                        return Err(format!("{path}: expected {expected}, got {actual}"));
                    }
                }
                Ok(())
            }
            "length" => {
                for (path, expected) in pairs(arg)? {
                    let actual = self.lookup(&path)?;
                    let length = match &actual {
                        Value::Array(a) => a.len(),
                        Value::Object(o) => o.len(),
                        Value::String(s) => s.chars().count(),
                        other => return Err(format!("{path}: {other} has no length")),
                    };
                    let expected = self.substitute(&expected);
                    if expected.as_u64() != Some(length as u64) {
                        return Err(format!("{path}: length {length}, expected {expected}"));
                    }
                }
                Ok(())
            }
            "is_true" | "is_false" => {
                let path = arg.as_str().ok_or("expected a path")?;
                let value = self.lookup(path).unwrap_or(Value::Null);
                let falsy = match &value {
                    Value::Null => true,
                    Value::Bool(b) => !b,
                    Value::String(s) => s.is_empty() || s.eq_ignore_ascii_case("false") || s == "0",
                    Value::Number(n) => n.as_f64() == Some(0.0),
                    _ => false,
                };
                match (kind, falsy) {
                    ("is_true", true) => Err(format!("{path} is {value}, expected a true value")),
                    ("is_false", false) => {
                        Err(format!("{path} is {value}, expected a false value"))
                    }
                    _ => Ok(()),
                }
            }
            "gt" | "gte" | "lt" | "lte" => {
                for (path, expected) in pairs(arg)? {
                    let actual = self.lookup(&path)?;
                    let expected = self.substitute(&expected);
                    let (Some(a), Some(e)) = (number(&actual), number(&expected)) else {
                        return Err(format!("{path}: {actual} and {expected} are not numbers"));
                    };
                    let ok = match kind {
                        "gt" => a > e,
                        "gte" => a >= e,
                        "lt" => a < e,
                        _ => a <= e,
                    };
                    if !ok {
                        return Err(format!("{path}: {actual} is not {kind} {expected}"));
                    }
                }
                Ok(())
            }
            other => Err(format!("the runner does not implement the [{other}] step")),
        }
    }

    /// `do`: the API call, checked against `catch` (or required to succeed).
    fn call(&mut self, arg: &Value) -> Result<(), String> {
        let arg = arg.as_object().ok_or("`do` takes a map")?;
        let mut catch = None;
        let mut headers = Map::new();
        let mut api_call = None;
        for (key, value) in arg {
            match key.as_str() {
                "catch" => catch = value.as_str().map(str::to_string),
                "headers" => headers = value.as_object().cloned().unwrap_or_default(),
                "warnings" | "allowed_warnings" | "allowed_warnings_regex" | "warnings_regex" => {}
                name => api_call = Some((name.to_string(), value.clone())),
            }
        }
        let (name, params) = api_call.ok_or("`do` names no API")?;
        let params = self.substitute(&params);
        let api = self
            .spec
            .apis
            .get(&name)
            .ok_or_else(|| format!("API [{name}] is not in the vendored REST spec"))?;
        let mut params = params.as_object().cloned().unwrap_or_default();
        let body = params.remove("body");
        // The path with the most parts, all of them given.
        let chosen = api
            .paths
            .iter()
            .filter(|p| p.parts.iter().all(|part| params.contains_key(part)))
            .max_by_key(|p| p.parts.len())
            .ok_or_else(|| format!("no path of [{name}] fits the parameters {params:?}"))?;
        let mut path = chosen.path.clone();
        for part in &chosen.parts {
            let value = params.remove(part).unwrap();
            path = path.replace(&format!("{{{part}}}"), &encode(&param_text(&value)));
        }
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(&param_text(v))))
            .collect();
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        let method = chosen.methods.first().ok_or("the spec lists no method")?;
        let (bytes, mut content_type) = match &body {
            None => (Vec::new(), "application/json".to_string()),
            Some(Value::String(text)) => (
                text.as_bytes().to_vec(),
                if api.bulk_body {
                    "application/x-ndjson"
                } else {
                    "application/json"
                }
                .to_string(),
            ),
            Some(Value::Array(lines)) if api.bulk_body => {
                let mut ndjson = String::new();
                for line in lines {
                    match line {
                        Value::String(s) => ndjson.push_str(s),
                        other => ndjson.push_str(&other.to_string()),
                    }
                    ndjson.push('\n');
                }
                (ndjson.into_bytes(), "application/x-ndjson".to_string())
            }
            Some(other) => (
                other.to_string().into_bytes(),
                "application/json".to_string(),
            ),
        };
        for (header, value) in &headers {
            if header.eq_ignore_ascii_case("content-type") {
                content_type = value.as_str().unwrap_or("").to_string();
            } else {
                return Err(format!("header [{header}] is not supported by the runner"));
            }
        }
        let answer = self.emulator.call_raw(method, &path, &content_type, &bytes);
        let status = answer.status;
        let failed = status >= 400;
        let text = match &answer.body {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match catch.as_deref() {
            None if failed => {
                return Err(format!("{method} {path}: HTTP {status}: {text}"));
            }
            None => {}
            Some(expected) => {
                let ok = match expected {
                    "bad_request" => status == 400,
                    "unauthorized" => status == 401,
                    "forbidden" => status == 403,
                    "missing" => status == 404,
                    "request_timeout" => status == 408,
                    "conflict" => status == 409,
                    "unavailable" => status == 503,
                    "request" => failed,
                    regex if regex.starts_with('/') && regex.ends_with('/') && regex.len() > 1 => {
                        failed && regex_matches(&regex[1..regex.len() - 1], &text, false)?
                    }
                    other => return Err(format!("unknown catch [{other}]")),
                };
                if !ok {
                    return Err(format!(
                        "{method} {path}: expected the error [{expected}], got HTTP {status}: {text}"
                    ));
                }
            }
        }
        self.last = Some(answer);
        Ok(())
    }

    /// `$var` (whole string) and `${var}` (inside a string) replaced from the stash.
    fn substitute(&self, value: &Value) -> Value {
        match value {
            Value::String(s) => {
                if let Some(var) = s.strip_prefix('$')
                    && !var.starts_with('{')
                    && let Some(v) = self.stash.get(var)
                {
                    return v.clone();
                }
                let mut text = s.clone();
                for (var, v) in &self.stash {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    text = text.replace(&format!("${{{var}}}"), &v);
                }
                Value::String(text)
            }
            Value::Array(items) => Value::Array(items.iter().map(|v| self.substitute(v)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| {
                        let key = match self.substitute(&Value::String(k.clone())) {
                            Value::String(s) => s,
                            other => other.to_string(),
                        };
                        (key, self.substitute(v))
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// A value of the last response by dotted path (`hits.hits.0._id`; `\.` escapes a dot;
    /// `$body` or "" is the whole body; a segment may be a `$var`).
    fn lookup(&self, path: &str) -> Result<Value, String> {
        let answer = self.last.as_ref().ok_or("no response yet")?;
        let mut node = &answer.body;
        if path.is_empty() || path == "$body" {
            return Ok(node.clone());
        }
        let mut segments = Vec::new();
        let mut current = String::new();
        let mut chars = path.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&'.') => current.push(chars.next().unwrap()),
                '.' => segments.push(std::mem::take(&mut current)),
                c => current.push(c),
            }
        }
        segments.push(current);
        for segment in segments {
            let segment = match self.substitute(&Value::String(segment.clone())) {
                Value::String(s) => s,
                other => other.to_string(),
            };
            node = match node {
                Value::Object(o) => o.get(&segment),
                Value::Array(a) => segment.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            }
            .unwrap_or(&Value::Null);
        }
        Ok(node.clone())
    }
}

fn pairs(arg: &Value) -> Result<Vec<(String, Value)>, String> {
    Ok(arg
        .as_object()
        .ok_or("expected a map of path: value")?
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect())
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// `match`: a `/regex/` (extended syntax: whitespace in it is ignored) against the value's
/// text, else equality, numbers compared by value and scalars by their text.
fn matches_expected(actual: &Value, expected: &Value) -> bool {
    if let Value::String(e) = expected
        && e.len() > 1
        && e.starts_with('/')
        && e.ends_with('/')
    {
        let text = match actual {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        return regex_matches(&e[1..e.len() - 1], &text, true).unwrap_or(false);
    }
    match (actual, expected) {
        (Value::Number(a), Value::Number(e)) => match (a.as_i64(), e.as_i64()) {
            (Some(a), Some(e)) => a == e,
            _ => a.as_f64() == e.as_f64(),
        },
        (Value::Array(a), Value::Array(e)) => {
            a.len() == e.len() && a.iter().zip(e).all(|(a, e)| matches_expected(a, e))
        }
        (Value::Object(a), Value::Object(e)) => {
            a.len() == e.len()
                && e.iter()
                    .all(|(k, e)| a.get(k).is_some_and(|a| matches_expected(a, e)))
        }
        (Value::String(a), Value::Number(_) | Value::Bool(_)) => *a == expected.to_string(),
        (Value::Number(_) | Value::Bool(_), Value::String(e)) => actual.to_string() == *e,
        _ => actual == expected,
    }
}

fn regex_matches(pattern: &str, text: &str, extended: bool) -> Result<bool, String> {
    let pattern = if extended {
        format!("(?x){pattern}")
    } else {
        pattern.to_string()
    };
    let regex = regex_automata::meta::Regex::new(&pattern)
        .map_err(|e| format!("bad regex /{pattern}/: {e}"))?;
    Ok(regex.is_match(text))
}

/// A parameter as the URL carries it: lists comma-joined, scalars as text.
fn param_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(param_text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Percent-encodes what a path segment or query value cannot carry as is.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.,*:~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The reports as lines, one per test, and the totals.
pub fn summary(reports: &[Report]) -> (String, usize, usize, usize) {
    let mut text = String::new();
    let (mut passed, mut skipped, mut failed) = (0, 0, 0);
    for report in reports {
        let line = match &report.outcome {
            Outcome::Passed => {
                passed += 1;
                "PASS".to_string()
            }
            Outcome::Skipped(why) => {
                skipped += 1;
                format!("SKIP ({why})")
            }
            Outcome::Failed(why) => {
                failed += 1;
                format!("FAIL: {why}")
            }
        };
        text.push_str(&format!("{} / {}: {line}\n", report.file, report.test));
    }
    (text, passed, skipped, failed)
}
