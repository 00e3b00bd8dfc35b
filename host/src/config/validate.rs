//! Raw → validated: plugin references, grants, limits, secret references and paths resolved, every error at its location.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value as Json};
use toml::Spanned;
use toml::de::DeValue;

use super::error::ConfigError;
use super::grants::{DirAccess, DirGrant, Grants, HttpGrant, TcpGrant};
use super::hooks::{HookPoint, HooksConfig, OnHookError};
use super::limits::Limits;
use super::location::SourceFile;
use super::monitor::{MonitorConfig, NotifyConfig, NotifyOn, NotifyTarget};
use super::raw::{
    self, Key, RawGrants, RawHooks, RawLimits, RawMonitor, RawNotify, RawPipeline, RawRepository,
    RawRetention, RawSchedule, RawStage, Value,
};
use super::schedule::{MissedRuns, Schedule};
use super::secret::SecretValueRef;
use super::stage::{OptionIndex, OptionStep, PluginRef, StageConfig, StageKind};
use super::units::{parse_calendar_span, parse_duration, parse_size};
use super::{KeySource, Pipeline, PluginCatalog, RepositoryConfig, Retention};

pub(super) fn validate(
    raw: RawPipeline<'_>,
    src: &SourceFile<'_>,
    path: &Path,
    catalog: &dyn PluginCatalog,
    errors: &mut Vec<ConfigError>,
) -> Option<Pipeline> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base_dir = std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf());
    let mut v = Validator {
        src,
        base_dir,
        catalog,
        errors,
    };

    let name = match raw.name {
        Some(name) if name.get_ref().trim().is_empty() => {
            v.errors.push(src.error(
                name.span(),
                "empty pipeline name; expected a name such as \"daily\"",
            ));
            String::new()
        }
        Some(name) => name.into_inner(),
        None => path.file_stem().map_or("pipeline".into(), |stem| {
            stem.to_string_lossy().into_owned()
        }),
    };
    let schedule = v.schedule(raw.schedule);
    let repository = v.repository(raw.repository);
    let retention = raw.retention.map(|r| v.retention(r));
    let hooks = v.hooks(raw.hooks);
    let monitor = v.monitor(raw.monitor);
    let notify = raw.notify.into_iter().filter_map(|n| v.notify(n)).collect();
    let written = |kind: StageKind| raw.written.iter().any(|key| *key == kind.to_string());
    let (source_written, sink_written) = (written(StageKind::Source), written(StageKind::Sink));
    let source = v.required_stage(raw.source, StageKind::Source, source_written);
    let transforms: Vec<_> = raw
        .transforms
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| v.stage(t, StageKind::Transform, i))
        .collect();
    let sink = v.required_stage(raw.sink, StageKind::Sink, sink_written);
    if !v.errors.is_empty() {
        return None;
    }
    Some(Pipeline {
        name,
        schedule,
        path: path.to_path_buf(),
        base_dir: v.base_dir,
        repository,
        retention,
        hooks,
        monitor,
        notify,
        source: source?,
        transforms,
        sink: sink?,
    })
}

struct Validator<'v, 't> {
    src: &'v SourceFile<'t>,
    /// Relative paths in the file are relative to the file's directory, not the working directory.
    base_dir: PathBuf,
    catalog: &'v dyn PluginCatalog,
    errors: &'v mut Vec<ConfigError>,
}

