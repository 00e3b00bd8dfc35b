//! Configuration errors: what was found, what was expected and where, rendered like a compiler diagnostic.

use std::fmt;

use super::location::Location;

/// One problem in a pipeline file, at its location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}{}", SnippetDisplay(self))]
pub struct ConfigError {
    pub location: Location,
    pub message: String,
    snippet: Option<Snippet>,
}

/// The offending source line and how many characters to underline from the location's column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snippet {
    pub(crate) line_text: String,
    pub(crate) width: usize,
}

impl ConfigError {
    pub fn new(location: Location, message: impl Into<String>) -> Self {
        ConfigError {
            location,
            message: message.into(),
            snippet: None,
        }
    }

    pub(crate) fn with_snippet(mut self, snippet: Snippet) -> Self {
        self.snippet = Some(snippet);
        self
    }

    /// The source line this error points at, when known.
    pub fn source_line(&self) -> Option<&str> {
        self.snippet.as_ref().map(|s| s.line_text.as_str())
    }
}

struct SnippetDisplay<'e>(&'e ConfigError);

impl fmt::Display for SnippetDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (Some(snippet), line) = (&self.0.snippet, self.0.location.line) else {
            return Ok(());
        };
        if line == 0 {
            return Ok(());
        }
        let gutter = line.to_string().len();
        // Keep tabs so the caret lines up with what the terminal shows for the line.
        let indent: String = snippet
            .line_text
            .chars()
            .take(self.0.location.column - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(
            f,
            "\n{:gutter$} |\n{line} | {}\n{:gutter$} | {indent}{}",
            "",
            snippet.line_text,
            "",
            "^".repeat(snippet.width)
        )
    }
}

/// Every problem found in one pipeline file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n\n"))]
pub struct ConfigErrors {
    errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// Sorted by location; never empty.
    pub(crate) fn new(mut errors: Vec<ConfigError>) -> Self {
        assert!(!errors.is_empty(), "ConfigErrors needs at least one error");
        errors.sort_by_key(|e| (e.location.line, e.location.column));
        ConfigErrors { errors }
    }

    pub fn first(&self) -> &ConfigError {
        &self.errors[0]
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.errors.iter()
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn into_vec(self) -> Vec<ConfigError> {
        self.errors
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors {
            errors: vec![error],
        }
    }
}
