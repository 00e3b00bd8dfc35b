//! Backup: one REPEATABLE READ, READ ONLY transaction (its exported snapshot is the share
//! token), the `schema` artifact from the catalogs and one `COPY … TO STDOUT` per table.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use runner_sdk::{Artifact, ArtifactReader, BackupSession, Error, Metadata, Result, SizeEstimate};

use crate::catalog::{self, SchemaDoc, TableData};
use crate::client::{Conn, ConnInfo, CopyOut, literal};
use crate::select::Selection;

/// Media types of the artifacts.
pub const SCHEMA_MEDIA_TYPE: &str = "application/vnd.runner.postgres-schema+json";
pub const TABLE_MEDIA_TYPE: &str = "text/x-postgresql-copy";
/// The name of the schema artifact (table artifacts are `schema.table`: they have a dot).
pub const SCHEMA_ARTIFACT: &str = "schema";
/// Version of the table artifacts' format (COPY text).
pub const TABLE_FORMAT: u32 = 1;
/// Table artifact metadata naming the artifact that must be restored before it; the
/// host may then write the tables at once (each on its own connection).
pub const PARALLEL_AFTER: &str = "parallel_after";

/// The oldest server whose catalogs this plugin reads (pg_range.rngmultitypid, attcompression).
const MIN_SERVER_VERSION: u32 = 140000;

pub struct PgBackup {
    conn: Rc<RefCell<Conn>>,
    selection: Rc<Selection>,
    token: String,
    doc: Option<Rc<SchemaDoc>>,
}

impl PgBackup {
    pub fn begin(
        server: &ConnInfo,
        selection: Rc<Selection>,
        share_token: Option<String>,
    ) -> Result<Self> {
        let mut conn = Conn::connect(server, &server.database)?;
        let version: u32 = conn
            .query("SHOW server_version_num")?
            .first()
            .and_then(|r| r[0].as_deref())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if version < MIN_SERVER_VERSION {
            return Err(Error::unsupported(format!(
                "PostgreSQL {} at {} is older than 14, the oldest server this plugin reads",
                conn.server_version,
                server.address()
            )));
        }
        // Every name the server writes into DDL is then schema-qualified.
        // Row security off: a policy must fail the read rather than hide rows from it.
        conn.execute(
            "SELECT pg_catalog.set_config('search_path', '', false); SET row_security = off",
        )?;
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
        let token = match share_token {
            Some(token) => {
                conn.execute(&format!("SET TRANSACTION SNAPSHOT {}", literal(&token)))?;
                token
            }
            None => conn
                .query("SELECT pg_catalog.pg_export_snapshot()")?
                .first()
                .and_then(|r| r[0].clone())
                .unwrap_or_default(),
        };
        runner_sdk::info!(
            "reading {} at {} (PostgreSQL {}) in snapshot {token}",
            server.database,
            server.address(),
            conn.server_version
        );
        Ok(PgBackup {
            conn: Rc::new(RefCell::new(conn)),
            selection,
            token,
            doc: None,
        })
    }

    fn doc(&mut self) -> Result<Rc<SchemaDoc>> {
        if let Some(doc) = &self.doc {
            return Ok(doc.clone());
        }
        let doc = Rc::new(catalog::read(&mut self.conn.borrow_mut(), &self.selection)?);
        self.doc = Some(doc.clone());
        Ok(doc)
    }
}

impl BackupSession for PgBackup {
    type Reader = PgReader;

    fn share_token(&self) -> Option<String> {
        Some(self.token.clone())
    }

