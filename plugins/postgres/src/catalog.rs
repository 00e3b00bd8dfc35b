//! The database's definition read from the system catalogs inside the backup snapshot,
//! written as DDL by the server's own functions (pg_get_*def, format_type, pg_get_expr),
//! and the check that fails the backup on any object kind this plugin does not handle.

use std::collections::{BTreeMap, BTreeSet};

use runner_sdk::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::client::{Conn, Rows, ident, literal};
use crate::select::Selection;

/// Version of the `schema` artifact's format.
pub const SCHEMA_FORMAT: u32 = 1;

/// Everything but table rows: the `schema` artifact (JSON).
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct SchemaDoc {
    pub format: u32,
    pub server_version: String,
    pub database: String,
    /// The database's encoding and C-library locales, for the database a restore creates.
    pub encoding: String,
    pub lc_collate: String,
    pub lc_ctype: String,
    /// Before the data: schemas, extensions, types, functions, sequences, tables, views.
    pub pre_data: Vec<String>,
    /// After the data: keys, indexes, foreign keys, triggers, row security, comments.
    pub post_data: Vec<String>,
    /// `setval` of every sequence, with the values read in the snapshot.
    pub sequences: Vec<String>,
    /// Materialized views to refresh last (they were populated at backup).
    pub refresh: Vec<String>,
    /// The post-data statements that may run on several connections at once, step by
    /// step (checks, keys and indexes; then foreign keys). Absent in snapshots of older
    /// versions: then every statement runs in order on one connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_data_steps: Vec<PostDataStep>,
    /// The tables whose rows are backed up, one data artifact each.
    pub tables: Vec<TableData>,
}

/// Statements of `post_data` that are independent of each other except through the
/// tables they lock; they run before the post-data statements no step names.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct PostDataStep {
    pub statements: Vec<ParallelStatement>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ParallelStatement {
    /// Its index in `post_data`.
    pub index: usize,
    /// The tables it locks, each as the oid of its partition tree's root (a statement on a
    /// partitioned table reaches every partition): statements sharing one run on the same
    /// connection, in recorded order.
    pub tables: Vec<String>,
    /// Bytes of those tables at backup: how long it may take, to spread the work.
    pub weight: u64,
}

/// One table whose rows become a data artifact.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct TableData {
    /// `schema.table` as written (unquoted): the artifact's name.
    pub name: String,
    /// The quoted, qualified name for SQL.
    pub qualified: String,
    /// Quoted column names in COPY order (generated columns are never copied).
    pub columns: Vec<String>,
    /// The planner's estimate, for the listing; the exact count comes from COPY.
    pub estimated_rows: i64,
    /// Bytes on disk at backup (`pg_table_size`), the listing's size hint: the host
    /// starts the largest tables first.
    #[serde(default)]
    pub estimated_bytes: u64,
}

impl TableData {
    pub fn column_list(&self) -> String {
        self.columns.join(", ")
    }
}

const SYSTEM_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'";

/// `NOT` a member of an extension (those come back with `CREATE EXTENSION`).
fn not_extension_member(catalog: &str, oid: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e WHERE e.classid = '{catalog}'::regclass AND e.objid = {oid} AND e.deptype = 'e')"
    )
}

fn text(row: &[Option<String>], i: usize) -> String {
    row.get(i).cloned().flatten().unwrap_or_default()
}

fn flag(row: &[Option<String>], i: usize) -> bool {
    row.get(i).and_then(|v| v.as_deref()) == Some("t")
}

fn oid_array(oids: impl IntoIterator<Item = u32>) -> String {
    let list: Vec<String> = oids.into_iter().map(|o| o.to_string()).collect();
    format!("'{{{}}}'::pg_catalog.oid[]", list.join(","))
}

