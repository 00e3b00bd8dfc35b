//! The `postgres` source: a logical backup of one PostgreSQL database taken in one
//! consistent snapshot, and an all-or-nothing restore into a fresh or replaced database.
//!
//! # Configuration
//!
//! ```toml
//! [source]
//! type = "postgres"
//! url = "postgres://backup@db.internal:5432/app"   # the stage may reach exactly this host:port
//! password = "${env:PGPASSWORD}"                    # a secret reference; omit for trust auth
//! include_schemas = ["app", "billing"]              # patterns with * and ?; empty = every schema
//! exclude_schemas = ["scratch_*"]
//! include_tables = ["app.*"]                        # whose rows are backed up; empty = every table
//! exclude_tables = ["app.audit_log"]                # definition kept, rows left out
//! skip_unsupported = ["rule"]                       # object kinds to leave out knowingly
//! privileges = false                                # true: owners and GRANTs too
//! jobs = 2                                          # connections: tables read/loaded at once
//! ```
//!
//! # Artifacts
//!
//! `schema` (JSON, [`catalog::SchemaDoc`]): the DDL before the data (schemas, extensions,
//! types, functions, sequences, tables, views) and after it (keys, indexes, foreign keys,
//! triggers, row security and policies, comments), every sequence's value and the
//! materialized views to refresh. Then one artifact per table, named `schema.table`, holding
//! its rows as `COPY … TO STDOUT` text; metadata `rows` (exact), `columns`, `server_version`.
//! Everything is read in one `REPEATABLE READ, READ ONLY` transaction whose exported
//! snapshot is the session's share token: another instance joins it with `SET TRANSACTION
//! SNAPSHOT`, so parallel readers see the same database (the host runs `jobs` instances
//! joined this way, each reading other tables, like `pg_dump -j`). Each table artifact
//! records the snapshot and the server process that read it (`snapshot`, `backend_pid`).
//!
//! An object kind this plugin does not restore (rules, aggregates, foreign tables,
//! operators, …) fails the backup, naming every such object, unless its kind is listed in
//! `skip_unsupported`. Owners and privileges are backed up only with `privileges = true`
//! (then the roles must exist where the database is restored); without it restored
//! objects belong to the restoring user (pg_dump's `--no-owner --no-privileges`).
//!
//! # Restore
//!
//! `target` is a database name on the server of `url`, or a `postgres://` URL. With the
//! `schema` artifact the whole database is rebuilt in a new staging database
//! (`<target>_runner_staging_<random>`): schema, rows, then keys, indexes, foreign keys,
//! triggers, sequence values and materialized view refreshes. Table artifacts carry
//! `parallel_after = "schema"`: once the schema is in, the host writes up to `jobs` tables
//! at once, each on its own connection; keys, indexes and foreign keys are then built on
//! `jobs` connections, statements that touch the same table (or partition tree) always on
//! the same one, so they never wait on or deadlock with each other. Only when every step
//! succeeded is staging renamed to the target; an existing target is replaced only with
//! `mode = replace` (renamed aside, then dropped). On failure staging is dropped and the
//! target is untouched. Without the `schema` artifact (`--only app.orders`), the selected
//! tables' rows are loaded into the existing target's tables in one transaction
//! (`replace` truncates each first; `merge` appends and needs `overwrite` when the table
//! has rows).

mod backup;
mod catalog;
mod client;
mod restore;
mod select;

use std::rc::Rc;

use runner_sdk::{Error, Plugin, RestoreOptions, Result, Source};

use crate::backup::PgBackup;
use crate::client::ConnInfo;
use crate::restore::PgRestore;
use crate::select::Selection;

/// The stage's table.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    url: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    include_schemas: Vec<String>,
    #[serde(default)]
    exclude_schemas: Vec<String>,
    #[serde(default)]
    include_tables: Vec<String>,
    #[serde(default)]
    exclude_tables: Vec<String>,
    #[serde(default)]
    skip_unsupported: Vec<String>,
    /// Back up owners and privileges (GRANTs) too; the roles must exist where it restores.
    #[serde(default)]
    privileges: bool,
    /// Connections used at once: tables read in parallel (the host joins that many
    /// sessions to one exported snapshot) and loaded and indexed in parallel at restore.
    #[serde(default = "default_jobs")]
    jobs: u32,
}

/// `jobs` when the pipeline does not say: two connections, what `pg_dump -j 2` uses.
pub const DEFAULT_JOBS: u32 = 2;
/// More connections than this is a mistake (every one is a server process).
const MAX_JOBS: u32 = 64;

fn default_jobs() -> u32 {
    DEFAULT_JOBS
}

struct Postgres {
    server: ConnInfo,
    selection: Rc<Selection>,
    jobs: usize,
}

impl Plugin for Postgres {
    const NAME: &'static str = "postgres";
    const DESCRIPTION: &'static str =
        "PostgreSQL databases: one consistent snapshot, restored all-or-nothing";
    type Config = Config;

    fn new(config: Config) -> Result<Self> {
        let mut server = ConnInfo::parse(&config.url).map_err(|e| Error::config_field("url", e))?;
        server.password = config.password.clone().filter(|p| !p.is_empty());
        if !(1..=MAX_JOBS).contains(&config.jobs) {
            return Err(Error::config_field(
                "jobs",
                format!("{} connections: expected 1 to {MAX_JOBS}", config.jobs),
            ));
        }
        Ok(Postgres {
            server,
            selection: Rc::new(Selection::new(&config)?),
            jobs: config.jobs as usize,
        })
    }
}

impl Source for Postgres {
    type Backup = PgBackup;
    type Restore = PgRestore;

    fn begin_backup(&self, share_token: Option<String>) -> Result<PgBackup> {
        PgBackup::begin(&self.server, self.selection.clone(), share_token)
    }

    fn begin_restore(&self, options: RestoreOptions) -> Result<PgRestore> {
        PgRestore::begin(&self.server, options, self.jobs)
    }
}

runner_sdk::export_source!(Postgres);
