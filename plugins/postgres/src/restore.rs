//! Restore: a whole database rebuilt in a staging database that is renamed onto the
//! target only when complete, or selected tables' rows loaded into an existing target in
//! one transaction. On any failure the target is as it was.

use std::cell::RefCell;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;

use runner_sdk::{
    Artifact, ArtifactWriter, Error, MetadataExt, RestoreMode, RestoreOptions, RestoreReport,
    RestoreSession, Result,
};

use crate::backup::{SCHEMA_ARTIFACT, SCHEMA_MEDIA_TYPE, TABLE_MEDIA_TYPE};
use crate::catalog::{SCHEMA_FORMAT, SchemaDoc};
use crate::client::{Conn, ConnInfo, abbreviate, ident, literal};

/// Where maintenance statements (CREATE/ALTER/DROP DATABASE) run.
const MAINTENANCE_DATABASE: &str = "postgres";
/// PostgreSQL's longest identifier, in bytes.
const MAX_NAME: usize = 63;

/// What the session is doing.
enum State {
    /// Nothing written yet.
    Start,
    /// Rebuilding the whole database in `staging`.
    Whole {
        admin: Conn,
        conn: Conn,
        staging: String,
        doc: SchemaDoc,
    },
    /// Loading rows into the existing target, inside one transaction.
    Tables {
        conn: Conn,
    },
    /// A dry run: nothing is written.
    DryRun,
    Finished,
}

struct Inner {
    server: ConnInfo,
    target: String,
    options: RestoreOptions,
    target_exists: bool,
    state: State,
    reports: Vec<RestoreReport>,
}

pub struct PgRestore {
    inner: Rc<RefCell<Inner>>,
}

impl PgRestore {
    pub fn begin(source: &ConnInfo, options: RestoreOptions) -> Result<Self> {
        let Some(target) = options.target.clone().filter(|t| !t.is_empty()) else {
            return Err(Error::invalid_input(
                "restoring PostgreSQL needs --target: a database name on the source's server, or a postgres:// URL",
            ));
        };
        let server = if target.starts_with("postgres://") || target.starts_with("postgresql://") {
            let mut info = ConnInfo::parse(&target)
                .map_err(|e| Error::invalid_input(format!("--target {target:?}: {e}")))?;
            info.password = source.password.clone();
            info
        } else {
            let mut info = source.clone();
            info.database = target.clone();
            info
        };
        let mut admin = Conn::connect(&server, MAINTENANCE_DATABASE)?;
        let exists = !admin
            .query(&format!(
                "SELECT 1 FROM pg_catalog.pg_database WHERE datname = {}",
                literal(&server.database)
            ))?
            .is_empty();
        admin.close();
        let target = server.database.clone();
        let state = if options.dry_run {
            State::DryRun
        } else {
            State::Start
        };
        Ok(PgRestore {
            inner: Rc::new(RefCell::new(Inner {
                server,
                target,
                options,
                target_exists: exists,
                state,
                reports: Vec::new(),
            })),
        })
    }
}

impl Inner {
    /// Creates the staging database and builds everything before the data in it.
    fn start_whole(&mut self, doc: SchemaDoc) -> Result<()> {
        if self.target_exists && !matches!(self.options.mode, RestoreMode::Replace) {
            return Err(Error::AlreadyExists(format!(
                "database {:?} exists at {}; restore into a new name, or pass --mode replace to replace it",
                self.target,
                self.server.address()
            )));
        }
        let staging = side_name(&self.target, "staging");
        let mut admin = Conn::connect(&self.server, MAINTENANCE_DATABASE)?;
        let mut create = format!("CREATE DATABASE {} TEMPLATE template0", ident(&staging));
        if !doc.encoding.is_empty() {
            create.push_str(&format!(" ENCODING {}", literal(&doc.encoding)));
        }
        if !doc.lc_collate.is_empty() {
            create.push_str(&format!(
                " LC_COLLATE {} LC_CTYPE {}",
                literal(&doc.lc_collate),
                literal(&doc.lc_ctype)
            ));
        }
        admin.execute(&create)?;
        runner_sdk::info!(
            "restoring into staging database {staging:?} at {}",
            self.server.address()
        );
        let built = (|| {
            let mut conn = Conn::connect(&self.server, &staging)?;
            conn.execute("SELECT pg_catalog.set_config('search_path', '', false); SET check_function_bodies = false; SET client_min_messages = warning")?;
            create_in_dependency_order(&mut conn, &doc.pre_data)?;
            Ok::<_, Error>(conn)
        })();
        match built {
            Ok(conn) => {
                self.state = State::Whole {
                    admin,
                    conn,
                    staging,
                    doc,
                };
                Ok(())
            }
            Err(e) => {
                drop_database(&mut admin, &staging);
                admin.close();
                Err(e)
            }
        }
    }