/// Reads the definition of every selected object. Fails, naming them, when the database
/// holds object kinds this plugin does not restore (unless the pipeline skips them).
pub fn read(conn: &mut Conn, selection: &Selection) -> Result<SchemaDoc> {
    let mut doc = SchemaDoc {
        format: SCHEMA_FORMAT,
        server_version: conn.server_version.clone(),
        ..Default::default()
    };
    let database = conn.query(
        "SELECT d.datname, pg_catalog.pg_encoding_to_char(d.encoding), d.datcollate, d.datctype
           FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()",
    )?;
    let database = database
        .first()
        .ok_or_else(|| Error::internal("the current database is not in pg_database"))?;
    doc.database = text(database, 0);
    doc.encoding = text(database, 1);
    doc.lc_collate = text(database, 2);
    doc.lc_ctype = text(database, 3);

    // Schemas.
    let schemas = conn.query(&format!(
        "SELECT n.oid, n.nspname FROM pg_catalog.pg_namespace n WHERE {SYSTEM_SCHEMAS} AND {} ORDER BY n.nspname",
        not_extension_member("pg_namespace", "n.oid")
    ))?;
    let mut schema_oids = Vec::new();
    for row in &schemas {
        let name = text(row, 1);
        if !selection.schema(&name) {
            continue;
        }
        schema_oids.push(text(row, 0).parse::<u32>().map_err(Error::corrupt)?);
        if name != "public" {
            doc.pre_data.push(format!("CREATE SCHEMA {}", ident(&name)));
        }
    }
    let sel = oid_array(schema_oids.iter().copied());
    let in_schemas = format!("n.oid = ANY({sel})");

    check_unsupported(conn, &sel, selection)?;

    // Extensions: in pg_catalog (plpgsql) or a selected schema.
    for row in conn.query(&format!(
        "SELECT format('CREATE EXTENSION IF NOT EXISTS %I WITH SCHEMA %I', x.extname, n.nspname)
           FROM pg_catalog.pg_extension x JOIN pg_catalog.pg_namespace n ON n.oid = x.extnamespace
          WHERE n.nspname = 'pg_catalog' OR {in_schemas} ORDER BY x.oid"
    ))? {
        doc.pre_data.push(text(&row, 0));
    }

    // Types: enums, domains, composite and range types, in creation order.
    let types = conn.query(&format!(
        "SELECT t.oid, t.typtype,
           CASE t.typtype
             WHEN 'e' THEN format('CREATE TYPE %s AS ENUM (%s)', t.oid::pg_catalog.regtype,
                  (SELECT coalesce(string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder), '') FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid))
             WHEN 'd' THEN format('CREATE DOMAIN %s AS %s%s%s%s%s', t.oid::pg_catalog.regtype, pg_catalog.format_type(t.typbasetype, t.typtypmod),
                  (SELECT ' COLLATE ' || pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname)
                     FROM pg_catalog.pg_collation co JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
                    WHERE co.oid = t.typcollation AND t.typcollation <> (SELECT b.typcollation FROM pg_catalog.pg_type b WHERE b.oid = t.typbasetype)),
                  coalesce(' DEFAULT ' || t.typdefault, ''),
                  CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END,
                  (SELECT coalesce(string_agg(format(' CONSTRAINT %I %s', c.conname, pg_catalog.pg_get_constraintdef(c.oid)), '' ORDER BY c.conname), '')
                     FROM pg_catalog.pg_constraint c WHERE c.contypid = t.oid))
             WHEN 'c' THEN format('CREATE TYPE %s AS (%s)', t.oid::pg_catalog.regtype,
                  (SELECT coalesce(string_agg(format('%I %s', a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY a.attnum), '')
                     FROM pg_catalog.pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped))
             WHEN 'r' THEN (SELECT format('CREATE TYPE %s AS RANGE (subtype = %s%s%s%s, multirange_type_name = %s)', t.oid::pg_catalog.regtype,
                  pg_catalog.format_type(r.rngsubtype, NULL),
                  (SELECT ', subtype_opclass = ' || pg_catalog.quote_ident(ocn.nspname) || '.' || pg_catalog.quote_ident(oc.opcname)
                     FROM pg_catalog.pg_opclass oc JOIN pg_catalog.pg_namespace ocn ON ocn.oid = oc.opcnamespace WHERE oc.oid = r.rngsubopc AND NOT oc.opcdefault),
                  (SELECT ', collation = ' || pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname)
                     FROM pg_catalog.pg_collation co JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
                    WHERE co.oid = r.rngcollation AND r.rngcollation <> (SELECT s.typcollation FROM pg_catalog.pg_type s WHERE s.oid = r.rngsubtype)),
                  CASE WHEN r.rngsubdiff <> 0 THEN ', subtype_diff = ' || r.rngsubdiff::pg_catalog.regproc::text ELSE '' END,
                  r.rngmultitypid::pg_catalog.regtype)
                  FROM pg_catalog.pg_range r WHERE r.rngtypid = t.oid)
           END
         FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
        WHERE {in_schemas} AND {}
          AND t.typtype IN ('e', 'd', 'c', 'r')
          AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid) = 'c')
        ORDER BY t.oid",
        not_extension_member("pg_type", "t.oid")
    ))?;
    for row in &types {
        doc.pre_data.push(text(row, 2));
    }

    // Functions and procedures; those whose signature names a table's row type wait for
    // the tables. Bodies are not checked at creation (check_function_bodies = off).
    let functions = conn.query(&format!(
        "SELECT pg_catalog.pg_get_functiondef(p.oid),
                EXISTS (SELECT 1 FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_type ty ON ty.oid = d.refobjid
                         JOIN pg_catalog.pg_class rc ON rc.oid = ty.typrelid
                        WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.refclassid = 'pg_type'::regclass AND rc.relkind <> 'c')
           FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
          WHERE {in_schemas} AND {} AND p.prokind IN ('f', 'p')
            AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'i')
          ORDER BY p.oid",
        not_extension_member("pg_proc", "p.oid")
    ))?;
    let mut late_functions = Vec::new();
    for row in &functions {
        let def = text(row, 0).trim_end().to_string();
        if flag(row, 1) {
            late_functions.push(def)
        } else {
            doc.pre_data.push(def)
        }
    }

    // Sequences (identity sequences come with their column).
    let sequences = conn.query(&format!(
        "SELECT c.oid::pg_catalog.regclass::text,
                format('CREATE %sSEQUENCE %s AS %s START WITH %s INCREMENT BY %s MINVALUE %s MAXVALUE %s CACHE %s%s',
                       CASE WHEN c.relpersistence = 'u' THEN 'UNLOGGED ' ELSE '' END, c.oid::pg_catalog.regclass,
                       pg_catalog.format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache,
                       CASE WHEN s.seqcycle THEN ' CYCLE' ELSE ' NO CYCLE' END),
                (SELECT format('ALTER SEQUENCE %s OWNED BY %s.%I', c.oid::pg_catalog.regclass, d.refobjid::pg_catalog.regclass, a.attname)
                   FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'a'),
                EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'i')
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_catalog.pg_sequence s ON s.seqrelid = c.oid
          WHERE {in_schemas} AND {} AND c.relkind = 'S' ORDER BY c.oid",
        not_extension_member("pg_class", "c.oid")
    ))?;
    let mut owned_by = Vec::new();
    for row in &sequences {
        if !flag(row, 3) {
            doc.pre_data.push(text(row, 1));
        }
        if let Some(Some(statement)) = row.get(2) {
            owned_by.push(statement.clone());
        }
    }
    if !sequences.is_empty() {
        // Values as the snapshot sees them (sequences are not transactional: pg_dump reads them the same way).
        let union: Vec<String> = sequences
            .iter()
            .map(|row| {
                format!(
                    "SELECT {}::text, last_value::text, is_called FROM {}",
                    literal(&text(row, 0)),
                    text(row, 0)
                )
            })
            .collect();
        for row in conn.query(&union.join(" UNION ALL "))? {
            doc.sequences.push(format!(
                "SELECT pg_catalog.setval({}, {}, {})",
                literal(&text(&row, 0)),
                text(&row, 1),
                if flag(&row, 2) { "true" } else { "false" }
            ));
        }
    }

    // Tables and their columns.
    let tables = conn.query(&format!(
        "SELECT c.oid, c.oid::pg_catalog.regclass::text, n.nspname, c.relname, c.relkind, c.relpersistence,
                array_to_string(c.reloptions, ', '),
                CASE WHEN c.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(c.oid) END,
                (SELECT i.inhparent FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid AND c.relispartition),
                CASE WHEN c.relispartition THEN pg_catalog.pg_get_expr(c.relpartbound, c.oid) END,
                c.relrowsecurity, c.relforcerowsecurity, c.reltuples::bigint,
                (SELECT i.inhparent::pg_catalog.regclass::text FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid AND c.relispartition),
                pg_catalog.pg_table_size(c.oid)
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE {in_schemas} AND {} AND c.relkind IN ('r', 'p') ORDER BY c.oid",
        not_extension_member("pg_class", "c.oid")
    ))?;
    let table_oids: Vec<u32> = tables
        .iter()
        .map(|r| text(r, 0).parse().unwrap_or(0))
        .collect();
    let tsel = oid_array(table_oids.iter().copied());
    if !tables.is_empty() {
        // As pg_dump does: no table can be dropped or altered until the backup ends;
        // writers (INSERT, UPDATE, DELETE) are not blocked.
        let names: Vec<String> = tables.iter().map(|r| text(r, 1)).collect();
        conn.execute(&format!(
            "LOCK TABLE {} IN ACCESS SHARE MODE",
            names.join(", ")
        ))?;
    }
    let columns = conn.query(&format!(
        "SELECT a.attrelid, pg_catalog.quote_ident(a.attname), pg_catalog.format_type(a.atttypid, a.atttypmod),
                (SELECT ' COLLATE ' || pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname)
                   FROM pg_catalog.pg_collation co JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
                  WHERE co.oid = a.attcollation AND a.attcollation <> t.typcollation),
                a.attnotnull, a.attidentity, a.attgenerated, pg_catalog.pg_get_expr(d.adbin, d.adrelid),
                (SELECT format(' (SEQUENCE NAME %s START WITH %s INCREMENT BY %s MINVALUE %s MAXVALUE %s CACHE %s%s)',
                               s.seqrelid::pg_catalog.regclass, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache,
                               CASE WHEN s.seqcycle THEN ' CYCLE' ELSE ' NO CYCLE' END)
                   FROM pg_catalog.pg_depend dep JOIN pg_catalog.pg_sequence s ON s.seqrelid = dep.objid
                  WHERE dep.classid = 'pg_class'::regclass AND dep.refclassid = 'pg_class'::regclass
                    AND dep.refobjid = a.attrelid AND dep.refobjsubid = a.attnum AND dep.deptype = 'i'),
                a.attislocal
           FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
           LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          WHERE a.attrelid = ANY({tsel}) AND a.attnum > 0 AND NOT a.attisdropped
          ORDER BY a.attrelid, a.attnum"
    ))?;
    let mut columns_of: BTreeMap<String, Vec<&Vec<Option<String>>>> = BTreeMap::new();
    for row in &columns {
        columns_of.entry(text(row, 0)).or_default().push(row);
    }
    let checks = conn.query(&format!(
        "SELECT c.conrelid, format('CONSTRAINT %I %s', c.conname, pg_catalog.pg_get_constraintdef(c.oid)),
                format('ALTER TABLE ONLY %s ADD CONSTRAINT %I %s', c.conrelid::pg_catalog.regclass, c.conname, pg_catalog.pg_get_constraintdef(c.oid)),
                c.convalidated
           FROM pg_catalog.pg_constraint c WHERE c.conrelid = ANY({tsel}) AND c.contype = 'c' AND c.conislocal ORDER BY c.conname"
    ))?;
    let mut checks_of: BTreeMap<String, Vec<&Vec<Option<String>>>> = BTreeMap::new();
    for row in &checks {
        checks_of.entry(text(row, 0)).or_default().push(row);
    }

    // Partitions after their parents: order by depth, then creation.
    let parent_of: BTreeMap<String, String> = tables
        .iter()
        .filter_map(|r| r.get(8).cloned().flatten().map(|p| (text(r, 0), p)))
        .collect();
    let depth = |oid: &str| {
        let mut depth = 0;
        let mut at = oid.to_string();
        while let Some(parent) = parent_of.get(&at) {
            depth += 1;
            at = parent.clone();
            if depth > 64 {
                break;
            }
        }
        depth
    };
    // A statement on a partition locks its tree's root's lock group: the root's oid.
    let root = |oid: &str| {
        let mut at = oid.to_string();
        for _ in 0..64 {
            match parent_of.get(&at) {
                Some(parent) => at = parent.clone(),
                None => break,
            }
        }
        at
    };
    let mut tree_bytes: BTreeMap<String, u64> = BTreeMap::new();
    for row in &tables {
        *tree_bytes.entry(root(&text(row, 0))).or_default() +=
            text(row, 14).parse::<u64>().unwrap_or(0);
    }
    let parallel = |index: usize, oids: &[String]| {
        let mut tables: Vec<String> = oids.iter().map(|o| root(o)).collect();
        tables.sort();
        tables.dedup();
        ParallelStatement {
            index,
            weight: tables.iter().filter_map(|t| tree_bytes.get(t)).sum(),
            tables,
        }
    };
    let mut keys_and_indexes = PostDataStep::default();
    let mut foreign_keys = PostDataStep::default();
    let mut ordered: Vec<&Vec<Option<String>>> = tables.iter().collect();
    ordered.sort_by_key(|r| (depth(&text(r, 0)), text(r, 0).parse::<u64>().unwrap_or(0)));
    let mut security = Vec::new();
    for row in ordered {
        let oid = text(row, 0);
        let qualified = text(row, 1);
        let relkind = text(row, 4);
        let options = text(row, 6);
        let with = if options.is_empty() {
            String::new()
        } else {
            format!(" WITH ({options})")
        };
        let partition_by = row
            .get(7)
            .cloned()
            .flatten()
            .map(|k| format!(" PARTITION BY {k}"))
            .unwrap_or_default();
        let table_columns = columns_of.get(&oid).cloned().unwrap_or_default();
        let table_checks = checks_of.get(&oid).cloned().unwrap_or_default();
        if let Some(parent_name) = row.get(13).cloned().flatten() {
            // A partition takes its columns from its parent.
            doc.pre_data.push(format!(
                "CREATE TABLE {qualified} PARTITION OF {parent_name} {}{partition_by}{with}",
                text(row, 9)
            ));
            for check in &table_checks {
                if flag(check, 3) {
                    doc.pre_data.push(text(check, 2));
                } else {
                    keys_and_indexes
                        .statements
                        .push(parallel(doc.post_data.len(), std::slice::from_ref(&oid)));
                    doc.post_data.push(text(check, 2));
                }
            }
        } else {
            let mut parts: Vec<String> =
                table_columns.iter().map(|c| column_definition(c)).collect();
            for check in &table_checks {
                if flag(check, 3) {
                    parts.push(text(check, 1));
                } else {
                    keys_and_indexes
                        .statements
                        .push(parallel(doc.post_data.len(), std::slice::from_ref(&oid)));
                    doc.post_data.push(text(check, 2));
                }
            }
            let unlogged = if text(row, 5) == "u" { "UNLOGGED " } else { "" };
            doc.pre_data.push(format!(
                "CREATE {unlogged}TABLE {qualified} (\n    {}\n){partition_by}{with}",
                parts.join(",\n    ")
            ));
        }
        if flag(row, 10) {
            security.push(format!("ALTER TABLE {qualified} ENABLE ROW LEVEL SECURITY"));
        }
        if flag(row, 11) {
            security.push(format!("ALTER TABLE {qualified} FORCE ROW LEVEL SECURITY"));
        }
        let name = format!("{}.{}", text(row, 2), text(row, 3));
        if relkind == "r" && selection.table_data(&name) {
            doc.tables.push(TableData {
                name,
                qualified: qualified.clone(),
                columns: table_columns
                    .iter()
                    .filter(|c| text(c, 6).is_empty())
                    .map(|c| text(c, 1))
                    .collect(),
                estimated_rows: text(row, 12).parse::<i64>().unwrap_or(-1).max(-1),
                estimated_bytes: text(row, 14).parse().unwrap_or(0),
            });
        }
    }
    doc.pre_data.extend(late_functions);
    doc.pre_data.extend(owned_by);

    // Views and materialized views, each after the views it reads.
    let views = conn.query(&format!(
        "SELECT c.oid, c.relkind, c.oid::pg_catalog.regclass::text, array_to_string(c.reloptions, ', '),
                rtrim(rtrim(pg_catalog.pg_get_viewdef(c.oid)), ';'), c.relispopulated
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE {in_schemas} AND {} AND c.relkind IN ('v', 'm') ORDER BY c.oid",
        not_extension_member("pg_class", "c.oid")
    ))?;
    let view_oids: Vec<u32> = views
        .iter()
        .map(|r| text(r, 0).parse().unwrap_or(0))
        .collect();
    let vsel = oid_array(view_oids.iter().copied());
    let mut reads: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in conn.query(&format!(
        "SELECT DISTINCT r.ev_class, d.refobjid FROM pg_catalog.pg_rewrite r
           JOIN pg_catalog.pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_class'::regclass
          WHERE r.ev_class = ANY({vsel}) AND d.refobjid = ANY({vsel}) AND d.refobjid <> r.ev_class"
    ))? {
        reads.entry(text(&row, 0)).or_default().insert(text(&row, 1));
    }
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut pending: Vec<&Vec<Option<String>>> = views.iter().collect();
    while !pending.is_empty() {
        let before = pending.len();
        let mut rest = Vec::new();
        for row in pending {
            let oid = text(row, 0);
            if reads
                .get(&oid)
                .is_some_and(|deps| deps.iter().any(|d| !done.contains(d)))
            {
                rest.push(row);
                continue;
            }
            let options = text(row, 3);
            let with = if options.is_empty() {
                String::new()
            } else {
                format!(" WITH ({options})")
            };
            let name = text(row, 2);
            if text(row, 1) == "m" {
                doc.pre_data.push(format!(
                    "CREATE MATERIALIZED VIEW {name}{with} AS\n{}\nWITH NO DATA",
                    text(row, 4)
                ));
                if flag(row, 5) {
                    doc.refresh
                        .push(format!("REFRESH MATERIALIZED VIEW {name}"));
                }
            } else {
                doc.pre_data
                    .push(format!("CREATE VIEW {name}{with} AS\n{}", text(row, 4)));
            }
            done.insert(oid);
        }
        if rest.len() == before {
            return Err(Error::unsupported(
                "views that depend on each other in a cycle",
            ));
        }
        pending = rest;
    }

    // Post-data: keys, indexes, foreign keys, triggers, row security, policies.
    let relations = oid_array(table_oids.iter().chain(view_oids.iter()).copied());
    for row in conn.query(&format!(
        "SELECT format('ALTER TABLE %s%s ADD CONSTRAINT %I %s', CASE WHEN r.relkind = 'p' THEN '' ELSE 'ONLY ' END,
                       c.conrelid::pg_catalog.regclass, c.conname, pg_catalog.pg_get_constraintdef(c.oid)),
                c.conrelid
           FROM pg_catalog.pg_constraint c JOIN pg_catalog.pg_class r ON r.oid = c.conrelid
          WHERE c.conrelid = ANY({tsel}) AND c.contype IN ('p', 'u', 'x') AND c.conparentid = 0
          ORDER BY c.conrelid, c.conname"
    ))? {
        keys_and_indexes
            .statements
            .push(parallel(doc.post_data.len(), &[text(&row, 1)]));
        doc.post_data.push(text(&row, 0));
    }
    for row in conn.query(&format!(
        "SELECT pg_catalog.pg_get_indexdef(i.indexrelid), r.relkind, i.indrelid
           FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid JOIN pg_catalog.pg_class r ON r.oid = i.indrelid
          WHERE i.indrelid = ANY({relations}) AND NOT ic.relispartition
            AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint c WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x'))
          ORDER BY ic.relname"
    ))? {
        let def = text(&row, 0);
        keys_and_indexes
            .statements
            .push(parallel(doc.post_data.len(), &[text(&row, 2)]));
        // On a partitioned table the server writes `ON ONLY` (pg_dump attaches each partition's
        // index by hand); without it the partitions' indexes are made and attached at once.
        doc.post_data.push(if text(&row, 1) == "p" { def.replacen(" ON ONLY ", " ON ", 1) } else { def });
    }
    for row in conn.query(&format!(
        "SELECT format('ALTER TABLE %s%s ADD CONSTRAINT %I %s', CASE WHEN r.relkind = 'p' THEN '' ELSE 'ONLY ' END,
                       c.conrelid::pg_catalog.regclass, c.conname, pg_catalog.pg_get_constraintdef(c.oid)),
                c.conrelid, c.confrelid
           FROM pg_catalog.pg_constraint c JOIN pg_catalog.pg_class r ON r.oid = c.conrelid
          WHERE c.conrelid = ANY({tsel}) AND c.contype = 'f' AND c.conparentid = 0
          ORDER BY c.conrelid, c.conname"
    ))? {
        foreign_keys
            .statements
            .push(parallel(doc.post_data.len(), &[text(&row, 1), text(&row, 2)]));
        doc.post_data.push(text(&row, 0));
    }
    doc.post_data_steps = vec![keys_and_indexes, foreign_keys];
    for row in conn.query(&format!(
        "SELECT pg_catalog.pg_get_triggerdef(t.oid), t.tgenabled, format('%I', t.tgname), t.tgrelid::pg_catalog.regclass::text
           FROM pg_catalog.pg_trigger t
          WHERE t.tgrelid = ANY({relations}) AND NOT t.tgisinternal AND t.tgparentid = 0
          ORDER BY t.tgrelid, t.tgname"
    ))? {
        doc.post_data.push(text(&row, 0));
        let state = match text(&row, 1).as_str() {
            "D" => Some("DISABLE TRIGGER"),
            "R" => Some("ENABLE REPLICA TRIGGER"),
            "A" => Some("ENABLE ALWAYS TRIGGER"),
            _ => None,
        };
        if let Some(state) = state {
            doc.post_data.push(format!("ALTER TABLE {} {state} {}", text(&row, 3), text(&row, 2)));
        }
    }
    doc.post_data.extend(security);
    for row in conn.query(&format!(
        "SELECT format('CREATE POLICY %I ON %s AS %s FOR %s TO %s%s%s', p.polname, p.polrelid::pg_catalog.regclass,
                       CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
                       CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
                       (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(r)) END, ', ') FROM unnest(p.polroles) r),
                       coalesce(' USING (' || pg_catalog.pg_get_expr(p.polqual, p.polrelid) || ')', ''),
                       coalesce(' WITH CHECK (' || pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) || ')', ''))
           FROM pg_catalog.pg_policy p WHERE p.polrelid = ANY({tsel}) ORDER BY p.polrelid, p.polname"
    ))? {
        doc.post_data.push(text(&row, 0));
    }
    comments(conn, &sel, selection, &mut doc)?;
    if selection.privileges {
        privileges(conn, &in_schemas, &tsel, &mut doc)?;
    }
    Ok(doc)
}

