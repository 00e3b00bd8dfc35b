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
use crate::catalog::{PostDataStep, SCHEMA_FORMAT, SchemaDoc};
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
        /// Connections to staging not loading a table right now (a table being loaded
        /// holds its own; the host may load several at once).
        idle: Vec<Conn>,
        /// The most tables loaded at once.
        loading: usize,
        most_loading: usize,
    },
    /// Loading rows into the existing target, inside one transaction: one connection,
    /// held by the table being loaded.
    Tables {
        conn: Option<Conn>,
    },
    /// A dry run: nothing is written.
    DryRun,
    Finished,
}

struct Inner {
    server: ConnInfo,
    /// Connections for keys, indexes and foreign keys at commit.
    jobs: usize,
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
    pub fn begin(source: &ConnInfo, options: RestoreOptions, jobs: usize) -> Result<Self> {
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
                jobs,
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
            let mut conn = connect_staging(&self.server, &staging)?;
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
                    idle: Vec::new(),
                    loading: 0,
                    most_loading: 0,
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
        self.state = State::Tables { conn: Some(conn) };
        Ok(())
    }

    fn abort(&mut self) {
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Whole {
                mut admin,
                conn,
                staging,
                idle,
                ..
            } => {
                conn.close();
                idle.into_iter().for_each(Conn::close);
                drop_database(&mut admin, &staging);
                admin.close();
            }
            // Closing the connection rolls the transaction back (a table still loading
            // holds it; dropping that writer closes it).
            State::Tables { conn } => conn.into_iter().for_each(Conn::close),
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
                mut idle,
                most_loading,
                ..
            } => {
                let mut post_data_connections = 1;
                let finished = (|| {
                    post_data_connections = run_post_data(
                        &mut conn,
                        &mut idle,
                        &self.server,
                        &staging,
                        self.jobs,
                        &doc,
                    )?;
                    for statement in doc.sequences.iter().chain(&doc.refresh) {
                        conn.execute(statement)?;
                    }
                    Ok::<_, Error>(())
                })();
                conn.close();
                idle.into_iter().for_each(Conn::close);
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
                            // How parallel it was: tables loaded at once at most, and
                            // connections that built keys, indexes and foreign keys.
                            ("tables_loaded_at_once".into(), most_loading.to_string()),
                            (
                                "post_data_connections".into(),
                                post_data_connections.to_string(),
                            ),
                        ],
                    ),
                );
                Ok(())
            }
            State::Tables {
                conn: Some(mut conn),
            } => {
                let committed = conn.execute("COMMIT");
                conn.close();
                committed
            }
            State::Tables { conn: None } => Err(Error::invalid_input(
                "commit while a table is still being loaded",
            )),
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

/// A connection to the staging database with the restore's session settings.
fn connect_staging(server: &ConnInfo, staging: &str) -> Result<Conn> {
    let mut conn = Conn::connect(server, staging)?;
    conn.execute("SELECT pg_catalog.set_config('search_path', '', false); SET check_function_bodies = false; SET client_min_messages = warning")?;
    Ok(conn)
}