    fn artifacts(&mut self) -> Result<Vec<Artifact>> {
        let doc = self.doc()?;
        let version = ("server_version".to_string(), doc.server_version.clone());
        let mut artifacts = vec![Artifact {
            name: SCHEMA_ARTIFACT.into(),
            media_type: SCHEMA_MEDIA_TYPE.into(),
            size: None,
            schema_version: catalog::SCHEMA_FORMAT,
            metadata: vec![
                version.clone(),
                ("database".into(), doc.database.clone()),
                ("tables".into(), doc.tables.len().to_string()),
                ("sequences".into(), doc.sequences.len().to_string()),
            ],
        }];
        for table in &doc.tables {
            artifacts.push(Artifact {
                name: table.name.clone(),
                media_type: TABLE_MEDIA_TYPE.into(),
                // Table and index bytes on the server: largest-first ordering and progress.
                size: Some(SizeEstimate::about(table.estimated_bytes, "bytes")),
                schema_version: TABLE_FORMAT,
                metadata: vec![
                    ("table".into(), table.qualified.clone()),
                    (
                        "columns".into(),
                        serde_json::to_string(&table.columns).map_err(Error::internal)?,
                    ),
                    ("estimated_rows".into(), table.estimated_rows.to_string()),
                    (PARALLEL_AFTER.into(), SCHEMA_ARTIFACT.into()),
                    version.clone(),
                ],
            });
        }
        Ok(artifacts)
    }

    fn open(&mut self, name: &str) -> Result<PgReader> {
        let doc = self.doc()?;
        if name == SCHEMA_ARTIFACT {
            let json = serde_json::to_vec_pretty(&*doc).map_err(Error::internal)?;
            return Ok(PgReader::Schema { json, at: 0 });
        }
        let table = doc.tables.iter().find(|t| t.name == name).ok_or_else(|| {
            Error::not_found(format!("no artifact named {name:?} in this backup"))
        })?;
        let conn = self.conn.clone();
        if conn.borrow().in_copy {
            return Err(Error::invalid_input(
                "one table at a time per session: join the session's share token for parallel reads",
            ));
        }
        conn.borrow_mut().copy_out(&format!(
            "COPY {} ({}) TO STDOUT",
            table.qualified,
            table.column_list()
        ))?;
        Ok(PgReader::Table {
            conn,
            snapshot: self.token.clone(),
            table: table.clone(),
            pending: Bytes::new(),
            rows: None,
            bytes: 0,
        })
    }

    fn close(&mut self) -> Result<()> {
        let mut conn = self.conn.borrow_mut();
        conn.execute("COMMIT")
    }
}

pub enum PgReader {
    Schema {
        json: Vec<u8>,
        at: usize,
    },
    Table {
        conn: Rc<RefCell<Conn>>,
        /// The exported snapshot the table was read in.
        snapshot: String,
        table: TableData,
        pending: Bytes,
        rows: Option<u64>,
        bytes: u64,
    },
}

impl ArtifactReader for PgReader {
    fn read(&mut self, max: usize) -> Result<Option<Vec<u8>>> {
        match self {
            PgReader::Schema { json, at } => {
                if *at >= json.len() {
                    return Ok(None);
                }
                let end = (*at + max).min(json.len());
                let chunk = json[*at..end].to_vec();
                *at = end;
                Ok(Some(chunk))
            }
            PgReader::Table {
                conn,
                pending,
                rows,
                bytes,
                ..
            } => {
                let mut chunk = Vec::with_capacity(max.min(1 << 20));
                let mut conn = conn.borrow_mut();
                while chunk.len() < max {
                    if !pending.is_empty() {
                        let n = pending.len().min(max - chunk.len());
                        chunk.extend_from_slice(&pending.split_to(n));
                        continue;
                    }
                    if rows.is_some() {
                        break;
                    }
                    match conn.copy_out_next()? {
                        CopyOut::Data(data) => *pending = data,
                        CopyOut::Done(n) => *rows = Some(n),
                    }
                }
                *bytes += chunk.len() as u64;
                Ok((!chunk.is_empty()).then_some(chunk))
            }
        }
    }

    fn finish(&mut self) -> Result<Metadata> {
        match self {
            PgReader::Schema { .. } => Ok(Metadata::new()),
            PgReader::Table {
                conn,
                snapshot,
                rows: Some(rows),
                bytes,
                table,
                ..
            } => Ok(vec![
                ("rows".into(), rows.to_string()),
                ("bytes".into(), bytes.to_string()),
                ("table".into(), table.qualified.clone()),
                // Which snapshot and which server process read it: parallel readers are
                // several processes in one snapshot.
                ("snapshot".into(), snapshot.clone()),
                ("backend_pid".into(), conn.borrow().backend_pid.to_string()),
            ]),
            PgReader::Table { .. } => Err(Error::invalid_input(
                "finish before the table was read to its end",
            )),
        }
    }
}
