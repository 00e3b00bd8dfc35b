//! Raw → validated: plugin references, grants, limits, secret references and paths resolved, every error at its location.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value as Json};
use toml::Spanned;
use toml::de::DeValue;

use super::error::ConfigError;
use super::grants::{DirAccess, DirGrant, Grants, HttpGrant, TcpGrant};
use super::limits::Limits;
use super::location::SourceFile;
use super::raw::{self, Key, RawGrants, RawLimits, RawPipeline, RawRepository, RawStage, Value};
use super::secret::SecretValueRef;
use super::stage::{OptionIndex, OptionStep, PluginRef, StageConfig, StageKind};
use super::units::{parse_duration, parse_size};
use super::{KeySource, Pipeline, PluginCatalog, RepositoryConfig};

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
    let repository = v.repository(raw.repository);
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
        path: path.to_path_buf(),
        base_dir: v.base_dir,
        repository,
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
            return RepositoryConfig { key: None };
        };
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
        RepositoryConfig { key }
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
                .and_then(|v| self.size(&v, "memory"))
                .unwrap_or(defaults.memory),
            call_timeout: raw
                .call_timeout
                .and_then(|v| self.duration(&v, "call_timeout"))
                .unwrap_or(defaults.call_timeout),
            run_timeout: raw
                .run_timeout
                .and_then(|v| self.duration(&v, "run_timeout"))
                .unwrap_or(defaults.run_timeout),
            max_chunk: raw
                .max_chunk
                .and_then(|v| self.size(&v, "max_chunk"))
                .unwrap_or(defaults.max_chunk),
        }
    }

    /// A size string ("512MiB") or a plain integer number of bytes, greater than zero.
    fn size(&mut self, value: &Value<'_>, name: &str) -> Option<u64> {
        let span = raw::value_span(self.src, value);
        let bytes = match value.get_ref() {
            DeValue::String(text) => {
                parse_size(text).map_err(|e| format!("invalid limits.{name}: {e}"))
            }
            DeValue::Integer(n) => u64::from_str_radix(n.as_str(), n.radix())
                .map_err(|_| format!("limits.{name} must be a positive number of bytes")),
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
            Ok(0) => self.error(span, format!("limits.{name} must be greater than zero")),
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
            Ok(Duration::ZERO) => {
                self.error(span, format!("limits.{name} must be greater than zero"))
            }
            Ok(duration) => return Some(duration),
            Err(e) => self.error(span, format!("invalid limits.{name}: {e}")),
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
