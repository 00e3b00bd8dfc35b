//! The pipeline file as written: TOML parsed into spanned tables, checked for shape (known keys, value kinds) but not meaning.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

use super::error::ConfigError;
use super::hooks::HookPoint;
use super::location::SourceFile;

pub(super) type Span = Range<usize>;
pub(super) type Value<'t> = Spanned<DeValue<'t>>;
pub(super) type Key<'t> = Spanned<DeString<'t>>;

const TOP_LEVEL_KEYS: &[&str] = &[
    "pipeline",
    "repository",
    "retention",
    "hooks",
    "monitor",
    "notify",
    "source",
    "transform",
    "sink",
];
const MONITOR_KEYS: &[&str] = &["max_age", "warn_size", "metrics_file"];
const NOTIFY_KEYS: &[&str] = &["type", "on", "url", "command", "timeout", "retries"];
const HOOK_KEYS: &[&str] = &[
    "before",
    "after",
    "on_failure",
    "finally",
    "timeout",
    "on_error",
];
const PIPELINE_KEYS: &[&str] = &["name", "schedule", "time_zone", "missed"];
const REPOSITORY_KEYS: &[&str] = &["passphrase", "key_file", "lock_stale_after"];
const GRANT_KEYS: &[&str] = &["dirs", "http", "tcp", "keys"];
const DIR_GRANT_KEYS: &[&str] = &["path", "access"];
const RETENTION_KEYS: &[&str] = &[
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
    "keep_within",
    "keep_tag",
    "max_total_size",
    "auto",
];
const LIMIT_KEYS: &[&str] = &["memory", "call_timeout", "run_timeout", "max_chunk"];

pub(super) struct RawPipeline<'t> {
    pub name: Option<Spanned<String>>,
    pub schedule: RawSchedule,
    pub repository: Option<RawRepository>,
    pub retention: Option<RawRetention<'t>>,
    pub hooks: Option<RawHooks<'t>>,
    pub monitor: Option<RawMonitor<'t>>,
    pub notify: Vec<RawNotify<'t>>,
    pub source: Option<RawStage<'t>>,
    pub transforms: Vec<RawStage<'t>>,
    pub sink: Option<RawStage<'t>>,
    /// Top-level keys present, even with a wrong value (already reported), so they are not also "missing".
    pub written: Vec<String>,
}

/// `[pipeline]` schedule keys.
#[derive(Default)]
pub(super) struct RawSchedule {
    pub expression: Option<Spanned<String>>,
    pub time_zone: Option<Spanned<String>>,
    pub missed: Option<Spanned<String>>,
}

pub(super) struct RawRepository {
    pub passphrase: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
    pub lock_stale_after: Option<Spanned<String>>,
}

pub(super) struct RawHooks<'t> {
    pub commands: Vec<(HookPoint, Spanned<String>)>,
    pub timeout: Option<Value<'t>>,
    pub on_error: Option<Spanned<String>>,
}

#[derive(Default)]
pub(super) struct RawMonitor<'t> {
    pub max_age: Option<Value<'t>>,
    pub warn_size: Option<Value<'t>>,
    pub metrics_file: Option<Spanned<String>>,
}

/// One `[[notify]]` table.
pub(super) struct RawNotify<'t> {
    pub span: Span,
    pub type_name: Option<Spanned<String>>,
    pub on: Option<Vec<Spanned<String>>>,
    pub url: Option<Spanned<String>>,
    pub command: Option<Spanned<String>>,
    pub timeout: Option<Value<'t>>,
    pub retries: Option<Value<'t>>,
}

/// `[retention]`: its known keys with their values as written (validation reads them).
pub(super) struct RawRetention<'t> {
    pub span: Span,
    pub entries: Vec<(Key<'t>, Value<'t>)>,
}

/// One stage table. Strings' spans cover their content (inside the quotes).
pub(super) struct RawStage<'t> {
    /// The table header (`[source]`, `[[transform]]`) or inline table.
    pub span: Span,
    pub type_name: Option<Spanned<String>>,
    pub plugin: Option<Spanned<String>>,
    /// `type` or `plugin` was written, even with a wrong value (already reported).
    pub names_plugin: bool,
    pub sha256: Option<Spanned<String>>,
    pub grants: RawGrants,
    pub limits: RawLimits<'t>,
    /// Every other key: the plugin's own options, interpreted by the plugin.
    pub options: Vec<(Key<'t>, Value<'t>)>,
}

