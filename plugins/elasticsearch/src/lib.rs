//! The `elasticsearch` source: backs up indices (settings, mappings, aliases, documents)
//! from one consistent point in time and restores them by bulk indexing, merging into or
//! replacing what the cluster holds.
//!
//! # Configuration
//!
//! ```toml
//! [source]
//! type = "elasticsearch"
//! url = "https://es.internal:9200"   # the host grants HTTP to exactly this origin
//! indices = ["logs-*", "products"]   # names or patterns; default: every non-system index
//! page_size = 1000                   # documents per search page
//! api_key = "${env:ES_API_KEY}"      # or username + password; resolved and sent by the host
//! target_prefix = ""                 # restore `products` as `<prefix>products`
//! batch_docs = 500                   # documents per bulk request on restore
//! batch_bytes = 5242880              # and at most this many bytes of documents
//! max_retries = 8                    # attempts for a request refused with 429/503
//! ca_file = "/etc/runner/es-ca.pem"  # https: trust this CA bundle (the host's sender)
//! ```
//!
//! Credentials never reach this plugin: the host resolves `api_key` (or `username` and
//! `password`) and adds the `Authorization` header to every request to `url`'s origin.
//!
//! # Artifacts
//!
//! Per index two, listed in this order:
//! - `<index>/meta` (`application/json`, schema 1): `{"index", "settings", "mappings",
//!   "aliases", "cluster_version", "distribution"}`; settings without what the cluster
//!   assigns (uuid, creation date, version, provided name, routing allocation internals);
//! - `<index>/documents` (`application/x-ndjson`, schema 1): one line per document,
//!   `{"_id": …, "_source": {…}}` plus `"_routing"` when the document has one.
//!
//! Metadata: `index`, `cluster_version`, `documents` (the count at the point in time) and,
//! after reading, `exported`.
//!
//! # Consistency
//!
//! Elasticsearch 7.12 and later: one point in time per index (`POST /{index}/_pit`), opened
//! when the backup begins, read in `_shard_doc` order with `search_after`. OpenSearch 2.4
//! and later: the same with OpenSearch's own API (`POST /{index}/_search/point_in_time`,
//! `DELETE /_search/point_in_time`), in `_shard_doc` order from 3.3 and `_id` order before
//! (OpenSearch 2.x has no `_shard_doc`). The distribution comes from `GET /`
//! (`version.distribution`). Older clusters: one scroll per index, also opened when the
//! backup begins. Documents indexed after that are not in the backup.
//!
//! # Restore
//!
//! `--target PREFIX` (or `target_prefix`) renames each index (and its aliases) to
//! `PREFIX<index>`. `--only 'products/*'` restores one index.
//! - `merge`: documents are bulk-indexed with their original `_id` (and routing) into the
//!   existing index, which is created from `<index>/meta` when missing. Documents of the
//!   index that are not in the snapshot stay. Indexing happens as the artifact streams in.
//! - `replace`: a new index `<target>-restore-<millis>` is created with the snapshot's
//!   settings and mappings and loaded; on commit, one atomic `_aliases` call removes the old
//!   index and points the alias `<target>` (and the snapshot's aliases) at the new one. If
//!   anything fails, the new index is deleted and the old one is untouched.
//!
//! Bulk requests carry at most `batch_docs` documents and `batch_bytes` bytes; requests
//! and items refused with 429 (or 503) are retried with exponential backoff. Documents the
//! cluster rejects (a mapping conflict) are collected with their `_id` and reason: the
//! restore then fails, listing them (replace: without swapping). After loading, each index
//! is refreshed and its count checked against the snapshot's.

mod backup;
mod client;
mod meta;
mod restore;

use std::rc::Rc;

use runner_sdk::{Error, Plugin, RestoreOptions, Result, Source};

use crate::backup::EsBackup;
use crate::restore::EsRestore;

/// The stage's table.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    url: String,
    #[serde(default)]
    indices: Vec<String>,
    #[serde(default = "default_page_size")]
    page_size: u32,
    /// Held by the host (which injects the header); here only as written, to say auth is on.
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    target_prefix: Option<String>,
    #[serde(default = "default_batch_docs")]
    batch_docs: usize,
    #[serde(default = "default_batch_bytes")]
    batch_bytes: usize,
    #[serde(default = "default_max_retries")]
    max_retries: u32,
    /// How long the cluster keeps a point in time or scroll between two pages.
    #[serde(default = "default_keep_alive")]
    keep_alive: String,
    /// A PEM bundle of CA certificates the host's HTTPS to `url` trusts (used by the host;
    /// here only to be accepted as an option).
    #[serde(default)]
    ca_file: Option<String>,
}

