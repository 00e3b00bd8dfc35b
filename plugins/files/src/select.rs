//! Glob selection of items by their `artifact/relative/path` (backup include and exclude,
//! restore `only`).

use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};
use runner_sdk::{Error, Result};

/// A set of globs. `*` and `?` stay within one path component, `**` crosses them;
/// names are matched as raw bytes, so non-UTF-8 names can be selected too.
pub struct Globs(GlobSet);

impl Globs {
    /// None for an empty list. `field` names the option in configuration errors.
    pub fn new(field: &str, patterns: &[String]) -> Result<Option<Self>> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let mut set = GlobSetBuilder::new();
        for (i, pattern) in patterns.iter().enumerate() {
            let glob = GlobBuilder::new(pattern.trim_end_matches('/'))
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| {
                    Error::config_field(
                        format!("{field}[{i}]"),
                        format!("invalid glob {pattern:?}: {e}"),
                    )
                })?;
            set.add(glob);
        }
        let set = set.build().map_err(|e| Error::config_field(field, e))?;
        Ok(Some(Globs(set)))
    }

    /// Whether the item `artifact/path` (just `artifact` for the root) matches.
    pub fn matches(&self, artifact: &str, path: &[u8]) -> bool {
        let mut item = Vec::with_capacity(artifact.len() + 1 + path.len());
        item.extend_from_slice(artifact.as_bytes());
        if !path.is_empty() {
            item.push(b'/');
            item.extend_from_slice(path);
        }
        self.0.is_match_candidate(&Candidate::from_bytes(&item))
    }
}

/// Joins a directory's path and a relative path below it (empty: the directory itself).
pub fn child_path(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = Vec::with_capacity(dir.len() + 1 + name.len());
    path.extend_from_slice(dir);
    if !dir.is_empty() && !name.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}