/// One column of `CREATE TABLE`, from a row of the columns query.
fn column_definition(c: &[Option<String>]) -> String {
    let mut def = format!("{} {}{}", text(c, 1), text(c, 2), text(c, 3));
    let default = text(c, 7);
    match (text(c, 5).as_str(), text(c, 6).as_str()) {
        (_, "s") => def.push_str(&format!(" GENERATED ALWAYS AS ({default}) STORED")),
        ("a", _) => def.push_str(&format!(" GENERATED ALWAYS AS IDENTITY{}", text(c, 8))),
        ("d", _) => def.push_str(&format!(" GENERATED BY DEFAULT AS IDENTITY{}", text(c, 8))),
        _ if !default.is_empty() => def.push_str(&format!(" DEFAULT {default}")),
        _ => {}
    }
    if flag(c, 4) {
        def.push_str(" NOT NULL");
    }
    def
}

/// Owners, then privileges, of every backed-up schema, relation, type and function, as
/// pg_dump writes them: ALTER … OWNER TO, then REVOKE ALL and one GRANT per ACL entry.
fn privileges(conn: &mut Conn, in_schemas: &str, tsel: &str, doc: &mut SchemaDoc) -> Result<()> {
    // (keyword, name, owner, acl) of every object; sequences owned by a column follow their table.
    let objects = format!(
        "SELECT 'SCHEMA', pg_catalog.quote_ident(n.nspname), n.nspowner, n.nspacl FROM pg_catalog.pg_namespace n WHERE {in_schemas}
         UNION ALL
         SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
                c.oid::pg_catalog.regclass::text, c.relowner, c.relacl
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE {in_schemas} AND c.relkind IN ('r', 'p', 'v', 'm', 'S') AND {}
            AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i'))
         UNION ALL
         SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, t.oid::pg_catalog.regtype::text, t.typowner, t.typacl
           FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
          WHERE {in_schemas} AND {} AND t.typtype IN ('e', 'd', 'c', 'r')
            AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid) = 'c')
         UNION ALL
         SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, p.oid::pg_catalog.regprocedure::text, p.proowner, p.proacl
           FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
          WHERE {in_schemas} AND {} AND p.prokind IN ('f', 'p')
            AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'i')",
        not_extension_member("pg_class", "c.oid"),
        not_extension_member("pg_type", "t.oid"),
        not_extension_member("pg_proc", "p.oid"),
    );
    let grantee = "CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END";
    let rows = conn.query(&format!(
        "WITH o(keyword, name, owner, acl) AS ({objects})
         SELECT 1, o.keyword, o.name, format('ALTER %s %s OWNER TO %I', o.keyword, o.name, pg_catalog.pg_get_userbyid(o.owner)), 0::bigint FROM o
         UNION ALL
         SELECT 2, o.keyword, o.name, format('REVOKE ALL ON %s %s FROM PUBLIC', o.keyword, o.name), 0
           FROM o WHERE o.acl IS NOT NULL
         UNION ALL
         SELECT 3, o.keyword, o.name, format('REVOKE ALL ON %s %s FROM %I', o.keyword, o.name, pg_catalog.pg_get_userbyid(o.owner)), 0
           FROM o WHERE o.acl IS NOT NULL
         UNION ALL
         SELECT 4, o.keyword, o.name, format('GRANT %s ON %s %s TO %s%s', a.privilege_type, o.keyword, o.name, {grantee},
                                             CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END), a.ord
           FROM o, LATERAL pg_catalog.aclexplode(o.acl) WITH ORDINALITY a(grantor, grantee, privilege_type, is_grantable, ord)
         UNION ALL
         SELECT 5, 'COLUMN', c.oid::pg_catalog.regclass::text, format('GRANT %s (%I) ON TABLE %s TO %s%s', a.privilege_type, att.attname,
                                             c.oid::pg_catalog.regclass, {grantee}, CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END), att.attnum * 1000 + a.ord
           FROM pg_catalog.pg_attribute att JOIN pg_catalog.pg_class c ON c.oid = att.attrelid,
                LATERAL pg_catalog.aclexplode(att.attacl) WITH ORDINALITY a(grantor, grantee, privilege_type, is_grantable, ord)
          WHERE att.attrelid = ANY({tsel}) AND att.attacl IS NOT NULL AND NOT att.attisdropped
         ORDER BY 1, 2, 3, 5"
    ))?;
    // Views and materialized views use the same keywords in GRANT as tables.
    for row in rows {
        let statement = text(&row, 3)
            .replace(" ON VIEW ", " ON TABLE ")
            .replace(" ON MATERIALIZED VIEW ", " ON TABLE ");
        doc.post_data.push(statement);
    }
    let defaults = conn.query("SELECT count(*) FROM pg_catalog.pg_default_acl")?;
    if text(&defaults[0], 0) != "0" {
        return Err(Error::unsupported(
            "default privileges (ALTER DEFAULT PRIVILEGES) are not backed up; set `privileges = false` or remove them",
        ));
    }
    Ok(())
}