impl Validator<'_, '_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.errors.push(self.src.error(span, message));
    }

    /// Parses the secret references in a string whose content spans `content` in the file.
    fn template(&mut self, text: &str, content: Range<usize>) -> Option<SecretValueRef> {
        let src = self.src;
        let locate = |i: usize| src.location(src.offset_in_string(&content, text, i));
        match SecretValueRef::parse(text, &self.base_dir, &locate) {
            Ok(template) => Some(template),
            Err(e) => {
                let start = src.offset_in_string(&content, text, e.range.start);
                let end = src
                    .offset_in_string(&content, text, e.range.end)
                    .max(start + 1);
                self.error(start..end, e.message);
                None
            }
        }
    }

    fn repository(&mut self, raw: Option<RawRepository>) -> RepositoryConfig {
        let Some(raw) = raw else {
            return RepositoryConfig::default();
        };
        let lock_stale_after = raw
            .lock_stale_after
            .and_then(|value| self.lock_stale_after(&value))
            .unwrap_or(crate::repository::lock::DEFAULT_STALE_AFTER);
        let key = match (raw.passphrase, raw.key_file) {
            (Some(_), Some(key_file)) => {
                self.error(
                    key_file.span(),
                    "`passphrase` and `key_file` are both set; the repository key comes from exactly one of them",
                );
                None
            }
            (Some(passphrase), None) if passphrase.get_ref().is_empty() => {
                self.error(
                    passphrase.span(),
                    "empty passphrase; expected a secret reference such as \"${env:RUNNER_PASSPHRASE}\"",
                );
                None
            }
            (Some(passphrase), None) => self
                .template(passphrase.get_ref(), passphrase.span())
                .map(KeySource::Passphrase),
            (None, Some(key_file))
                if key_file.get_ref().is_empty() || key_file.get_ref().contains("${") =>
            {
                let message = "`key_file` is a plain path (secret references are not expanded here); to read a passphrase from a file use passphrase = \"${file:PATH}\"";
                self.error(key_file.span(), message);
                None
            }
            (None, Some(key_file)) => {
                Some(KeySource::KeyFile(self.base_dir.join(key_file.get_ref())))
            }
            (None, None) => None,
        };
        RepositoryConfig {
            key,
            lock_stale_after,
        }
    }

    fn lock_stale_after(&mut self, value: &Spanned<String>) -> Option<Duration> {
        use crate::repository::lock::MIN_STALE_AFTER;
        match parse_duration(value.get_ref()) {
            Ok(duration) if duration < MIN_STALE_AFTER => self.error(
                value.span(),
                "lock_stale_after must be at least 10s (a held lock is refreshed every sixth of it)",
            ),
            Ok(duration) => return Some(duration),
            Err(e) => self.error(value.span(), format!("invalid lock_stale_after: {e}")),
        }
        None
    }

    fn hooks(&mut self, raw: Option<RawHooks<'_>>) -> HooksConfig {
        let mut hooks = HooksConfig::default();
        let Some(raw) = raw else {
            return hooks;
        };
        for (when, command) in raw.commands {
            if command.get_ref().trim().is_empty() {
                self.error(
                    command.span(),
                    format!(
                        "empty hooks.{} command; expected a shell command, or leave it out",
                        when.name()
                    ),
                );
                continue;
            }
            let slot = match when {
                HookPoint::Before => &mut hooks.before,
                HookPoint::After => &mut hooks.after,
                HookPoint::OnFailure => &mut hooks.on_failure,
                HookPoint::Finally => &mut hooks.finally,
            };
            *slot = Some(command.into_inner());
        }
        if let Some(timeout) = raw.timeout.and_then(|v| self.duration(&v, "hooks.timeout")) {
            hooks.timeout = timeout;
        }
        if let Some(on_error) = raw.on_error {
            match on_error.get_ref().as_str() {
                "fail" => hooks.on_error = OnHookError::Fail,
                "warn" => hooks.on_error = OnHookError::Warn,
                other => self.error(
                    on_error.span(),
                    format!("unknown hooks.on_error \"{other}\"; expected \"fail\" or \"warn\""),
                ),
            }
        }
        hooks
    }

    fn schedule(&mut self, raw: RawSchedule) -> Option<Schedule> {
        let Some(expression) = raw.expression else {
            for key in [&raw.time_zone, &raw.missed].into_iter().flatten() {
                self.error(
                    key.span(),
                    "without a `schedule` in [pipeline] this has no effect; add schedule = \"0 2 * * *\" (or leave this out)",
                );
            }
            return None;
        };
        let cron = Schedule::parse_expression(expression.get_ref())
            .map_err(|message| self.error(expression.span(), message))
            .ok();
        let zone = Schedule::time_zone(raw.time_zone.as_ref().map(|z| z.get_ref().as_str()))
            .map_err(|message| {
                let span = raw
                    .time_zone
                    .as_ref()
                    .map_or(expression.span(), |z| z.span());
                self.error(span, message)
            })
            .ok();
        let missed = match &raw.missed {
            None => Some(MissedRuns::default()),
            Some(missed) => match MissedRuns::ALL
                .iter()
                .find(|(name, _)| name == missed.get_ref())
            {
                Some((_, policy)) => Some(*policy),
                None => {
                    self.error(
                        missed.span(),
                        format!(
                            "unknown missed-run policy \"{}\"; expected \"run-once\" (one catch-up run at startup) or \"skip\"",
                            missed.get_ref()
                        ),
                    );
                    None
                }
            },
        };
        Some(Schedule::new(cron?, expression.get_ref(), zone?, missed?))
    }

    fn monitor(&mut self, raw: Option<RawMonitor<'_>>) -> MonitorConfig {
        let Some(raw) = raw else {
            return MonitorConfig::default();
        };
        MonitorConfig {
            max_age: raw
                .max_age
                .and_then(|v| self.duration(&v, "monitor.max_age")),
            warn_size: raw
                .warn_size
                .and_then(|v| self.size(&v, "monitor.warn_size")),
            metrics_file: raw.metrics_file.and_then(|path| {
                if path.get_ref().trim().is_empty() {
                    self.error(
                        path.span(),
                        "empty monitor.metrics_file; expected a file path",
                    );
                    return None;
                }
                Some(self.base_dir.join(path.get_ref()))
            }),
        }
    }

    fn notify(&mut self, raw: RawNotify<'_>) -> Option<NotifyConfig> {
        let on = match raw.on {
            None => {
                self.error(
                    raw.span.clone(),
                    "[[notify]] has no `on`; expected a list of events: \"failure\", \"success\", \"stale\"",
                );
                Vec::new()
            }
            Some(events) => {
                let mut on = Vec::new();
                for event in events {
                    match NotifyOn::ALL.iter().find(|(name, _)| *name == event.get_ref()) {
                        Some((_, kind)) => on.push(*kind),
                        None => self.error(
                            event.span(),
                            format!(
                                "unknown notify event \"{}\"; expected one of: failure, success, stale",
                                event.get_ref()
                            ),
                        ),
                    }
                }
                on
            }
        };
        let target = match (
            raw.type_name.as_ref().map(|t| t.get_ref().as_str()),
            raw.url,
            raw.command,
        ) {
            (Some("webhook"), Some(url), None) => self
                .template(url.get_ref(), url.span())
                .map(|url| NotifyTarget::Webhook { url }),
            (Some("command"), None, Some(command)) if !command.get_ref().trim().is_empty() => {
                Some(NotifyTarget::Command {
                    command: command.into_inner(),
                })
            }
            (Some("webhook"), None, _) => {
                self.error(raw.span.clone(), "a webhook [[notify]] needs `url` (a secret reference such as \"${env:SLACK_WEBHOOK_URL}\")");
                None
            }
            (Some("command"), _, None) => {
                self.error(raw.span.clone(), "a command [[notify]] needs `command`");
                None
            }
            (Some("command"), _, Some(command)) if command.get_ref().trim().is_empty() => {
                self.error(command.span(), "empty notify command");
                None
            }
            (Some("webhook"), _, Some(command)) => {
                self.error(
                    command.span(),
                    "`command` belongs to type = \"command\"; a webhook takes `url`",
                );
                None
            }
            (Some("command"), Some(url), _) => {
                self.error(
                    url.span(),
                    "`url` belongs to type = \"webhook\"; a command notification takes `command`",
                );
                None
            }
            (Some(other), _, _) => {
                let span = raw
                    .type_name
                    .as_ref()
                    .map_or(raw.span.clone(), |t| t.span());
                self.error(
                    span,
                    format!("unknown notify type \"{other}\"; expected \"webhook\" or \"command\""),
                );
                None
            }
            (None, _, _) => {
                self.error(
                    raw.span.clone(),
                    "[[notify]] has no `type`; expected \"webhook\" or \"command\"",
                );
                None
            }
        };
        let timeout = raw
            .timeout
            .and_then(|v| self.duration(&v, "notify.timeout"))
            .unwrap_or(NotifyConfig::DEFAULT_TIMEOUT);
        let retries = match raw.retries {
            None => NotifyConfig::DEFAULT_RETRIES,
            Some(value) => match value.get_ref() {
                DeValue::Integer(n) => match u32::from_str_radix(n.as_str(), n.radix()) {
                    Ok(n) if n <= 20 => n,
                    _ => {
                        let span = raw::value_span(self.src, &value);
                        self.error(span, "notify.retries must be a whole number from 0 to 20");
                        NotifyConfig::DEFAULT_RETRIES
                    }
                },
                _ => {
                    self.errors
                        .push(raw::type_error(self.src, &value, "an integer"));
                    NotifyConfig::DEFAULT_RETRIES
                }
            },
        };
        Some(NotifyConfig {
            target: target?,
            on,
            timeout,
            retries,
        })
    }

    fn retention(&mut self, raw: RawRetention<'_>) -> Retention {
        let mut retention = Retention::default();
        for (key, value) in &raw.entries {
            let name = key.get_ref().to_string();
            let span = raw::value_span(self.src, value);
            match name.as_str() {
                "auto" => match value.get_ref() {
                    DeValue::Boolean(auto) => retention.auto = *auto,
                    _ => self
                        .errors
                        .push(raw::type_error(self.src, value, "true or false")),
                },
                "keep_within" => {
                    let DeValue::String(text) = value.get_ref() else {
                        self.errors.push(raw::type_error(
                            self.src,
                            value,
                            "a span such as \"30d\" or \"1y6m\"",
                        ));
                        continue;
                    };
                    match parse_calendar_span(text) {
                        Ok(within) if within.is_zero() => self.error(
                            span,
                            "keep_within must be greater than zero; leave it out to keep no snapshots by age",
                        ),
                        Ok(within) => retention.keep_within = Some(within),
                        Err(e) => self.error(span, format!("invalid keep_within: {e}")),
                    }
                }
                "keep_tag" => {
                    let DeValue::Array(items) = value.get_ref() else {
                        self.errors.push(raw::type_error(
                            self.src,
                            value,
                            "a list of tags such as [\"monthly\", \"pre-upgrade\"]",
                        ));
                        continue;
                    };
                    for item in items.iter() {
                        let DeValue::String(text) = item.get_ref() else {
                            self.errors
                                .push(raw::type_error(self.src, item, "a tag (a string)"));
                            continue;
                        };
                        let tags: Vec<String> =
                            text.split(',').map(|t| t.trim().to_string()).collect();
                        if tags.iter().any(String::is_empty) {
                            let span = raw::value_span(self.src, item);
                            self.error(span, "empty tag in keep_tag; expected a tag such as \"monthly\" (or \"a,b\": snapshots with both)");
                            continue;
                        }
                        retention.keep_tag.push(tags);
                    }
                }
                "max_total_size" => {
                    let DeValue::String(text) = value.get_ref() else {
                        self.errors.push(raw::type_error(
                            self.src,
                            value,
                            "a size such as \"5GB\"",
                        ));
                        continue;
                    };
                    match parse_size(text) {
                        Ok(0) => self.error(span, "max_total_size must be greater than zero"),
                        Ok(bytes) => retention.max_total_size = Some(bytes),
                        Err(e) => self.error(span, format!("invalid max_total_size: {e}")),
                    }
                }
                count => {
                    let parsed = match value.get_ref() {
                        DeValue::Integer(n) => u32::from_str_radix(n.as_str(), n.radix()).ok(),
                        _ => {
                            self.errors.push(raw::type_error(
                                self.src,
                                value,
                                "a whole number of snapshots",
                            ));
                            continue;
                        }
                    };
                    let Some(parsed) = parsed else {
                        self.error(
                            span,
                            format!("{count} must be a whole number from 0 to {}", u32::MAX),
                        );
                        continue;
                    };
                    *match count {
                        "keep_last" => &mut retention.keep_last,
                        "keep_hourly" => &mut retention.keep_hourly,
                        "keep_daily" => &mut retention.keep_daily,
                        "keep_weekly" => &mut retention.keep_weekly,
                        "keep_monthly" => &mut retention.keep_monthly,
                        _ => &mut retention.keep_yearly,
                    } = parsed;
                }
            }
        }
        if !retention.has_keep_rules() && retention.max_total_size.is_none()
            // A misspelled key (already reported) is the likelier cause.
            && self.errors.is_empty()
        {
            self.error(
                raw.span,
                "[retention] has no rule, so prune would keep every snapshot; set keep_last, keep_daily, … or max_total_size (or remove the table)",
            );
        }
        retention
    }

    fn required_stage(
        &mut self,
        raw: Option<RawStage<'_>>,
        kind: StageKind,
        written: bool,
    ) -> Option<StageConfig> {
        match raw {
            Some(raw) => self.stage(raw, kind, 0),
            None if written => None,
            None => {
                let example = self
                    .catalog
                    .builtin_names(kind)
                    .into_iter()
                    .min()
                    .unwrap_or_else(|| "<name>".into());
                let message = format!(
                    "missing [{kind}] table; every pipeline needs one {kind}, e.g. [{kind}] with type = \"{example}\""
                );
                self.errors.push(self.src.file_start_error(message));
                None
            }
        }
    }

    fn stage(&mut self, raw: RawStage<'_>, kind: StageKind, index: usize) -> Option<StageConfig> {
        let what = match kind {
            StageKind::Transform => format!("transform #{}", index + 1),
            kind => kind.to_string(),
        };
        let plugin = self.plugin_ref(&raw, kind, &what);
        let grants = self.grants(raw.grants);
        let limits = self.limits(raw.limits);
        let (options, option_index) = self.options(raw.options);
        Some(StageConfig {
            kind,
            index,
            plugin: plugin?,
            options,
            grants,
            limits,
            location: self.src.location(raw.span.start),
            option_index,
        })
    }

    fn plugin_ref(&mut self, raw: &RawStage<'_>, kind: StageKind, what: &str) -> Option<PluginRef> {
        let mut known = self.catalog.builtin_names(kind);
        known.sort();
        let choices = if known.is_empty() {
            format!(
                "no built-in {kind} plugins are available, so use `plugin = \"path/to/plugin.wasm\"`"
            )
        } else {
            format!(
                "expected one of: {} (or `plugin = \"path/to/plugin.wasm\"`)",
                known.join(", ")
            )
        };
        match (&raw.type_name, &raw.plugin) {
            (Some(_), Some(plugin)) => {
                self.error(plugin.span(), format!("{what} sets both `type` and `plugin`; use `type` for a built-in plugin or `plugin` for a component file, not both"));
                None
            }
            (None, None) => {
                if !raw.names_plugin {
                    self.error(
                        raw.span.clone(),
                        format!("{what} has no `type` or `plugin`; {choices}"),
                    );
                }
                None
            }
            (Some(name), None) => {
                if let Some(sha256) = &raw.sha256 {
                    self.error(sha256.span(), format!("`sha256` pins a plugin file and needs `plugin = \"…\"`; the built-in type \"{}\" is part of the runner", name.get_ref()));
                }
                if !known.contains(name.get_ref()) {
                    self.error(
                        name.span(),
                        format!("unknown {kind} type \"{}\"; {choices}", name.get_ref()),
                    );
                    return None;
                }
                Some(PluginRef::Builtin(name.get_ref().clone()))
            }
            (None, Some(plugin)) => {
                if plugin.get_ref().trim().is_empty() {
                    self.error(
                        plugin.span(),
                        "empty plugin path; expected the path of a .wasm component",
                    );
                    return None;
                }
                let sha256 = match &raw.sha256 {
                    None => None,
                    Some(digest) => Some(self.sha256(digest)?),
                };
                Some(PluginRef::Path {
                    path: self.base_dir.join(plugin.get_ref()),
                    sha256,
                })
            }
        }
    }

    fn sha256(&mut self, digest: &Spanned<String>) -> Option<[u8; 32]> {
        let text = digest.get_ref();
        let mut bytes = [0u8; 32];
        match hex::decode_to_slice(text, &mut bytes) {
            Ok(()) => Some(bytes),
            Err(_) => {
                let found = if text.chars().all(|c| c.is_ascii_hexdigit()) {
                    format!("{} digits", text.chars().count())
                } else {
                    format!("\"{text}\"")
                };
                self.error(
                    digest.span(),
                    format!("`sha256` must be 64 hexadecimal digits, found {found}"),
                );
                None
            }
        }
    }

    fn grants(&mut self, raw: RawGrants) -> Grants {
        let mut grants = Grants::default();
        for dir in raw.dirs {
            let access = match &dir.access {
                None => DirAccess::Read,
                Some(access) => match DirAccess::parse(access.get_ref()) {
                    Some(access) => access,
                    None => {
                        self.error(
                            access.span(),
                            format!(
                                "unknown access \"{}\"; expected \"read\" or \"read-write\"",
                                access.get_ref()
                            ),
                        );
                        continue;
                    }
                },
            };
            match dir.path {
                Some(path) if !path.get_ref().is_empty() => grants.dirs.push(DirGrant {
                    path: self.base_dir.join(path.get_ref()),
                    access,
                }),
                Some(path) => self.error(path.span(), "empty directory path in a dirs grant"),
                None => self.error(
                    dir.span,
                    "a dirs grant needs `path`; expected { path = \"/srv\", access = \"read\" }",
                ),
            }
        }
        for http in raw.http {
            match HttpGrant::parse(http.get_ref()) {
                Ok(grant) => grants.http.push(grant),
                Err(e) => self.error(
                    http.span(),
                    format!("invalid http grant \"{}\": {e}", http.get_ref()),
                ),
            }
        }
        for tcp in raw.tcp {
            match TcpGrant::parse(tcp.get_ref()) {
                Ok(grant) => grants.tcp.push(grant),
                Err(e) => self.error(
                    tcp.span(),
                    format!("invalid tcp grant \"{}\": {e}", tcp.get_ref()),
                ),
            }
        }
        for key in raw.keys {
            if super::grants::KEY_NAMES.contains(&key.get_ref().as_str()) {
                grants.keys.push(key.get_ref().clone());
            } else {
                let known = super::grants::KEY_NAMES.join(", ");
                self.error(
                    key.span(),
                    format!(
                        "unknown key \"{}\"; expected one of: {known}",
                        key.get_ref()
                    ),
                );
            }
        }
        grants
    }

    fn limits(&mut self, raw: RawLimits<'_>) -> Limits {
        let defaults = Limits::default();
        Limits {
            memory: raw
                .memory
                .and_then(|v| self.size(&v, "limits.memory"))
                .unwrap_or(defaults.memory),
            call_timeout: raw
                .call_timeout
                .and_then(|v| self.duration(&v, "limits.call_timeout"))
                .unwrap_or(defaults.call_timeout),
            run_timeout: raw
                .run_timeout
                .and_then(|v| self.duration(&v, "limits.run_timeout"))
                .unwrap_or(defaults.run_timeout),
            max_chunk: raw
                .max_chunk
                .and_then(|v| self.size(&v, "limits.max_chunk"))
                .unwrap_or(defaults.max_chunk),
        }
    }

    /// A size string ("512MiB") or a plain integer number of bytes, greater than zero.
    fn size(&mut self, value: &Value<'_>, name: &str) -> Option<u64> {
        let span = raw::value_span(self.src, value);
        let bytes = match value.get_ref() {
            DeValue::String(text) => parse_size(text).map_err(|e| format!("invalid {name}: {e}")),
            DeValue::Integer(n) => u64::from_str_radix(n.as_str(), n.radix())
                .map_err(|_| format!("{name} must be a positive number of bytes")),
            _ => {
                self.errors.push(raw::type_error(
                    self.src,
                    value,
                    "a size such as \"256MiB\"",
                ));
                return None;
            }
        };
        match bytes {
            Ok(0) => self.error(span, format!("{name} must be greater than zero")),
            Ok(bytes) => return Some(bytes),
            Err(message) => self.error(span, message),
        }
        None
    }

    fn duration(&mut self, value: &Value<'_>, name: &str) -> Option<Duration> {
        let DeValue::String(text) = value.get_ref() else {
            self.errors.push(raw::type_error(
                self.src,
                value,
                "a duration such as \"30s\" or \"1h30m\"",
            ));
            return None;
        };
        let span = raw::value_span(self.src, value);
        match parse_duration(text) {
            Ok(Duration::ZERO) => self.error(span, format!("{name} must be greater than zero")),
            Ok(duration) => return Some(duration),
            Err(e) => self.error(span, format!("invalid {name}: {e}")),
        }
        None
    }

    fn options(&mut self, entries: Vec<(Key<'_>, Value<'_>)>) -> (Map<String, Json>, OptionIndex) {
        let mut index = OptionIndex::default();
        let mut path = Vec::new();
        let options = self.option_table(entries.iter().map(|(k, v)| (k, v)), &mut path, &mut index);
        (options, index)
    }

    fn option_table<'e, 't: 'e>(
        &mut self,
        entries: impl Iterator<Item = (&'e Key<'t>, &'e Value<'t>)>,
        path: &mut Vec<OptionStep>,
        index: &mut OptionIndex,
    ) -> Map<String, Json> {
        let mut table = Map::new();
        for (key, value) in entries {
            path.push(OptionStep::Key(key.get_ref().to_string()));
            index
                .locations
                .insert(dotted(path), self.src.location(key.span().start));
            if let Some(json) = self.option_value(value, path, index) {
                table.insert(key.get_ref().to_string(), json);
            }
            path.pop();
        }
        table
    }

    /// Converts one option to JSON, recording where it is and whether it holds secret references.
    fn option_value(
        &mut self,
        value: &Value<'_>,
        path: &mut Vec<OptionStep>,
        index: &mut OptionIndex,
    ) -> Option<Json> {
        Some(match value.get_ref() {
            DeValue::String(text) => {
                let content = self.src.string_content(value.span());
                if let Some(template) = self
                    .template(text, content)
                    .filter(SecretValueRef::needs_resolution)
                {
                    index.secrets.push((path.clone(), template));
                }
                Json::String(text.to_string())
            }
            DeValue::Integer(n) => match i64::from_str_radix(n.as_str(), n.radix()) {
                Ok(n) => Json::from(n),
                Err(_) => {
                    self.error(
                        value.span(),
                        "integer out of range for a 64-bit signed option value",
                    );
                    return None;
                }
            },
            DeValue::Float(f) => match f
                .as_str()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
            {
                Some(n) => Json::Number(n),
                None => {
                    self.error(value.span(), "plugin options cannot hold inf or nan");
                    return None;
                }
            },
            DeValue::Boolean(b) => Json::Bool(*b),
            DeValue::Datetime(d) => Json::String(d.to_string()),
            DeValue::Array(items) => {
                let mut array = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    path.push(OptionStep::Index(i));
                    index
                        .locations
                        .insert(dotted(path), self.src.location(item.span().start));
                    array.extend(self.option_value(item, path, index));
                    path.pop();
                }
                Json::Array(array)
            }
            DeValue::Table(table) => Json::Object(self.option_table(table.iter(), path, index)),
        })
    }
}

fn dotted(path: &[OptionStep]) -> String {
    let steps: Vec<String> = path
        .iter()
        .map(|step| match step {
            OptionStep::Key(key) => key.clone(),
            OptionStep::Index(i) => i.to_string(),
        })
        .collect();
    steps.join(".")
}
