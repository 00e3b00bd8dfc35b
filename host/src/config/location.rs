//! Where something is in a pipeline file: byte spans turned into 1-based line and column.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::error::{ConfigError, Snippet};

/// A position in a pipeline file. Line and column are 1-based, columns count characters.
/// Line 0 means the file as a whole (e.g. it could not be read).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The file as a whole, for errors that have no line (unreadable file, missing table).
    pub fn whole_file(file: impl Into<PathBuf>) -> Self {
        Location {
            file: file.into(),
            line: 0,
            column: 0,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
        }
    }
}

/// The text of a pipeline file, indexed by line so spans become locations and snippets.
pub(crate) struct SourceFile<'t> {
    path: PathBuf,
    text: &'t str,
    line_starts: Vec<usize>,
}

impl<'t> SourceFile<'t> {
    pub(crate) fn new(path: &Path, text: &'t str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SourceFile {
            path: path.to_path_buf(),
            text,
            line_starts,
        }
    }

    pub(crate) fn text(&self) -> &'t str {
        self.text
    }

    pub(crate) fn location(&self, offset: usize) -> Location {
        let offset = self.floor_char_boundary(offset.min(self.text.len()));
        let line = self.line_starts.partition_point(|&start| start <= offset) - 1;
        let column = self.text[self.line_starts[line]..offset].chars().count() + 1;
        Location {
            file: self.path.clone(),
            line: line + 1,
            column,
        }
    }

    /// An error pointing at `span`, with the line's text and a caret under the span.
    pub(crate) fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let location = self.location(span.start);
        let line_start = self.line_starts[location.line - 1];
        let line_end = self.text[line_start..]
            .find('\n')
            .map_or(self.text.len(), |i| line_start + i);
        let start = self.floor_char_boundary(span.start.min(line_end));
        let end = self.floor_char_boundary(span.end.clamp(start, line_end));
        let snippet = Snippet {
            line_text: self.text[line_start..line_end]
                .trim_end_matches('\r')
                .to_string(),
            width: self.text[start..end].chars().count().max(1),
        };
        ConfigError::new(location, message).with_snippet(snippet)
    }

    /// An error about the file as a whole (a required table is missing), placed at its start.
    pub(crate) fn file_start_error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.location(0), message)
    }

    /// The span of a string value's content, without its quotes, so errors point at the text.
    pub(crate) fn string_content(&self, span: Range<usize>) -> Range<usize> {
        let raw = self.text.get(span.clone()).unwrap_or("");
        let (open, close) = match raw.as_bytes().first() {
            Some(b'"' | b'\'')
                if raw.len() >= 6 && (raw.starts_with("\"\"\"") || raw.starts_with("'''")) =>
            {
                let newline = if raw[3..].starts_with("\r\n") {
                    2
                } else {
                    usize::from(raw[3..].starts_with('\n'))
                };
                (3 + newline, 3)
            }
            Some(b'"' | b'\'') if raw.len() >= 2 => (1, 1),
            _ => return span,
        };
        span.start + open..(span.end - close).max(span.start + open)
    }

    /// Byte offset in the file of byte `index` of a decoded string whose content spans `content`.
    /// Exact when the string has no escapes; otherwise the start of the content.
    pub(crate) fn offset_in_string(
        &self,
        content: &Range<usize>,
        decoded: &str,
        index: usize,
    ) -> usize {
        match self.text.get(content.clone()) {
            Some(raw) if raw == decoded => content.start + index,
            _ => content.start,
        }
    }

    fn floor_char_boundary(&self, mut offset: usize) -> usize {
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        offset
    }
}