    /// Opens the transaction that loads rows into the existing target.
    fn start_tables(&mut self) -> Result<()> {
        if !self.target_exists {
            return Err(Error::not_found(format!(
                "database {:?} does not exist at {}: restoring single tables loads their rows into an existing database; include the `schema` artifact to create one",
                self.target,
                self.server.address()
            )));
        }
        let mut conn = Conn::connect(&self.server, &self.target)?;
        conn.execute("SELECT pg_catalog.set_config('search_path', '', false); BEGIN")?;
        self.state = State::Tables { conn };
        Ok(())
    }

    fn abort(&mut self) {
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Whole {
                mut admin,
                conn,
                staging,
                ..
            } => {
                conn.close();
                drop_database(&mut admin, &staging);
                admin.close();
            }
            // Closing the connection rolls the transaction back.
            State::Tables { conn } => conn.close(),
            _ => {}
        }
    }

    fn commit(&mut self) -> Result<()> {
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Whole {
                mut admin,
                mut conn,
                staging,
                doc,
            } => {
                let finished = (|| {
                    for statement in doc
                        .post_data
                        .iter()
                        .chain(&doc.sequences)
                        .chain(&doc.refresh)
                    {
                        conn.execute(statement)?;
                    }
                    Ok::<_, Error>(())
                })();
                conn.close();
                let swapped = finished.and_then(|()| self.swap(&mut admin, &staging));
                if swapped.is_err() {
                    drop_database(&mut admin, &staging);
                }
                admin.close();
                swapped?;
                self.reports.insert(
                    0,
                    report(
                        SCHEMA_ARTIFACT,
                        vec![
                            ("database".into(), self.target.clone()),
                            (
                                "statements".into(),
                                (doc.pre_data.len() + doc.post_data.len()).to_string(),
                            ),
                            ("sequences".into(), doc.sequences.len().to_string()),
                            ("materialized_views".into(), doc.refresh.len().to_string()),
                        ],
                    ),
                );
                Ok(())
            }
            State::Tables { mut conn } => {
                let committed = conn.execute("COMMIT");
                conn.close();
                committed
            }
            State::DryRun | State::Start | State::Finished => Ok(()),
        }
    }

    /// Renames the complete staging database onto the target (an existing target is
    /// renamed aside first and dropped after).
    fn swap(&self, admin: &mut Conn, staging: &str) -> Result<()> {
        let target = ident(&self.target);
        if self.target_exists {
            let old = side_name(&self.target, "old");
            admin.execute(&format!(
                "ALTER DATABASE {target} RENAME TO {}",
                ident(&old)
            ))?;
            if let Err(e) = admin.execute(&format!(
                "ALTER DATABASE {} RENAME TO {target}",
                ident(staging)
            )) {
                let _ = admin.execute(&format!(
                    "ALTER DATABASE {} RENAME TO {target}",
                    ident(&old)
                ));
                return Err(e);
            }
            if let Err(e) = admin.execute(&format!("DROP DATABASE {} WITH (FORCE)", ident(&old))) {
                runner_sdk::warn!(
                    "the replaced database was renamed {old:?} but could not be dropped: {e:?}"
                );
            }
        } else {
            admin.execute(&format!(
                "ALTER DATABASE {} RENAME TO {target}",
                ident(staging)
            ))?;
        }
        Ok(())
    }
}

