//! Which schemas and tables a backup takes (include/exclude patterns) and which
//! unsupported object kinds the pipeline chose to leave out.

use runner_sdk::{Error, Result};

/// A `*`/`?` pattern on a name.
struct Pattern(String);

impl Pattern {
    fn matches(&self, name: &str) -> bool {
        fn go(p: &[char], n: &[char]) -> bool {
            match p.split_first() {
                None => n.is_empty(),
                Some(('*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
                Some(('?', rest)) => !n.is_empty() && go(rest, &n[1..]),
                Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
            }
        }
        let p: Vec<char> = self.0.chars().collect();
        let n: Vec<char> = name.chars().collect();
        go(&p, &n)
    }
}

fn patterns(field: &str, values: &[String], qualified: bool) -> Result<Vec<Pattern>> {
    values
        .iter()
        .map(|v| {
            if v.is_empty() {
                return Err(Error::config_field(field, "an empty pattern matches nothing"));
            }
            if qualified && !v.contains('.') {
                return Err(Error::config_field(field, format!("{v:?}: write tables as schema.table (patterns may use * and ?, e.g. \"app.*\")")));
            }
            Ok(Pattern(v.clone()))
        })
        .collect()
}

/// The compiled include/exclude options.
pub struct Selection {
    include_schemas: Vec<Pattern>,
    exclude_schemas: Vec<Pattern>,
    include_tables: Vec<Pattern>,
    exclude_tables: Vec<Pattern>,
    skip_unsupported: Vec<String>,
    /// Owners and GRANTs are backed up.
    pub privileges: bool,
}

impl Selection {
    pub fn new(config: &crate::Config) -> Result<Self> {
        Ok(Selection {
            include_schemas: patterns("include_schemas", &config.include_schemas, false)?,
            exclude_schemas: patterns("exclude_schemas", &config.exclude_schemas, false)?,
            include_tables: patterns("include_tables", &config.include_tables, true)?,
            exclude_tables: patterns("exclude_tables", &config.exclude_tables, true)?,
            skip_unsupported: config
                .skip_unsupported
                .iter()
                .map(|kind| {
                    if crate::catalog::UNSUPPORTED_KINDS.contains(&kind.as_str()) {
                        Ok(kind.clone())
                    } else {
                        Err(Error::config_field(
                            "skip_unsupported",
                            format!(
                                "unknown kind {kind:?}; the kinds are: {}",
                                crate::catalog::UNSUPPORTED_KINDS.join(", ")
                            ),
                        ))
                    }
                })
                .collect::<Result<_>>()?,
            privileges: config.privileges,
        })
    }

    /// Whether the schema's objects are backed up.
    pub fn schema(&self, name: &str) -> bool {
        (self.include_schemas.is_empty() || self.include_schemas.iter().any(|p| p.matches(name)))
            && !self.exclude_schemas.iter().any(|p| p.matches(name))
    }

    /// Whether the rows of `schema.table` are backed up (its definition always is).
    pub fn table_data(&self, name: &str) -> bool {
        (self.include_tables.is_empty() || self.include_tables.iter().any(|p| p.matches(name)))
            && !self.exclude_tables.iter().any(|p| p.matches(name))
    }

    /// Whether the pipeline leaves out unsupported objects of this kind.
    pub fn skips(&self, kind: &str) -> bool {
        self.skip_unsupported.iter().any(|k| k == kind)
    }
}