/// `COMMENT ON` for every commented object of a kind this plugin restores.
fn comments(conn: &mut Conn, sel: &str, selection: &Selection, doc: &mut SchemaDoc) -> Result<()> {
    let rows: Rows = conn.query(&format!(
        "SELECT o.type, o.identity, d.description, coalesce(s.nsp = ANY({sel}), true)
           FROM pg_catalog.pg_description d, LATERAL pg_catalog.pg_identify_object(d.classoid, d.objoid, d.objsubid) o,
                LATERAL (SELECT CASE d.classoid
                    WHEN 'pg_namespace'::regclass THEN d.objoid
                    WHEN 'pg_trigger'::regclass THEN (SELECT c.relnamespace FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid WHERE t.oid = d.objoid)
                    WHEN 'pg_policy'::regclass THEN (SELECT c.relnamespace FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid WHERE p.oid = d.objoid)
                    WHEN 'pg_constraint'::regclass THEN (SELECT c.connamespace FROM pg_catalog.pg_constraint c WHERE c.oid = d.objoid)
                    ELSE (SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = o.schema) END AS nsp) s
          WHERE d.objoid >= 16384 AND d.classoid <> 'pg_database'::regclass AND d.classoid <> 'pg_extension'::regclass
            AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e WHERE e.classid = d.classoid AND e.objid = d.objoid AND e.deptype = 'e')
          ORDER BY o.type, o.identity"
    ))?;
    let mut unsupported = Vec::new();
    for row in &rows {
        let kind = text(row, 0);
        let identity = text(row, 1);
        // An object in no schema (a cast, a language) counts as included: its kind decides.
        let included = flag(row, 3);
        let target = match kind.as_str() {
            "table column"
            | "view column"
            | "materialized view column"
            | "composite type column" => format!("COLUMN {identity}"),
            "table constraint" => format!("CONSTRAINT {identity}"),
            "domain constraint" => {
                let (name, domain) = identity.split_once(" on ").unwrap_or((&identity, ""));
                format!("CONSTRAINT {name} ON DOMAIN {domain}")
            }
            "trigger" | "policy" => format!("{} {identity}", kind.to_uppercase()),
            "schema" | "table" | "view" | "materialized view" | "sequence" | "index" | "type"
            | "domain" | "function" | "procedure" | "composite type" => {
                let keyword = if kind == "composite type" {
                    "TYPE".to_string()
                } else {
                    kind.to_uppercase()
                };
                format!("{keyword} {identity}")
            }
            _ => {
                if included {
                    unsupported.push(("comment".to_string(), format!("on {kind} {identity}")));
                }
                continue;
            }
        };
        if included {
            doc.post_data
                .push(format!("COMMENT ON {target} IS {}", literal(&text(row, 2))));
        }
    }
    fail_unsupported(unsupported, selection)
}