/// SQLSTATEs of a statement that names something not created yet: undefined table,
/// object (type), function, schema.
const NOT_YET_CREATED: &[&str] = &["42P01", "42704", "42883", "3F000"];

/// Runs the statements in their recorded order; one that fails because something it
/// names does not exist yet is retried after the others, until every statement ran or
/// a whole pass made no progress (then the first such error is the restore's). This
/// settles dependencies the recorded order does not (a domain whose check calls a
/// function, a function returning a view's row type, a `BEGIN ATOMIC` body).
fn create_in_dependency_order(conn: &mut Conn, statements: &[String]) -> Result<()> {
    let mut pending: Vec<&String> = statements.iter().collect();
    while !pending.is_empty() {
        let mut deferred = Vec::new();
        let mut first_error = None;
        for &statement in &pending {
            match conn.query_checked(statement)? {
                Ok(_) => {}
                Err(e) if NOT_YET_CREATED.contains(&e.code.as_str()) => {
                    first_error.get_or_insert((e, statement));
                    deferred.push(statement);
                }
                Err(e) => {
                    return Err(
                        e.to_error(&format!("restoring `{}` failed", abbreviate(statement)))
                    );
                }
            }
        }
        if let Some((e, statement)) = first_error
            && deferred.len() == pending.len()
        {
            return Err(e.to_error(&format!("restoring `{}` failed", abbreviate(statement))));
        }
        pending = deferred;
    }
    Ok(())
}

fn drop_database(admin: &mut Conn, name: &str) {
    if let Err(e) = admin.execute(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        ident(name)
    )) {
        runner_sdk::warn!("could not drop the staging database {name:?}: {e:?}");
    }
}

/// `<target>_runner_<what>_<random>`, cut to PostgreSQL's name length.
fn side_name(target: &str, what: &str) -> String {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let suffix = format!("_runner_{what}_{:08x}", random as u32);
    let mut prefix = target.to_string();
    while prefix.len() + suffix.len() > MAX_NAME {
        prefix.pop();
    }
    format!("{prefix}{suffix}")
}

fn report(artifact: &str, metadata: Vec<(String, String)>) -> RestoreReport {
    RestoreReport {
        artifact: artifact.to_string(),
        metadata,
        warnings: Vec::new(),
    }
}

impl RestoreSession for PgRestore {
    type Writer = PgWriter;

    fn write_artifact(&mut self, artifact: Artifact) -> Result<PgWriter> {
        let mut inner = self.inner.borrow_mut();
        if artifact.media_type == SCHEMA_MEDIA_TYPE {
            if artifact.schema_version != SCHEMA_FORMAT {
                return Err(Error::unsupported(format!(
                    "schema artifact format {} (this plugin reads {SCHEMA_FORMAT})",
                    artifact.schema_version
                )));
            }
            if !matches!(inner.state, State::Start | State::DryRun) {
                return Err(Error::invalid_input(
                    "the schema artifact must come before any table",
                ));
            }
            return Ok(PgWriter {
                inner: self.inner.clone(),
                artifact,
                kind: WriterKind::Schema(Vec::new()),
            });
        }
        if artifact.media_type != TABLE_MEDIA_TYPE {
            return Err(Error::unsupported(format!(
                "artifact {:?} has media type {:?}, not a PostgreSQL table",
                artifact.name, artifact.media_type
            )));
        }
        let table = artifact
            .metadata
            .value("table")
            .ok_or_else(|| Error::corrupt(format!("artifact {:?} names no table", artifact.name)))?
            .to_string();
        let columns: Vec<String> = serde_json::from_str(
            artifact.metadata.value("columns").unwrap_or("[]"),
        )
        .map_err(|e| Error::corrupt(format!("artifact {:?}: columns: {e}", artifact.name)))?;
        if matches!(inner.state, State::Start) {
            inner.start_tables()?;
        }
        let copy = format!("COPY {table} ({}) FROM STDIN", columns.join(", "));
        let replace = matches!(inner.options.mode, RestoreMode::Replace);
        let overwrite = inner.options.overwrite;
        match &mut inner.state {
            State::Whole { conn, .. } => conn.copy_in(&copy)?,
            State::Tables { conn } => {
                if conn
                    .query(&format!(
                        "SELECT pg_catalog.to_regclass({})",
                        literal(&table)
                    ))?
                    .first()
                    .and_then(|r| r[0].clone())
                    .is_none()
                {
                    return Err(Error::not_found(format!(
                        "table {table} does not exist in the target database; restore the `schema` artifact with it"
                    )));
                }
                if replace {
                    conn.execute(&format!("TRUNCATE ONLY {table}"))?;
                } else if !overwrite
                    && !conn
                        .query(&format!("SELECT 1 FROM {table} LIMIT 1"))?
                        .is_empty()
                {
                    return Err(Error::AlreadyExists(format!(
                        "table {table} has rows; pass --overwrite to add to them, or --mode replace to replace them"
                    )));
                }
                conn.copy_in(&copy)?;
            }
            State::DryRun => {}
            State::Start | State::Finished => {
                return Err(Error::invalid_input("write after commit or abort"));
            }
        }
        Ok(PgWriter {
            inner: self.inner.clone(),
            artifact,
            kind: WriterKind::Table { table, bytes: 0 },
        })
    }

