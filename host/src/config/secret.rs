//! Secret references in string values (`${env:NAME}`, `${file:PATH}`, `$${` for a literal `${`): parsing, resolution, redaction.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::error::ConfigError;
use super::location::Location;

/// A resolved secret. Never shows its value in Debug or Display; wiped from memory on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(Zeroizing::new(value))
    }

    /// The value itself, for the one place that needs it (a plugin's options, a key derivation).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where one secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env {
        name: String,
    },
    /// `path` is resolved against the pipeline file's directory; `written` is as in the file.
    File {
        path: PathBuf,
        written: String,
    },
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env { name } => write!(f, "${{env:{name}}}"),
            SecretRef::File { written, .. } => write!(f, "${{file:{written}}}"),
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Reference {
        reference: SecretRef,
        location: Location,
    },
}

/// A string value as written in the pipeline file, which may embed secret references.
/// Its written text is safe to log when it has references; Debug hides a purely literal value
/// (e.g. a passphrase typed into the file).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValueRef {
    written: String,
    parts: Vec<Part>,
}

/// A malformed reference: byte range within the string, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateError {
    pub(crate) range: std::ops::Range<usize>,
    pub(crate) message: String,
}

impl SecretValueRef {
    /// Splits `text` into literal parts and references. `locate` maps a byte index in `text`
    /// to its place in the file, so a failed resolution points at the reference itself.
    pub(crate) fn parse(
        text: &str,
        base_dir: &Path,
        locate: &dyn Fn(usize) -> Location,
    ) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(dollar) = rest.find('$') {
            let at = text.len() - rest.len() + dollar;
            literal.push_str(&rest[..dollar]);
            let tail = &rest[dollar..];
            if let Some(after) = tail.strip_prefix("$${") {
                literal.push_str("${");
                rest = after;
                continue;
            }
            if !tail.starts_with("${") {
                literal.push('$');
                rest = &tail[1..];
                continue;
            }
            let Some(close) = tail.find('}') else {
                let shown = tail.chars().take(40).collect::<String>();
                return Err(TemplateError {
                    range: at..text.len(),
                    message: format!(
                        "unterminated secret reference \"{shown}\"; expected a closing '}}' (write $${{ for a literal ${{)"
                    ),
                });
            };
            let reference =
                parse_reference(&tail[2..close], base_dir).map_err(|message| TemplateError {
                    range: at..at + close + 1,
                    message,
                })?;
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(Part::Reference {
                reference,
                location: locate(at),
            });
            rest = &tail[close + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(SecretValueRef {
            written: text.to_string(),
            parts,
        })
    }

    /// A reference given on the command line (`--new-passphrase '${env:NEW}'`). Only
    /// references are accepted: a secret typed as an argument would show in process listings.
    pub fn from_argument(text: &str, what: &str) -> Result<Self, String> {
        let cwd = std::env::current_dir().unwrap_or_default();
        let location = Location::whole_file(format!("<{what}>"));
        let value = Self::parse(text, &cwd, &|_| location.clone())
            .map_err(|e| format!("{what}: {}", e.message))?;
        if !value.has_references() {
            return Err(format!(
                "{what} must be a secret reference such as '${{env:NAME}}' or '${{file:PATH}}', not the secret itself"
            ));
        }
        Ok(value)
    }

    /// The text as written in the file: references as `${env:NAME}`, never their values.
    pub fn as_written(&self) -> &str {
        &self.written
    }

    pub fn references(&self) -> impl Iterator<Item = (&SecretRef, &Location)> {
        self.parts.iter().filter_map(|part| match part {
            Part::Reference {
                reference,
                location,
            } => Some((reference, location)),
            Part::Literal(_) => None,
        })
    }

    pub fn has_references(&self) -> bool {
        self.references().next().is_some()
    }

    /// Whether the value differs from the written text (a reference, or an escaped `$${`).
    pub(crate) fn needs_resolution(&self) -> bool {
        !matches!(self.parts.as_slice(), [] | [Part::Literal(_)]) || self.written.contains("$${")
    }

    pub fn resolve(&self, resolver: &SecretResolver) -> Result<Secret, ConfigError> {
        let mut value = Zeroizing::new(String::with_capacity(self.written.len()));
        for part in &self.parts {
            match part {
                Part::Literal(text) => value.push_str(text),
                Part::Reference {
                    reference,
                    location,
                } => value.push_str(resolver.resolve(reference, location)?.expose()),
            }
        }
        Ok(Secret(value))
    }
}

impl fmt::Debug for SecretValueRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.has_references() {
            f.debug_tuple("SecretValueRef")
                .field(&self.written)
                .finish()
        } else {
            f.write_str("SecretValueRef([redacted literal])")
        }
    }
}