/// Every object kind the database holds that this plugin does not back up.
fn check_unsupported(conn: &mut Conn, sel: &str, selection: &Selection) -> Result<()> {
    let in_schemas = format!("n.oid = ANY({sel})");
    let member = |catalog: &str, oid: &str| not_extension_member(catalog, oid);
    let checks: Vec<String> = vec![
        format!("SELECT 'foreign table', c.oid::pg_catalog.regclass::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {in_schemas} AND c.relkind = 'f' AND {}", member("pg_class", "c.oid")),
        format!("SELECT 'table inheritance', c.oid::pg_catalog.regclass::text || ' inherits ' || p.oid::pg_catalog.regclass::text FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid JOIN pg_catalog.pg_class p ON p.oid = i.inhparent JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {in_schemas} AND p.relkind = 'r' AND {}", member("pg_class", "c.oid")),
        format!("SELECT 'typed table', c.oid::pg_catalog.regclass::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {in_schemas} AND c.reloftype <> 0 AND {}", member("pg_class", "c.oid")),
        format!("SELECT 'tablespace', c.oid::pg_catalog.regclass::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {in_schemas} AND c.reltablespace <> 0 AND {}", member("pg_class", "c.oid")),
        format!("SELECT 'replica identity', c.oid::pg_catalog.regclass::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {in_schemas} AND c.relkind IN ('r', 'p', 'm') AND c.relreplident NOT IN ('d', 'n') AND {}", member("pg_class", "c.oid")),
        format!("SELECT 'clustered index', i.indexrelid::pg_catalog.regclass::text FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {in_schemas} AND i.indisclustered AND {}", member("pg_class", "c.oid")),
        format!("SELECT 'rule', format('%I on %s', r.rulename, c.oid::pg_catalog.regclass) FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class c ON c.oid = r.ev_class JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {in_schemas} AND r.rulename <> '_RETURN' AND {}", member("pg_class", "c.oid")),
        format!("SELECT CASE p.prokind WHEN 'a' THEN 'aggregate' ELSE 'window function' END, p.oid::pg_catalog.regprocedure::text FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE {in_schemas} AND p.prokind IN ('a', 'w') AND {}", member("pg_proc", "p.oid")),
        format!("SELECT CASE t.typtype WHEN 'b' THEN 'base type' ELSE 'shell type' END, t.oid::pg_catalog.regtype::text FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE {in_schemas} AND t.typtype IN ('b', 'p') AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type el WHERE el.typarray = t.oid) AND {}", member("pg_type", "t.oid")),
        format!("SELECT 'range type with a canonical function', r.rngtypid::pg_catalog.regtype::text FROM pg_catalog.pg_range r JOIN pg_catalog.pg_type t ON t.oid = r.rngtypid JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE {in_schemas} AND r.rngcanonical <> 0 AND {}", member("pg_type", "t.oid")),
        format!("SELECT 'operator', o.oid::pg_catalog.regoperator::text FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace WHERE {in_schemas} AND {}", member("pg_operator", "o.oid")),
        format!("SELECT 'operator class', format('%I.%I', n.nspname, o.opcname) FROM pg_catalog.pg_opclass o JOIN pg_catalog.pg_namespace n ON n.oid = o.opcnamespace WHERE {in_schemas} AND {}", member("pg_opclass", "o.oid")),
        format!("SELECT 'operator family', format('%I.%I', n.nspname, o.opfname) FROM pg_catalog.pg_opfamily o JOIN pg_catalog.pg_namespace n ON n.oid = o.opfnamespace WHERE {in_schemas} AND {}", member("pg_opfamily", "o.oid")),
        format!("SELECT 'collation', format('%I.%I', n.nspname, o.collname) FROM pg_catalog.pg_collation o JOIN pg_catalog.pg_namespace n ON n.oid = o.collnamespace WHERE {in_schemas} AND {}", member("pg_collation", "o.oid")),
        format!("SELECT 'conversion', format('%I.%I', n.nspname, o.conname) FROM pg_catalog.pg_conversion o JOIN pg_catalog.pg_namespace n ON n.oid = o.connamespace WHERE {in_schemas} AND {}", member("pg_conversion", "o.oid")),
        format!("SELECT 'text search configuration', format('%I.%I', n.nspname, o.cfgname) FROM pg_catalog.pg_ts_config o JOIN pg_catalog.pg_namespace n ON n.oid = o.cfgnamespace WHERE {in_schemas} AND {}", member("pg_ts_config", "o.oid")),
        format!("SELECT 'text search dictionary', format('%I.%I', n.nspname, o.dictname) FROM pg_catalog.pg_ts_dict o JOIN pg_catalog.pg_namespace n ON n.oid = o.dictnamespace WHERE {in_schemas} AND {}", member("pg_ts_dict", "o.oid")),
        format!("SELECT 'text search parser', format('%I.%I', n.nspname, o.prsname) FROM pg_catalog.pg_ts_parser o JOIN pg_catalog.pg_namespace n ON n.oid = o.prsnamespace WHERE {in_schemas} AND {}", member("pg_ts_parser", "o.oid")),
        format!("SELECT 'text search template', format('%I.%I', n.nspname, o.tmplname) FROM pg_catalog.pg_ts_template o JOIN pg_catalog.pg_namespace n ON n.oid = o.tmplnamespace WHERE {in_schemas} AND {}", member("pg_ts_template", "o.oid")),
        format!("SELECT 'statistics object', format('%I.%I', n.nspname, o.stxname) FROM pg_catalog.pg_statistic_ext o JOIN pg_catalog.pg_namespace n ON n.oid = o.stxnamespace WHERE {in_schemas} AND {}", member("pg_statistic_ext", "o.oid")),
        format!("SELECT 'cast', format('(%s AS %s)', o.castsource::pg_catalog.regtype, o.casttarget::pg_catalog.regtype) FROM pg_catalog.pg_cast o WHERE o.oid >= 16384 AND {} AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_cast'::regclass AND d.objid = o.oid AND d.deptype = 'i')", member("pg_cast", "o.oid")),
        format!("SELECT 'procedural language', o.lanname::text FROM pg_catalog.pg_language o WHERE o.oid >= 16384 AND {}", member("pg_language", "o.oid")),
        format!("SELECT 'access method', o.amname::text FROM pg_catalog.pg_am o WHERE o.oid >= 16384 AND {}", member("pg_am", "o.oid")),
        format!("SELECT 'transform', format('for %s', o.trftype::pg_catalog.regtype) FROM pg_catalog.pg_transform o WHERE o.oid >= 16384 AND {}", member("pg_transform", "o.oid")),
        format!("SELECT 'foreign data wrapper', o.fdwname::text FROM pg_catalog.pg_foreign_data_wrapper o WHERE {}", member("pg_foreign_data_wrapper", "o.oid")),
        format!("SELECT 'foreign server', o.srvname::text FROM pg_catalog.pg_foreign_server o WHERE {}", member("pg_foreign_server", "o.oid")),
        "SELECT 'event trigger', o.evtname::text FROM pg_catalog.pg_event_trigger o".to_string(),
        "SELECT 'publication', o.pubname::text FROM pg_catalog.pg_publication o".to_string(),
        "SELECT 'large object', o.oid::text FROM pg_catalog.pg_largeobject_metadata o".to_string(),
        "SELECT 'security label', pg_catalog.pg_describe_object(o.classoid, o.objoid, o.objsubid) FROM pg_catalog.pg_seclabel o".to_string(),
        "SELECT 'extension configuration table', x.extname::text FROM pg_catalog.pg_extension x WHERE x.extconfig IS NOT NULL".to_string(),
        format!("SELECT 'column statistics target', c.oid::pg_catalog.regclass::text || '.' || pg_catalog.quote_ident(a.attname) FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {in_schemas} AND c.relkind IN ('r', 'p', 'm') AND a.attnum > 0 AND NOT a.attisdropped AND a.attstattarget >= 0 AND {}", member("pg_class", "c.oid")),
        format!("SELECT 'column storage', c.oid::pg_catalog.regclass::text || '.' || pg_catalog.quote_ident(a.attname) FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {in_schemas} AND c.relkind IN ('r', 'p', 'm') AND a.attnum > 0 AND NOT a.attisdropped AND (a.attstorage <> t.typstorage OR a.attcompression IN ('p', 'l') OR EXISTS (SELECT 1 FROM unnest(a.attoptions) o WHERE o NOT LIKE 'pg\\_attver=%')) AND {}", member("pg_class", "c.oid")),
        format!("SELECT 'default on a view column', c.oid::pg_catalog.regclass::text FROM pg_catalog.pg_attrdef d JOIN pg_catalog.pg_class c ON c.oid = d.adrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {in_schemas} AND c.relkind = 'v'"),
        format!("SELECT 'column default on a partition', c.oid::pg_catalog.regclass::text FROM pg_catalog.pg_attrdef d JOIN pg_catalog.pg_class c ON c.oid = d.adrelid JOIN pg_catalog.pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {in_schemas} AND c.relispartition AND NOT a.attislocal AND pg_catalog.pg_get_expr(d.adbin, d.adrelid) IS DISTINCT FROM (SELECT pg_catalog.pg_get_expr(pd.adbin, pd.adrelid) FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_attribute pa ON pa.attrelid = i.inhparent AND pa.attname = a.attname JOIN pg_catalog.pg_attrdef pd ON pd.adrelid = pa.attrelid AND pd.adnum = pa.attnum WHERE i.inhrelid = c.oid)"),
    ];
    let rows = conn.query(&checks.join("\nUNION ALL\n"))?;
    let found: Vec<(String, String)> = rows.iter().map(|r| (text(r, 0), text(r, 1))).collect();
    fail_unsupported(found, selection)
}