/// Runs the post-data statements: each step's statements spread over up to `jobs`
/// connections (`main`, then `spare`, then new ones), then the statements no step names,
/// in order on `main`. Returns how many connections the steps used at most.
///
/// Statements that share a table (its partition tree) go to the same connection in
/// recorded order, so no two statements running at once lock the same table: none waits
/// on another and none can deadlock (two foreign keys between the same tables). Each
/// connection gets its whole list at once (pipelined simple queries, each its own
/// transaction), so the server runs them back to back without a round trip between.
fn run_post_data(
    main: &mut Conn,
    spare: &mut Vec<Conn>,
    server: &ConnInfo,
    staging: &str,
    jobs: usize,
    doc: &SchemaDoc,
) -> Result<usize> {
    let mut in_steps = vec![false; doc.post_data.len()];
    let mut most = 1;
    for step in &doc.post_data_steps {
        let lanes = assign_lanes(step, jobs);
        for statement in &step.statements {
            if let Some(seen) = in_steps.get_mut(statement.index) {
                *seen = true;
            }
        }
        while spare.len() + 1 < lanes.len() {
            spare.push(connect_staging(server, staging)?);
        }
        most = most.max(lanes.len());
        let mut conns: Vec<&mut Conn> = std::iter::once(&mut *main)
            .chain(spare.iter_mut())
            .collect();
        for (lane, conn) in lanes.iter().zip(conns.iter_mut()) {
            for &index in lane {
                conn.send_query(statement_at(doc, index)?)?;
            }
        }
        let mut first_error = None;
        for (lane, conn) in lanes.iter().zip(conns.iter_mut()) {
            for &index in lane {
                if let Err(e) = conn.query_result()?
                    && first_error.is_none()
                {
                    let statement = statement_at(doc, index)?;
                    first_error =
                        Some(e.to_error(&format!("restoring `{}` failed", abbreviate(statement))));
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
    }
    for (statement, done) in doc.post_data.iter().zip(in_steps) {
        if !done {
            main.execute(statement)?;
        }
    }
    Ok(most)
}

fn statement_at(doc: &SchemaDoc, index: usize) -> Result<&str> {
    doc.post_data
        .get(index)
        .map(String::as_str)
        .ok_or_else(|| Error::corrupt(format!("schema artifact: no post-data statement {index}")))
}

/// Splits a step's statements into at most `jobs` lanes (lists of `post_data` indexes,
/// each in recorded order): statements linked by a shared table stay in one lane, and
/// the heaviest groups are placed first on the lightest lane (longest processing time
/// first), so the lanes finish at about the same time.
fn assign_lanes(step: &PostDataStep, jobs: usize) -> Vec<Vec<usize>> {
    // Union-find over the statements, joined through the tables they name.
    let count = step.statements.len();
    let mut parent: Vec<usize> = (0..count).collect();
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut owner: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, statement) in step.statements.iter().enumerate() {
        for table in &statement.tables {
            match owner.get(table.as_str()) {
                Some(&j) => {
                    let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                    parent[a] = b;
                }
                None => {
                    owner.insert(table, i);
                }
            }
        }
    }
    let mut groups: std::collections::BTreeMap<usize, (u64, Vec<usize>)> =
        std::collections::BTreeMap::new();
    for (i, statement) in step.statements.iter().enumerate() {
        let group = groups.entry(find(&mut parent, i)).or_default();
        group.0 += statement.weight;
        group.1.push(statement.index);
    }
    let mut groups: Vec<(u64, Vec<usize>)> = groups.into_values().collect();
    groups.sort_by(|a, b| b.0.cmp(&a.0));
    let lanes_wanted = jobs.max(1).min(groups.len());
    let mut lanes: Vec<(u64, Vec<usize>)> = vec![(0, Vec::new()); lanes_wanted];
    for (weight, indexes) in groups {
        let lightest = lanes
            .iter_mut()
            .min_by_key(|(load, _)| *load)
            .expect("at least one lane");
        // +1: weightless statements still spread over the lanes.
        lightest.0 += weight + 1;
        lightest.1.extend(indexes);
    }
    lanes
        .into_iter()
        .map(|(_, mut indexes)| {
            indexes.sort_unstable();
            indexes
        })
        .collect()
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

/// Checks an existing target's table before its rows are loaded (it exists; `replace`
/// empties it, `merge` needs `overwrite` when it has rows) and starts the COPY.
fn prepare_existing(
    conn: &mut Conn,
    table: &str,
    copy: &str,
    replace: bool,
    overwrite: bool,
) -> Result<()> {
    if conn
        .query(&format!(
            "SELECT pg_catalog.to_regclass({})",
            literal(table)
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
    conn.copy_in(copy)
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
        let server = inner.server.clone();
        let conn = match &mut inner.state {
            State::Whole {
                idle,
                staging,
                loading,
                most_loading,
                ..
            } => {
                // Each table loading at once has its own connection.
                let mut conn = match idle.pop() {
                    Some(conn) => conn,
                    None => connect_staging(&server, staging)?,
                };
                conn.copy_in(&copy)?;
                *loading += 1;
                *most_loading = (*most_loading).max(*loading);
                Some(conn)
            }
            State::Tables { conn: slot } => {
                let Some(mut conn) = slot.take() else {
                    return Err(Error::invalid_input(
                        "tables loaded into an existing database come one at a time (one transaction)",
                    ));
                };
                match prepare_existing(&mut conn, &table, &copy, replace, overwrite) {
                    Ok(()) => Some(conn),
                    Err(e) => {
                        *slot = Some(conn);
                        return Err(e);
                    }
                }
            }
            State::DryRun => None,
            State::Start | State::Finished => {
                return Err(Error::invalid_input("write after commit or abort"));
            }
        };
        Ok(PgWriter {
            inner: self.inner.clone(),
            artifact,
            kind: WriterKind::Table {
                table,
                bytes: 0,
                conn,
            },
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
        /// The connection its COPY runs on (none in a dry run).
        conn: Option<Conn>,
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
            WriterKind::Table { bytes, conn, .. } => {
                *bytes += chunk.len() as u64;
                if let Some(conn) = conn {
                    conn.copy_in_data(chunk)?;
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
            WriterKind::Table { table, bytes, conn } => {
                let expected: Option<u64> = self
                    .artifact
                    .metadata
                    .value("rows")
                    .and_then(|r| r.parse().ok());
                let rows = match conn.take() {
                    Some(mut conn) => {
                        let rows = conn.copy_in_done(table)?;
                        // The connection goes back for the next table.
                        match &mut inner.state {
                            State::Whole { idle, loading, .. } => {
                                *loading -= 1;
                                idle.push(conn);
                            }
                            State::Tables { conn: slot } => *slot = Some(conn),
                            _ => conn.close(),
                        }
                        rows
                    }
                    None => expected.unwrap_or(0),
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