fn default_page_size() -> u32 {
    1000
}
fn default_batch_docs() -> usize {
    500
}
fn default_batch_bytes() -> usize {
    5 << 20
}
fn default_max_retries() -> u32 {
    8
}
fn default_keep_alive() -> String {
    "5m".to_string()
}

/// The configuration, checked.
pub struct Settings {
    url: String,
    /// How the host authenticates requests, as written (secret references, never values).
    credentials: Option<String>,
    indices: Vec<String>,
    page_size: u32,
    target_prefix: String,
    batch_docs: usize,
    batch_bytes: usize,
    max_retries: u32,
    keep_alive: String,
}

impl Settings {
    fn cluster(&self) -> client::Cluster {
        client::Cluster::new(&self.url, self.max_retries)
    }
}

struct Elasticsearch {
    settings: Rc<Settings>,
}

impl Plugin for Elasticsearch {
    const NAME: &'static str = "elasticsearch";
    const DESCRIPTION: &'static str =
        "Elasticsearch/OpenSearch indices: settings, mappings, aliases, documents";
    type Config = Config;

    fn new(config: Config) -> Result<Self> {
        if !(config.url.starts_with("http://") || config.url.starts_with("https://")) {
            return Err(Error::config_field(
                "url",
                "expected http://host:port or https://host:port",
            ));
        }
        if !(1..=10_000).contains(&config.page_size) {
            return Err(Error::config_field(
                "page_size",
                "expected 1 to 10000 documents per page",
            ));
        }
        if config.batch_docs == 0 {
            return Err(Error::config_field(
                "batch_docs",
                "expected at least 1 document per bulk request",
            ));
        }
        if config.batch_bytes < 1024 {
            return Err(Error::config_field(
                "batch_bytes",
                "expected at least 1024 bytes per bulk request",
            ));
        }
        for (i, pattern) in config.indices.iter().enumerate() {
            if pattern.is_empty() || pattern.contains([',', '/', ' ', '"', '\\', '?', '#']) {
                return Err(Error::config_field(
                    format!("indices[{i}]"),
                    format!(
                        "{pattern:?} is not an index name or pattern (letters, digits, -, _, ., *)"
                    ),
                ));
            }
        }
        if config.ca_file.is_some() && !config.url.starts_with("https://") {
            return Err(Error::config_field("ca_file", "is for https URLs"));
        }
        let credentials = match (&config.api_key, &config.username, &config.password) {
            (Some(key), _, _) => Some(format!("API key {key}")),
            (None, Some(user), Some(password)) => Some(format!("basic auth {user} / {password}")),
            _ => None,
        };
        let prefix = config.target_prefix.unwrap_or_default();
        if prefix
            .chars()
            .any(|c| c.is_ascii_uppercase() || matches!(c, ',' | '/' | ' ' | '*' | '?' | '"' | '#'))
        {
            return Err(Error::config_field(
                "target_prefix",
                "index names are lowercase without , / * ? \" # or spaces",
            ));
        }
        let keep_alive = config.keep_alive;
        if keep_alive.is_empty()
            || !keep_alive
                .trim_end_matches(char::is_alphabetic)
                .chars()
                .all(|c| c.is_ascii_digit())
        {
            return Err(Error::config_field(
                "keep_alive",
                "expected a time value such as \"5m\" or \"90s\"",
            ));
        }
        Ok(Elasticsearch {
            settings: Rc::new(Settings {
                url: config.url,
                credentials,
                indices: config.indices,
                page_size: config.page_size,
                target_prefix: prefix,
                batch_docs: config.batch_docs,
                batch_bytes: config.batch_bytes,
                max_retries: config.max_retries,
                keep_alive,
            }),
        })
    }
}

impl Source for Elasticsearch {
    type Backup = EsBackup;
    type Restore = EsRestore;

    fn begin_backup(&self, _share_token: Option<String>) -> Result<EsBackup> {
        EsBackup::begin(self.settings.clone())
    }

    fn begin_restore(&self, options: RestoreOptions) -> Result<EsRestore> {
        EsRestore::begin(self.settings.clone(), options)
    }
}

runner_sdk::export_source!(Elasticsearch);