#[derive(Default)]
pub(super) struct RawGrants {
    pub dirs: Vec<RawDirGrant>,
    pub http: Vec<Spanned<String>>,
    pub tcp: Vec<Spanned<String>>,
    pub keys: Vec<Spanned<String>>,
}

pub(super) struct RawDirGrant {
    pub span: Span,
    pub path: Option<Spanned<String>>,
    pub access: Option<Spanned<String>>,
}

/// Limit values stay TOML values: sizes may be strings or integers, validation reads them.
#[derive(Default)]
pub(super) struct RawLimits<'t> {
    pub memory: Option<Value<'t>>,
    pub call_timeout: Option<Value<'t>>,
    pub run_timeout: Option<Value<'t>>,
    pub max_chunk: Option<Value<'t>>,
}

/// Parses the file; shape errors are collected in `errors`, a TOML syntax error stops here.
pub(super) fn parse<'t>(
    src: &SourceFile<'t>,
    errors: &mut Vec<ConfigError>,
) -> Option<RawPipeline<'t>> {
    let document = match DeTable::parse(src.text()) {
        Ok(document) => document.into_inner(),
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().trim().replace('\n', "; ");
            errors.push(src.error(span, format!("invalid TOML: {message}")));
            return None;
        }
    };
    let mut reader = Reader { src, errors };
    let mut raw = RawPipeline {
        name: None,
        schedule: RawSchedule::default(),
        repository: None,
        retention: None,
        hooks: None,
        monitor: None,
        notify: Vec::new(),
        source: None,
        transforms: Vec::new(),
        sink: None,
        written: Vec::new(),
    };
    for (key, value) in document {
        raw.written.push(key.get_ref().to_string());
        match key.get_ref().as_ref() {
            "pipeline" => {
                for (key, value) in reader.table(value, "[pipeline]", PIPELINE_KEYS).unwrap_or_default() {
                    let value = reader.string(value);
                    match key.get_ref().as_ref() {
                        "name" => raw.name = value,
                        "schedule" => raw.schedule.expression = value,
                        "time_zone" => raw.schedule.time_zone = value,
                        _ => raw.schedule.missed = value,
                    }
                }
            }
            "repository" => {
                let mut repository = RawRepository { passphrase: None, key_file: None, lock_stale_after: None };
                for (key, value) in reader.table(value, "[repository]", REPOSITORY_KEYS).unwrap_or_default() {
                    match key.get_ref().as_ref() {
                        "passphrase" => repository.passphrase = reader.string(value),
                        "lock_stale_after" => repository.lock_stale_after = reader.string(value),
                        _ => repository.key_file = reader.string(value),
                    }
                }
                raw.repository = Some(repository);
            }
            "retention" => {
                let span = value.span();
                if let Some(entries) = reader.table(value, "[retention]", RETENTION_KEYS) {
                    raw.retention = Some(RawRetention { span, entries });
                }
            }
            "hooks" => {
                let mut hooks = RawHooks { commands: Vec::new(), timeout: None, on_error: None };
                for (key, value) in reader.table(value, "[hooks]", HOOK_KEYS).unwrap_or_default() {
                    let point = match key.get_ref().as_ref() {
                        "timeout" => {
                            hooks.timeout = Some(value);
                            continue;
                        }
                        "on_error" => {
                            hooks.on_error = reader.string(value);
                            continue;
                        }
                        "before" => HookPoint::Before,
                        "after" => HookPoint::After,
                        "on_failure" => HookPoint::OnFailure,
                        _ => HookPoint::Finally,
                    };
                    hooks.commands.extend(reader.string(value).map(|command| (point, command)));
                }
                raw.hooks = Some(hooks);
            }
            "monitor" => {
                let mut monitor = RawMonitor::default();
                for (key, value) in reader.table(value, "[monitor]", MONITOR_KEYS).unwrap_or_default() {
                    match key.get_ref().as_ref() {
                        "max_age" => monitor.max_age = Some(value),
                        "warn_size" => monitor.warn_size = Some(value),
                        _ => monitor.metrics_file = reader.string(value),
                    }
                }
                raw.monitor = Some(monitor);
            }
            "notify" => match value.get_ref() {
                DeValue::Array(items) => {
                    raw.notify = items.iter().filter_map(|item| reader.notify(item.clone())).collect();
                }
                DeValue::Table(_) => reader.errors.push(reader.src.error(
                    value.span(),
                    "`notify` is a single table here, but notifications are a list: write `[[notify]]` (double brackets) for each one",
                )),
                _ => reader.type_error(&value, "a list of tables (`[[notify]]`)"),
            },
            "source" => raw.source = reader.stage(value, "[source]"),
            "sink" => raw.sink = reader.stage(value, "[sink]"),
            "transform" => match value.get_ref() {
                DeValue::Array(items) => {
                    raw.transforms = items.iter().filter_map(|item| reader.stage(item.clone(), "[[transform]]")).collect();
                }
                DeValue::Table(_) => reader.errors.push(reader.src.error(
                    value.span(),
                    "`transform` is a single table here, but transforms are a list: write `[[transform]]` (double brackets) for each one",
                )),
                _ => reader.type_error(&value, "a list of tables (`[[transform]]`)"),
            },
            other => reader.unknown_key(&key, other, "at the top level", TOP_LEVEL_KEYS),
        }
    }
    Some(raw)
}