/// The kinds of object the backup fails on, as `skip_unsupported` names them.
pub const UNSUPPORTED_KINDS: &[&str] = &[
    "access method",
    "aggregate",
    "base type",
    "cast",
    "clustered index",
    "collation",
    "column default on a partition",
    "column statistics target",
    "column storage",
    "comment",
    "conversion",
    "default on a view column",
    "event trigger",
    "extension configuration table",
    "foreign data wrapper",
    "foreign server",
    "foreign table",
    "large object",
    "operator",
    "operator class",
    "operator family",
    "procedural language",
    "publication",
    "range type with a canonical function",
    "replica identity",
    "rule",
    "security label",
    "shell type",
    "statistics object",
    "table inheritance",
    "tablespace",
    "text search configuration",
    "text search dictionary",
    "text search parser",
    "text search template",
    "transform",
    "typed table",
    "window function",
];

/// Fails on the unsupported objects found (kind, name), except the kinds the pipeline
/// skips (each logged).
fn fail_unsupported(found: Vec<(String, String)>, selection: &Selection) -> Result<()> {
    let mut failing = Vec::new();
    for (kind, name) in found {
        if selection.skips(&kind) {
            runner_sdk::warn!("left out of the backup (`skip_unsupported`): {kind} {name}");
        } else {
            failing.push(format!("{kind} {name}"));
        }
    }
    if failing.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = failing.iter().take(20).map(String::as_str).collect();
    let more = if failing.len() > 20 {
        format!(" and {} more", failing.len() - 20)
    } else {
        String::new()
    };
    Err(Error::unsupported(format!(
        "the database holds objects the postgres source cannot back up: {}{more}; remove them, exclude their schema, or list their kind in `skip_unsupported` to leave them out knowingly",
        shown.join(", ")
    )))
}