fn parse_reference(inner: &str, base_dir: &Path) -> Result<SecretRef, String> {
    let Some((backend, argument)) = inner.split_once(':') else {
        return Err(format!(
            "secret reference \"${{{inner}}}\" names no backend; expected ${{env:NAME}} or ${{file:PATH}}"
        ));
    };
    match backend {
        "env" if argument.is_empty() => {
            Err("empty environment variable name in \"${env:}\"; expected ${env:NAME}".into())
        }
        "env" => {
            let mut chars = argument.chars();
            let valid_start = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            if valid_start && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
                Ok(SecretRef::Env {
                    name: argument.to_string(),
                })
            } else {
                Err(format!(
                    "invalid environment variable name \"{argument}\"; expected letters, digits and '_', not starting with a digit"
                ))
            }
        }
        "file" if argument.is_empty() => {
            Err("empty path in \"${file:}\"; expected ${file:PATH}".into())
        }
        "file" => Ok(SecretRef::File {
            path: base_dir.join(argument),
            written: argument.to_string(),
        }),
        other => Err(format!(
            "unknown secret backend \"{other}\" in \"${{{inner}}}\"; expected env or file"
        )),
    }
}

/// Looks secret references up: environment variables and files. Tests inject a fake environment.
#[derive(Debug, Clone, Default)]
pub struct SecretResolver {
    /// `None` reads the process environment.
    env: Option<HashMap<String, String>>,
}

impl SecretResolver {
    pub fn from_process_env() -> Self {
        SecretResolver { env: None }
    }