    fn commit(&mut self) -> Result<Vec<RestoreReport>> {
        let mut inner = self.inner.borrow_mut();
        inner.commit()?;
        Ok(std::mem::take(&mut inner.reports))
    }

    fn abort(&mut self) {
        self.inner.borrow_mut().abort();
    }
}

enum WriterKind {
    /// The schema document, applied when complete.
    Schema(Vec<u8>),
    Table {
        table: String,
        bytes: u64,
    },
}

pub struct PgWriter {
    inner: Rc<RefCell<Inner>>,
    artifact: Artifact,
    kind: WriterKind,
}

impl ArtifactWriter for PgWriter {
    fn write(&mut self, chunk: &[u8]) -> Result<()> {
        match &mut self.kind {
            WriterKind::Schema(buffer) => buffer.extend_from_slice(chunk),
            WriterKind::Table { bytes, .. } => {
                *bytes += chunk.len() as u64;
                let mut inner = self.inner.borrow_mut();
                match &mut inner.state {
                    State::Whole { conn, .. } | State::Tables { conn } => {
                        conn.copy_in_data(chunk)?
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let mut inner = self.inner.borrow_mut();
        match &mut self.kind {
            WriterKind::Schema(buffer) => {
                let doc: SchemaDoc = serde_json::from_slice(buffer)
                    .map_err(|e| Error::corrupt(format!("schema artifact: {e}")))?;
                if matches!(inner.state, State::DryRun) {
                    if inner.target_exists && !matches!(inner.options.mode, RestoreMode::Replace) {
                        return Err(Error::AlreadyExists(format!(
                            "database {:?} exists; a restore would need --mode replace",
                            inner.target
                        )));
                    }
                    let report = report(
                        SCHEMA_ARTIFACT,
                        vec![
                            ("database".into(), inner.target.clone()),
                            (
                                "statements".into(),
                                (doc.pre_data.len() + doc.post_data.len()).to_string(),
                            ),
                            ("replaces".into(), inner.target_exists.to_string()),
                        ],
                    );
                    inner.reports.push(report);
                    return Ok(());
                }
                inner.start_whole(doc)
            }
            WriterKind::Table { table, bytes } => {
                let expected: Option<u64> = self
                    .artifact
                    .metadata
                    .value("rows")
                    .and_then(|r| r.parse().ok());
                let rows = match &mut inner.state {
                    State::Whole { conn, .. } | State::Tables { conn } => {
                        conn.copy_in_done(table)?
                    }
                    _ => expected.unwrap_or(0),
                };
                if let Some(expected) = expected
                    && expected != rows
                {
                    return Err(Error::corrupt(format!(
                        "{table}: {rows} rows loaded, the backup recorded {expected}"
                    )));
                }
                let report = report(
                    &self.artifact.name,
                    vec![
                        ("rows".into(), rows.to_string()),
                        ("bytes".into(), bytes.to_string()),
                    ],
                );
                inner.reports.push(report);
                Ok(())
            }
        }
    }
}