/// Where to point for a value: strings at their content, so the caret sits under the text, not the quote.
pub(super) fn value_span(src: &SourceFile<'_>, value: &Value<'_>) -> Span {
    match value.get_ref() {
        DeValue::String(_) => src.string_content(value.span()),
        _ => value.span(),
    }
}

/// "expected a string, found an integer", at the value.
pub(super) fn type_error(src: &SourceFile<'_>, value: &Value<'_>, expected: &str) -> ConfigError {
    let found = value.get_ref().type_str();
    let article = if found.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    src.error(
        value_span(src, value),
        format!("expected {expected}, found {article} {found}"),
    )
}

struct Reader<'r, 't> {
    src: &'r SourceFile<'t>,
    errors: &'r mut Vec<ConfigError>,
}

impl<'t> Reader<'_, 't> {
    fn type_error(&mut self, value: &Value<'_>, expected: &str) {
        self.errors.push(type_error(self.src, value, expected));
    }

    fn unknown_key(&mut self, key: &Key<'_>, name: &str, place: &str, expected: &[&str]) {
        let message = format!(
            "unknown key \"{name}\" {place}; expected one of: {}",
            expected.join(", ")
        );
        self.errors.push(self.src.error(key.span(), message));
    }

    fn string(&mut self, value: Value<'t>) -> Option<Spanned<String>> {
        match value.get_ref() {
            DeValue::String(text) => {
                Some(Spanned::new(value_span(self.src, &value), text.to_string()))
            }
            _ => {
                self.type_error(&value, "a string");
                None
            }
        }
    }

    /// A table's entries, with keys outside `known` reported (`known` empty: any key).
    fn table(
        &mut self,
        value: Value<'t>,
        name: &str,
        known: &[&str],
    ) -> Option<Vec<(Key<'t>, Value<'t>)>> {
        if !value.get_ref().is_table() {
            self.type_error(&value, &format!("a table for {name}"));
            return None;
        }
        let DeValue::Table(table) = value.into_inner() else {
            return None;
        };
        let mut entries = Vec::with_capacity(table.len());
        for (key, value) in table {
            if known.is_empty() || known.contains(&key.get_ref().as_ref()) {
                entries.push((key, value));
            } else {
                let key_name = key.get_ref().to_string();
                self.unknown_key(&key, &key_name, &format!("in {name}"), known);
            }
        }
        Some(entries)
    }

    fn array(&mut self, value: Value<'t>, expected: &str) -> Vec<Value<'t>> {
        if let DeValue::Array(items) = value.get_ref() {
            return items.iter().cloned().collect();
        }
        self.type_error(&value, expected);
        Vec::new()
    }

    fn notify(&mut self, value: Value<'t>) -> Option<RawNotify<'t>> {
        let mut notify = RawNotify {
            span: value.span(),
            type_name: None,
            on: None,
            url: None,
            command: None,
            timeout: None,
            retries: None,
        };
        for (key, value) in self.table(value, "[[notify]]", NOTIFY_KEYS)? {
            match key.get_ref().as_ref() {
                "type" => notify.type_name = self.string(value),
                "on" => {
                    let items = self.array(value, "a list like [\"failure\", \"stale\"]");
                    notify.on = Some(
                        items
                            .into_iter()
                            .filter_map(|item| self.string(item))
                            .collect(),
                    );
                }
                "url" => notify.url = self.string(value),
                "command" => notify.command = self.string(value),
                "timeout" => notify.timeout = Some(value),
                _ => notify.retries = Some(value),
            }
        }
        Some(notify)
    }

    fn stage(&mut self, value: Value<'t>, name: &str) -> Option<RawStage<'t>> {
        let mut stage = RawStage {
            span: value.span(),
            type_name: None,
            plugin: None,
            names_plugin: false,
            sha256: None,
            grants: RawGrants::default(),
            limits: RawLimits::default(),
            options: Vec::new(),
        };
        let section = name.trim_matches(['[', ']']);
        for (key, value) in self.table(value, name, &[])? {
            match key.get_ref().as_ref() {
                "type" => (stage.type_name, stage.names_plugin) = (self.string(value), true),
                "plugin" => (stage.plugin, stage.names_plugin) = (self.string(value), true),
                "sha256" => stage.sha256 = self.string(value),
                "grants" => stage.grants = self.grants(value, section),
                "limits" => stage.limits = self.limits(value, section),
                _ => stage.options.push((key, value)),
            }
        }
        Some(stage)
    }

    fn grants(&mut self, value: Value<'t>, section: &str) -> RawGrants {
        let mut grants = RawGrants::default();
        let name = format!("[{section}.grants]");
        for (key, value) in self.table(value, &name, GRANT_KEYS).unwrap_or_default() {
            let key_name = key.get_ref().to_string();
            match key_name.as_str() {
                "dirs" => {
                    for item in self.array(
                        value,
                        "a list of { path = \"…\", access = \"read\" | \"read-write\" }",
                    ) {
                        grants.dirs.extend(self.dir_grant(item, &name));
                    }
                }
                _ => {
                    let expected = match key_name.as_str() {
                        "http" => "a list of \"scheme://host[:port]\" strings",
                        "keys" => "a list of key names (\"data\")",
                        _ => "a list of \"host:port\" strings",
                    };
                    let items = self.array(value, expected);
                    let strings = items.into_iter().filter_map(|item| self.string(item));
                    match key_name.as_str() {
                        "http" => grants.http.extend(strings),
                        "keys" => grants.keys.extend(strings),
                        _ => grants.tcp.extend(strings),
                    }
                }
            }
        }
        grants
    }

    fn dir_grant(&mut self, value: Value<'t>, grants_name: &str) -> Option<RawDirGrant> {
        if !value.get_ref().is_table() {
            self.type_error(
                &value,
                "a table like { path = \"/srv\", access = \"read\" }",
            );
            return None;
        }
        let mut grant = RawDirGrant {
            span: value.span(),
            path: None,
            access: None,
        };
        for (key, value) in self.table(
            value,
            &format!("a dirs entry of {grants_name}"),
            DIR_GRANT_KEYS,
        )? {
            match key.get_ref().as_ref() {
                "path" => grant.path = self.string(value),
                _ => grant.access = self.string(value),
            }
        }
        Some(grant)
    }

    fn limits(&mut self, value: Value<'t>, section: &str) -> RawLimits<'t> {
        let mut limits = RawLimits::default();
        for (key, value) in self
            .table(value, &format!("[{section}.limits]"), LIMIT_KEYS)
            .unwrap_or_default()
        {
            let slot = match key.get_ref().as_ref() {
                "memory" => &mut limits.memory,
                "call_timeout" => &mut limits.call_timeout,
                "run_timeout" => &mut limits.run_timeout,
                _ => &mut limits.max_chunk,
            };
            *slot = Some(value);
        }
        limits
    }
}