    /// A resolver that sees only `vars` as its environment.
    pub fn with_env<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        SecretResolver {
            env: Some(
                vars.into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            ),
        }
    }

    /// Resolves one reference; errors name the reference and where it is written, never a value.
    pub fn resolve(&self, reference: &SecretRef, at: &Location) -> Result<Secret, ConfigError> {
        match reference {
            SecretRef::Env { name } => {
                let value = match &self.env {
                    Some(vars) => vars
                        .get(name)
                        .cloned()
                        .ok_or(std::env::VarError::NotPresent),
                    None => std::env::var(name),
                };
                value.map(Secret::new).map_err(|e| {
                    let why = match e {
                        std::env::VarError::NotPresent => "is not set",
                        std::env::VarError::NotUnicode(_) => "is not valid UTF-8",
                    };
                    ConfigError::new(at.clone(), format!("environment variable {name} {why}"))
                })
            }
            SecretRef::File { path, written } => match std::fs::read(path) {
                Ok(bytes) => {
                    let bytes = Zeroizing::new(bytes);
                    let text = std::str::from_utf8(&bytes).map_err(|_| {
                        ConfigError::new(
                            at.clone(),
                            format!(
                                "secret file {} (from ${{file:{written}}}) is not valid UTF-8",
                                path.display()
                            ),
                        )
                    })?;
                    let text = text
                        .strip_suffix('\n')
                        .map(|t| t.strip_suffix('\r').unwrap_or(t))
                        .unwrap_or(text);
                    Ok(Secret::new(text.to_string()))
                }
                Err(e) => Err(ConfigError::new(
                    at.clone(),
                    format!(
                        "cannot read secret file {} (from ${{file:{written}}}): {e}",
                        path.display()
                    ),
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SecretValueRef, TemplateError> {
        SecretValueRef::parse(text, Path::new("/etc/runner"), &|i| Location {
            file: "p.toml".into(),
            line: 1,
            column: i + 1,
        })
    }

    #[test]
    fn parses_whole_embedded_and_escaped_references() {
        let whole = parse("${env:RUNNER_PASSPHRASE}").unwrap();
        assert_eq!(
            whole
                .references()
                .map(|(r, _)| r.clone())
                .collect::<Vec<_>>(),
            [SecretRef::Env {
                name: "RUNNER_PASSPHRASE".into()
            }]
        );

        let embedded = parse("postgres://app:${env:PGPASS}@db:5432/${file:dbname}").unwrap();
        let refs: Vec<_> = embedded
            .references()
            .map(|(r, l)| (r.to_string(), l.column))
            .collect();
        assert_eq!(
            refs,
            [
                ("${env:PGPASS}".to_string(), 16),
                ("${file:dbname}".to_string(), 38)
            ]
        );
        let SecretRef::File { path, .. } = embedded.references().nth(1).unwrap().0 else {
            panic!()
        };
        assert_eq!(path, Path::new("/etc/runner/dbname"));

        let escaped = parse("cost: $5, literal $${env:X}").unwrap();
        assert!(!escaped.has_references() && escaped.needs_resolution());
        assert_eq!(
            escaped
                .resolve(&SecretResolver::with_env([("X", "no")]))
                .unwrap()
                .expose(),
            "cost: $5, literal ${env:X}"
        );
        assert!(!parse("plain $ text").unwrap().needs_resolution());
    }

    #[test]
    fn rejects_malformed_references() {
        for (text, range, why) in [
            ("${env:}", 0..7, "empty environment variable name"),
            ("x ${vault:x}", 2..12, "unknown secret backend \"vault\""),
            ("${env:A", 0..7, "unterminated"),
            (
                "${env:1A}",
                0..9,
                "invalid environment variable name \"1A\"",
            ),
            ("${PGPASS}", 0..9, "names no backend"),
            ("${file:}", 0..8, "empty path"),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.range, range, "{text}");
            assert!(err.message.contains(why), "{text}: {}", err.message);
        }
    }

    #[test]
    fn resolves_env_and_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pass"), "s3cret\n\n").unwrap();
        let template = SecretValueRef::parse("${env:USER_NAME}:${file:pass}", dir.path(), &|_| {
            Location::whole_file("p.toml")
        })
        .unwrap();
        let resolver = SecretResolver::with_env([("USER_NAME", "app")]);
        assert_eq!(
            template.resolve(&resolver).unwrap().expose(),
            "app:s3cret\n",
            "only one trailing newline is trimmed"
        );

        let missing = template
            .resolve(&SecretResolver::with_env([("OTHER", "x")]))
            .unwrap_err();
        assert_eq!(missing.message, "environment variable USER_NAME is not set");
        std::fs::remove_file(dir.path().join("pass")).unwrap();
        let unreadable = template.resolve(&resolver).unwrap_err();
        assert!(
            unreadable.message.starts_with("cannot read secret file")
                && unreadable.message.contains("${file:pass}"),
            "{}",
            unreadable.message
        );
    }

    #[test]
    fn secrets_redact_themselves() {
        let secret = Secret::new("hunter2".into());
        assert_eq!(
            format!("{secret:?} {secret}"),
            "Secret([redacted]) [redacted]"
        );
        let literal = parse("hunter2").unwrap();
        assert!(!format!("{literal:?}").contains("hunter2"));
        assert_eq!(
            format!("{:?}", parse("${env:X}").unwrap()),
            "SecretValueRef(\"${env:X}\")"
        );
    }
}
