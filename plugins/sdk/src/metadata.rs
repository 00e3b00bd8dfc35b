//! Ordered key/value pairs (artifact metadata, decoder parameters) and lookups on them.

use crate::Error;

/// Ordered key/value pairs.
pub type Metadata = Vec<(String, String)>;

/// Lookups on [`Metadata`].
pub trait MetadataExt {
    /// The value of `key`, if present.
    fn value(&self, key: &str) -> Option<&str>;
    /// The value of `key` parsed as `T`; a missing or unparsable value is `corrupt`:
    /// parameters come from a manifest the plugin itself wrote.
    fn require<T: std::str::FromStr>(&self, key: &str) -> Result<T, Error>;
}

impl MetadataExt for Metadata {
    fn value(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn require<T: std::str::FromStr>(&self, key: &str) -> Result<T, Error> {
        let raw = self
            .value(key)
            .ok_or_else(|| Error::corrupt(format!("parameter `{key}` is missing")))?;
        raw.parse()
            .map_err(|_| Error::corrupt(format!("parameter `{key}` has an invalid value {raw:?}")))
    }
}
