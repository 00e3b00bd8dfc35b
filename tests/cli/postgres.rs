//! The postgres source end to end against the PostgreSQL server on 127.0.0.1:5432: a
//! fixture of many object kinds backed up and restored, proven with pg_dump and content
//! digests; unsupported kinds, selective and failing restores, writers during a backup,
//! tables read and loaded in parallel from one snapshot, and connection errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{stderr, stdout};

const SERVER: &str = "127.0.0.1:5432";

/// A database created for one test and dropped after it.
struct Db {
    name: String,
}

static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

impl Db {
    fn create(label: &str) -> Db {
        let name = format!(
            "runner_t{}_{}_{label}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst)
        );
        psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
        psql("postgres", &format!("CREATE DATABASE {name}"));
        Db { name }
    }

    /// A name for a database the test expects a restore to create (dropped after too).
    fn reserve(label: &str) -> Db {
        let name = format!(
            "runner_t{}_{}_{label}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst)
        );
        psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
        Db { name }
    }

    fn sql(&self, sql: &str) -> String {
        psql(&self.name, sql)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@{SERVER}/{}", self.name)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-XAtq",
                "-c",
            ])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

/// Runs SQL with psql, failing the test on any error; returns the unaligned output.
fn psql(database: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            database,
            "-XAtq",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .expect("psql runs");
    assert!(
        output.status.success(),
        "psql {database}: {sql}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_string()
}

/// `pg_dump --schema-only --no-owner` without comments, SET lines and blank lines.
fn schema_dump(db: &Db) -> String {
    let output = Command::new("pg_dump")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "--schema-only",
            "--no-owner",
            "-d",
            &db.name,
        ])
        .output()
        .expect("pg_dump runs");
    assert!(
        output.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| {
            !(l.starts_with("--")
                || l.starts_with("SET ")
                || l.starts_with("SELECT pg_catalog.set_config")
                || l.starts_with("\\restrict")
                || l.starts_with("\\unrestrict")
                || l.trim().is_empty())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every table's and materialized view's ordered content digest and row count, and every
/// sequence's state, as one text.
fn content(db: &Db) -> String {
    let relations = db.sql(
        "SELECT c.oid::regclass FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
          ORDER BY c.oid::regclass::text",
    );
    let mut out = String::new();
    for relation in relations.lines() {
        let digest = db.sql(&format!(
            "SELECT count(*) || ' ' || md5(coalesce(string_agg(x, E'\\n' ORDER BY x), '')) FROM (SELECT t::text AS x FROM {relation} t) s"
        ));
        out.push_str(&format!("{relation}: {digest}\n"));
    }
    let sequences = db.sql("SELECT c.oid::regclass FROM pg_class c WHERE c.relkind = 'S' ORDER BY c.oid::regclass::text");
    for sequence in sequences.lines() {
        out.push_str(&format!(
            "{sequence}: {}\n",
            db.sql(&format!(
                "SELECT last_value || ' ' || is_called FROM {sequence}"
            ))
        ));
    }
    out
}

/// A fixture with every object kind the plugin restores and the common column types,
/// with awkward values (NaN, NULL array elements, unicode, tabs, newlines, backslashes).
const FIXTURE: &str = r#"
CREATE EXTENSION citext;
CREATE SCHEMA app;
COMMENT ON SCHEMA app IS 'application data';
CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN app.positive AS numeric(12,2) DEFAULT 1 NOT NULL CONSTRAINT positive_check CHECK (VALUE > 0);
COMMENT ON DOMAIN app.positive IS 'money above zero';
CREATE TYPE app.address AS (street text, zip varchar(10));
CREATE TYPE app.floatrange AS RANGE (subtype = float8, subtype_diff = float8mi);
CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
CREATE FUNCTION app.add(a int, b int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT a + b';
CREATE PROCEDURE app.note(n int) LANGUAGE plpgsql AS $$ BEGIN RAISE NOTICE 'n=%', n; END $$;
CREATE SEQUENCE app.counter START 100 INCREMENT 5;
SELECT nextval('app.counter'), nextval('app.counter');
CREATE TABLE app.customers (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name text NOT NULL,
  email public.citext UNIQUE,
  mood app.mood DEFAULT 'ok',
  address app.address,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz
);
COMMENT ON TABLE app.customers IS 'who buys';
COMMENT ON COLUMN app.customers.email IS 'unique, may be null';
CREATE TABLE app.orders (
  id serial PRIMARY KEY,
  customer_id bigint NOT NULL REFERENCES app.customers(id) ON DELETE CASCADE,
  amount app.positive,
  total numeric,
  qty int CHECK (qty >= 0),
  doubled int GENERATED ALWAYS AS (qty * 2) STORED,
  note text,
  tags text[],
  scores int[],
  payload jsonb,
  raw json,
  blob bytea,
  flag boolean,
  day date,
  at_time time,
  span interval,
  uid uuid DEFAULT gen_random_uuid(),
  ip inet,
  doc tsvector,
  valid tstzrange,
  fr app.floatrange,
  big bigint DEFAULT app.add(1, 2),
  CONSTRAINT orders_note_len CHECK (length(note) < 1000)
);
CREATE INDEX orders_customer_idx ON app.orders (customer_id);
CREATE INDEX orders_lower_note_idx ON app.orders (lower(note)) WHERE note IS NOT NULL;
CREATE INDEX orders_doc_idx ON app.orders USING gin (doc);
COMMENT ON INDEX app.orders_customer_idx IS 'lookups by customer';
CREATE TRIGGER customers_touch BEFORE UPDATE ON app.customers FOR EACH ROW EXECUTE FUNCTION app.touch();
COMMENT ON TRIGGER customers_touch ON app.customers IS 'keeps updated_at';
CREATE TABLE app.bookings (id int GENERATED BY DEFAULT AS IDENTITY, room int NOT NULL, during tstzrange NOT NULL,
  CONSTRAINT bookings_no_overlap EXCLUDE USING gist (during WITH &&));
CREATE TABLE app.events (id bigint NOT NULL, at date NOT NULL, kind text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE app.events_2024 PARTITION OF app.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE app.events_2025 PARTITION OF app.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE app.events_other PARTITION OF app.events DEFAULT;
CREATE INDEX events_kind_idx ON app.events (kind);
CREATE VIEW app.big_orders AS SELECT id, customer_id, total FROM app.orders WHERE total > 100;
CREATE VIEW app.big_order_count AS SELECT count(*) AS n FROM app.big_orders;
CREATE MATERIALIZED VIEW app.order_totals AS SELECT customer_id, sum(total) AS total, count(*) AS n FROM app.orders GROUP BY customer_id;
CREATE UNIQUE INDEX order_totals_customer ON app.order_totals (customer_id);
ALTER TABLE app.orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY orders_visible ON app.orders FOR SELECT TO PUBLIC USING (flag IS NOT FALSE);
CREATE SCHEMA billing;
CREATE TABLE billing.invoices (id int PRIMARY KEY, customer_id bigint REFERENCES app.customers(id), amount numeric(10,2) DEFAULT 0,
  issued date, note text COLLATE "C");
CREATE FUNCTION billing.open_invoices() RETURNS SETOF billing.invoices LANGUAGE sql STABLE AS 'SELECT * FROM billing.invoices WHERE amount > 0';
COMMENT ON FUNCTION billing.open_invoices() IS 'unpaid';
CREATE TABLE billing.empty (x int);
CREATE FUNCTION app.is_even(i int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT i % 2 = 0';
CREATE DOMAIN app.even AS int CHECK (app.is_even(VALUE));
CREATE TABLE billing.pairs (n app.even);
CREATE FUNCTION app.big_orders_of(c bigint) RETURNS SETOF app.big_orders LANGUAGE sql STABLE AS 'SELECT * FROM app.big_orders WHERE customer_id = c';
CREATE FUNCTION app.order_count() RETURNS bigint LANGUAGE sql STABLE BEGIN ATOMIC SELECT count(*) FROM app.orders; END;
CREATE UNLOGGED TABLE billing.scratch (k text PRIMARY KEY, v text) WITH (fillfactor = 70);

INSERT INTO app.customers (name, email, mood, address) VALUES
  ('Zoë Ünïcødé 🚀', 'zoe@example.com', 'happy', ROW('Rue de l''Église 1', '75001')),
  (E'tab\there', 'TAB@example.com', 'sad', NULL),
  (E'new\nline and back\\slash', NULL, NULL, ROW(NULL, NULL)),
  ('plain', 'plain@example.com', 'ok', ROW('', '0'));
INSERT INTO app.customers (name) SELECT 'customer ' || g FROM generate_series(1, 200) g;
UPDATE app.customers SET name = name || '!' WHERE id = 4;
INSERT INTO app.orders (customer_id, amount, total, qty, note, tags, scores, payload, raw, blob, flag, day, at_time, span, ip, doc, valid, fr, big)
SELECT 1 + g % 204, (g % 50) + 0.5, CASE WHEN g % 97 = 0 THEN 'NaN'::numeric ELSE g * 1.25 END, g % 7,
       CASE WHEN g % 5 = 0 THEN NULL ELSE E'note \\ ' || g || E'\t"quoted"\n' END,
       ARRAY['a', NULL, 'c' || g], ARRAY[g, NULL, -g], jsonb_build_object('g', g, 'nested', jsonb_build_array(1, 'x', NULL)),
       '{"raw": [1, 2, 3], "s": "\u00e9"}', decode(md5(g::text), 'hex'), CASE g % 3 WHEN 0 THEN true WHEN 1 THEN false END,
       DATE '2024-01-01' + g, TIME '12:34:56.789' + g * INTERVAL '1 second', g * INTERVAL '1 day 3 hours',
       ('10.0.' || (g % 255) || '.1/24')::inet, to_tsvector('english', 'the quick brown fox ' || g),
       tstzrange(TIMESTAMPTZ '2024-01-01 00:00+00' + g * INTERVAL '1 hour', NULL), app.floatrange(g, g + 0.5), 9007199254740993 + g
FROM generate_series(1, 3000) g;
INSERT INTO app.bookings (room, during) VALUES (1, '[2024-01-01, 2024-01-02)'), (2, '[2024-01-02, 2024-01-03)');
INSERT INTO app.events SELECT g, DATE '2024-06-01' + (g * 3), 'kind ' || (g % 4) FROM generate_series(1, 400) g;
INSERT INTO billing.invoices SELECT g, 1 + g % 10, g * 3.5, DATE '2025-01-01' + g, 'inv ' || g FROM generate_series(1, 100) g;
INSERT INTO billing.scratch VALUES ('k', 'v');
INSERT INTO billing.pairs VALUES (2), (4), (NULL);
REFRESH MATERIALIZED VIEW app.order_totals;
"#;

/// A directory with a pipeline backing up `db` into a local repository.
struct Pipeline {
    dir: tempfile::TempDir,
}

impl Pipeline {
    fn new(source: &str) -> Pipeline {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[source]\n{source}\n[[transform]]\ntype = \"checksum\"\n\n[[transform]]\ntype = \"zstd\"\nlevel = 3\n\n[sink]\ntype = \"local\"\npath = \"repo\"\n"
        );
        std::fs::write(dir.path().join("pipeline.toml"), text).unwrap();
        Pipeline { dir }
    }

    fn for_db(db: &Db, extra: &str) -> Pipeline {
        Pipeline::new(&format!(
            "type = \"postgres\"\nurl = \"{}\"\n{extra}",
            db.url()
        ))
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_runner"))
            .args(args)
            .current_dir(self.path())
            .env("RUNNER_CACHE_DIR", crate::common::cache_dir())
            .env("PGPASSWORD_TEST", "not-used-with-trust")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "runner {args:?} failed:\n{}\n{}",
            stdout(&output),
            stderr(&output)
        );
        stdout(&output)
    }

    fn backup(&self) -> String {
        self.ok(&["run", "pipeline.toml"])
    }

    fn restore(&self, extra: &[&str]) -> Output {
        let mut args = vec!["restore", "pipeline.toml"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// One metadata value of an artifact in the (only) snapshot's manifest, which is plain
    /// JSON in this unencrypted repository.
    fn artifact_metadata(&self, artifact: &str, key: &str) -> Option<String> {
        let snapshots = self.path().join("repo/snapshots");
        let manifest = std::fs::read_dir(&snapshots)
            .unwrap()
            .next()?
            .unwrap()
            .path();
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
        let artifacts = manifest.get("artifacts")?.as_array()?;
        let found = artifacts
            .iter()
            .find(|a| a.get("name").and_then(|n| n.as_str()) == Some(artifact))?;
        found
            .get("metadata")?
            .get(key)?
            .as_str()
            .map(str::to_string)
    }
}

fn staging_databases(target: &str) -> String {
    psql(
        "postgres",
        &format!("SELECT datname FROM pg_database WHERE datname LIKE '{target}\\_runner\\_%'"),
    )
}

#[test]
fn postgres_backup_restores_a_database_that_dumps_identically() {
    let source = Db::create("src");
    source.sql(FIXTURE);
    let pipeline = Pipeline::for_db(&source, "password = \"${env:PGPASSWORD_TEST}\"\n");
    pipeline.backup();

    let target = Db::reserve("dst");
    let output = pipeline.restore(&["--target", &target.name]);
    assert!(
        output.status.success(),
        "restore failed:\n{}\n{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("app.orders: rows=3000"),
        "{}",
        stdout(&output)
    );
    let (before, after) = (schema_dump(&source), schema_dump(&target));
    if before != after {
        let diff = Command::new("diff")
            .arg(write_temp(&before))
            .arg(write_temp(&after))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!("pg_dump of the restored database differs:\n{diff}");
    }
    assert_eq!(content(&source), content(&target));
    assert_eq!(
        staging_databases(&target.name),
        "",
        "no staging database is left"
    );

    // Over an existing database only with --mode replace, which swaps it whole.
    let refused = pipeline.restore(&["--target", &target.name]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("exists"), "{}", stderr(&refused));
    target.sql("DELETE FROM app.bookings; CREATE TABLE app.extra (x int)");
    let replaced = pipeline.restore(&["--target", &target.name, "--mode", "replace"]);
    assert!(replaced.status.success(), "{}", stderr(&replaced));
    assert_eq!(schema_dump(&source), schema_dump(&target));
    assert_eq!(content(&source), content(&target));
    assert_eq!(staging_databases(&target.name), "");

    // Row counts in the snapshot's metadata are exact.
    assert_eq!(
        pipeline.artifact_metadata("app.orders", "rows").as_deref(),
        Some("3000")
    );
    assert_eq!(
        pipeline
            .artifact_metadata("app.events_2024", "rows")
            .as_deref(),
        Some(source.sql("SELECT count(*) FROM app.events_2024").as_str())
    );
}

fn write_temp(text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "runner-pgdump-{}-{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn postgres_unsupported_object_kinds_fail_the_backup_by_name() {
    let source = Db::create("unsup");
    source.sql(
        "CREATE TABLE t (x int); CREATE TABLE t_log (x int);
         CREATE RULE t_logged AS ON INSERT TO t DO ALSO INSERT INTO t_log VALUES (NEW.x);
         CREATE AGGREGATE my_sum(int) (SFUNC = int4pl, STYPE = int);",
    );
    let pipeline = Pipeline::for_db(&source, "");
    let output = pipeline.run(&["run", "pipeline.toml"]);
    assert!(
        !output.status.success(),
        "a backup that would lose objects must fail"
    );
    let err = stderr(&output);
    assert!(err.contains("rule t_logged on public.t"), "{err}");
    assert!(err.contains("aggregate public.my_sum(integer)"), "{err}");
    assert!(
        !pipeline.path().join("repo/snapshots").exists()
            || std::fs::read_dir(pipeline.path().join("repo/snapshots"))
                .unwrap()
                .next()
                .is_none()
    );

    // Leaving them out is possible, but only by saying so.
    let pipeline = Pipeline::for_db(&source, "skip_unsupported = [\"rule\", \"aggregate\"]\n");
    pipeline.backup();
}

#[test]
fn postgres_restores_one_table_into_an_existing_database() {
    let source = Db::create("one");
    source.sql(FIXTURE);
    let pipeline = Pipeline::for_db(&source, "");
    pipeline.backup();
    let target = Db::reserve("one_dst");
    let output = pipeline.restore(&["--target", &target.name]);
    assert!(output.status.success(), "{}", stderr(&output));

    target.sql("DELETE FROM app.orders WHERE id % 2 = 0; INSERT INTO billing.invoices VALUES (1000, 1, 1, NULL, 'kept')");
    let only = pipeline.restore(&[
        "--target",
        &target.name,
        "--only",
        "app.orders",
        "--mode",
        "replace",
    ]);
    assert!(only.status.success(), "{}", stderr(&only));
    assert!(
        stdout(&only).contains("app.orders: rows=3000"),
        "{}",
        stdout(&only)
    );
    let digest = |db: &Db, table: &str| {
        db.sql(&format!(
            "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {table} t"
        ))
    };
    assert_eq!(digest(&source, "app.orders"), digest(&target, "app.orders"));
    assert_eq!(
        target.sql("SELECT note FROM billing.invoices WHERE id = 1000"),
        "kept",
        "other tables are untouched"
    );

    // Merging rows over existing ones needs --overwrite, and a conflict changes nothing.
    let refused = pipeline.restore(&["--target", &target.name, "--only", "app.orders"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("has rows"),
        "{}",
        stderr(&refused)
    );
    let conflict = pipeline.restore(&[
        "--target",
        &target.name,
        "--only",
        "app.orders",
        "--overwrite",
    ]);
    assert!(!conflict.status.success());
    assert!(
        stderr(&conflict).contains("orders_pkey"),
        "{}",
        stderr(&conflict)
    );
    assert_eq!(digest(&source, "app.orders"), digest(&target, "app.orders"));
}

#[test]
fn postgres_failed_restore_leaves_the_target_unchanged() {
    let role = format!("runner_role_{}", std::process::id());
    psql(
        "postgres",
        &format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role}"),
    );
    let source = Db::create("fail");
    source.sql(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g;
         ALTER TABLE t ENABLE ROW LEVEL SECURITY; CREATE POLICY p ON t TO {role} USING (true);"
    ));
    let pipeline = Pipeline::for_db(&source, "");
    pipeline.backup();
    // The policy's role is gone by restore time: the restore fails after the data is loaded.
    source.sql("DROP POLICY p ON t");
    psql("postgres", &format!("DROP ROLE {role}"));

    let target = Db::create("fail_dst");
    target.sql("CREATE TABLE sentinel (x text); INSERT INTO sentinel VALUES ('still here')");
    let output = pipeline.restore(&["--target", &target.name, "--mode", "replace"]);
    assert!(!output.status.success(), "{}", stdout(&output));
    assert!(
        stderr(&output).contains(&role),
        "the error names the missing role: {}",
        stderr(&output)
    );
    assert_eq!(target.sql("SELECT x FROM sentinel"), "still here");
    assert_eq!(staging_databases(&target.name), "", "staging is dropped");
}

#[test]
fn postgres_backup_is_consistent_while_writers_run() {
    let source = Db::create("busy");
    let init = Command::new("pgbench")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-i",
            "-s",
            "2",
            "--foreign-keys",
            "-q",
            &source.name,
        ])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    // TPC-B-like transactions until killed: each moves the same delta through accounts,
    // tellers, branches and history, so any consistent state balances.
    let mut writers = pgbench_writers(&["-t", "1000000", "-n", &source.name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Let writes begin before the snapshot is taken.
    while source.sql("SELECT count(*) FROM pgbench_history") == "0" {
        assert!(
            writers.try_wait().unwrap().is_none(),
            "pgbench stopped before writing"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pipeline = Pipeline::for_db(&source, "");
    let backed_up = pipeline.run(&["run", "pipeline.toml"]);
    let _ = writers.kill();
    let _ = writers.wait();
    assert!(backed_up.status.success(), "{}", stderr(&backed_up));

    let target = Db::reserve("busy_dst");
    let output = pipeline.restore(&["--target", &target.name]);
    // The foreign keys are created after the rows are loaded, so success means they hold.
    assert!(output.status.success(), "{}", stderr(&output));
    let balances = target.sql(
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts) = (SELECT sum(bbalance) FROM pgbench_branches)
            AND (SELECT sum(bbalance) FROM pgbench_branches) = (SELECT sum(tbalance) FROM pgbench_tellers)
            AND (SELECT sum(tbalance) FROM pgbench_tellers) = (SELECT coalesce(sum(delta), 0) FROM pgbench_history)",
    );
    assert_eq!(
        balances, "t",
        "the restored database is one consistent state"
    );
    let history = target.sql("SELECT count(*) FROM pgbench_history");
    assert_eq!(
        pipeline
            .artifact_metadata("public.pgbench_history", "rows")
            .as_deref(),
        Some(history.as_str())
    );
    assert!(history.parse::<u64>().unwrap() > 0);
    let foreign_keys = "SELECT count(*) FROM pg_constraint WHERE contype = 'f'";
    assert_eq!(target.sql(foreign_keys), source.sql(foreign_keys));
    assert_ne!(target.sql(foreign_keys), "0");
}

/// Accounts in each of the two balance tables of the transfer fixture.
const ACCOUNTS: u32 = 60_000;

/// `checking` and `savings` accounts and a `transfers` log: a transfer moves money from
/// a checking to a savings account and logs it in one transaction, so in any one
/// consistent state the money is constant and savings grew by exactly the logged sum.
/// Padding makes every table several MB, long enough to read that the parallel readers
/// overlap.
fn transfer_fixture(db: &Db) {
    db.sql(&format!(
        "CREATE TABLE checking (id int PRIMARY KEY, balance bigint NOT NULL, pad text NOT NULL);
         CREATE TABLE savings (id int PRIMARY KEY, balance bigint NOT NULL, pad text NOT NULL);
         CREATE TABLE transfers (id bigserial PRIMARY KEY, from_id int NOT NULL REFERENCES checking,
                                 to_id int NOT NULL REFERENCES savings, amount bigint NOT NULL, pad text NOT NULL);
         INSERT INTO checking SELECT g, 1000, repeat(md5(g::text), 3) FROM generate_series(1, {ACCOUNTS}) g;
         INSERT INTO savings SELECT g, 1000, repeat(md5(g::text), 3) FROM generate_series(1, {ACCOUNTS}) g;
         INSERT INTO transfers (from_id, to_id, amount, pad)
              SELECT g, g, 0, repeat(md5(g::text), 3) FROM generate_series(1, {ACCOUNTS}) g;
         CREATE INDEX ON transfers (to_id);
         ANALYZE"
    ));
}

/// True when `db` holds one consistent state of the transfer fixture.
fn transfers_balance(db: &Db) -> String {
    db.sql(&format!(
        "SELECT (SELECT sum(balance) FROM checking) + (SELECT sum(balance) FROM savings) = {total}
            AND (SELECT sum(balance) FROM savings) - {start} = (SELECT sum(amount) FROM transfers)",
        total = 2 * 1000 * u64::from(ACCOUNTS),
        start = 1000 * u64::from(ACCOUNTS),
    ))
}

#[test]
fn postgres_parallel_backup_reads_every_table_in_one_snapshot() {
    let source = Db::create("transfers");
    // First in the listing and over 3 objects (16 MiB each) of COPY text: it is still being
    // loaded, a full decode window in flight, while the other tables load next to it
    // (this once left every worker blocked on output no one read).
    source.sql(
        "CREATE TABLE archive (id int PRIMARY KEY, note text NOT NULL);
         INSERT INTO archive SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 450000) g",
    );
    transfer_fixture(&source);
    // Transfers until killed, on two connections.
    let script = write_temp(
        "\\set a random(1, 60000)\n\\set b random(1, 60000)\n\\set x random(1, 100)\n\
         BEGIN;\nUPDATE checking SET balance = balance - :x WHERE id = :a;\n\
         UPDATE savings SET balance = balance + :x WHERE id = :b;\n\
         INSERT INTO transfers (from_id, to_id, amount, pad) VALUES (:a, :b, :x, 'p');\nCOMMIT;\n",
    );
    let mut writers = pgbench_writers(&["-t", "10000000", "-n", "-f"])
        .arg(&script)
        .arg(&source.name)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let logged = "SELECT count(*) FROM transfers WHERE amount > 0";
    while source.sql(logged) == "0" {
        assert!(
            writers.try_wait().unwrap().is_none(),
            "pgbench stopped before writing"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pipeline = Pipeline::for_db(&source, "jobs = 3");
    let backed_up = pipeline.run(&["-v", "run", "pipeline.toml"]);
    let moved = source.sql(logged);
    let _ = writers.kill();
    let _ = writers.wait();
    assert!(backed_up.status.success(), "{}", stderr(&backed_up));
    assert!(
        stderr(&backed_up).contains("reading artifacts in parallel from one shared view"),
        "{}",
        stderr(&backed_up)
    );
    // Every table was read in the same exported snapshot, by more than one server process
    // (the pids and the snapshot id are the server's, recorded by the plugin per table).
    let tables = ["public.checking", "public.savings", "public.transfers"];
    let snapshots: std::collections::BTreeSet<String> = tables
        .iter()
        .map(|t| {
            pipeline
                .artifact_metadata(t, "snapshot")
                .expect("snapshot recorded")
        })
        .collect();
    assert_eq!(
        snapshots.len(),
        1,
        "one snapshot for all tables: {snapshots:?}"
    );
    let processes: std::collections::BTreeSet<String> = tables
        .iter()
        .map(|t| {
            pipeline
                .artifact_metadata(t, "backend_pid")
                .expect("pid recorded")
        })
        .collect();
    assert!(
        processes.len() >= 2,
        "the tables were read on {processes:?}: one connection, not parallel"
    );
    assert!(moved.parse::<u64>().unwrap() > 0);

    // The writers kept moving money while the tables were read one by one on different
    // connections; only one point in time balances.
    let target = Db::reserve("transfers_dst");
    let restored = pipeline.restore(&["--target", &target.name]);
    assert!(restored.status.success(), "{}", stderr(&restored));
    assert_eq!(
        transfers_balance(&target),
        "t",
        "the restored tables come from one consistent state"
    );
    for table in tables.iter().chain(&["public.archive"]) {
        let rows = target.sql(&format!("SELECT count(*) FROM {table}"));
        assert_eq!(
            pipeline.artifact_metadata(table, "rows").as_deref(),
            Some(rows.as_str()),
            "{table}"
        );
    }
    // Loaded on three connections at once, keys and indexes built on more than one.
    let report = stdout(&restored);
    assert!(report.contains("tables_loaded_at_once=3"), "{report}");
    assert!(!report.contains("post_data_connections=1"), "{report}");
    let foreign_keys = "SELECT count(*) FROM pg_constraint WHERE contype = 'f'";
    assert_eq!(target.sql(foreign_keys), "2");
    assert_eq!(staging_databases(&target.name), "");
}

#[test]
fn postgres_jobs_one_reads_and_loads_on_one_connection() {
    let source = Db::create("jobs1");
    transfer_fixture(&source);
    let pipeline = Pipeline::for_db(&source, "jobs = 1");
    let output = pipeline.run(&["-v", "run", "pipeline.toml"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        !stderr(&output).contains("in parallel"),
        "{}",
        stderr(&output)
    );
    let processes: std::collections::BTreeSet<String> =
        ["public.checking", "public.savings", "public.transfers"]
            .iter()
            .map(|t| pipeline.artifact_metadata(t, "backend_pid").unwrap())
            .collect();
    assert_eq!(processes.len(), 1, "{processes:?}");
    // Restores into a new database, loading `jobs` tables at once.
    let restore_with = |name: &str, jobs: usize| {
        let target = Db::reserve(name);
        let restored = pipeline.restore(&["--target", &target.name]);
        assert!(restored.status.success(), "{}", stderr(&restored));
        let report = stdout(&restored);
        assert!(
            report.contains(&format!("tables_loaded_at_once={jobs}")),
            "{report}"
        );
        assert!(
            report.contains(&format!("post_data_connections={jobs}")),
            "{report}"
        );
        assert_eq!(transfers_balance(&target), "t");
    };
    let set_jobs = |from: &str, to: &str| {
        let file = pipeline.path().join("pipeline.toml");
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, text.replace(from, to)).unwrap();
    };
    restore_with("jobs1_dst", 1);

    // A restore takes the pipeline's `jobs` now, not the one recorded at backup.
    set_jobs("jobs = 1", "jobs = 2");
    restore_with("jobs2_dst", 2);

    // Nonsense is refused before anything runs.
    set_jobs("jobs = 2", "jobs = 0");
    let refused = pipeline.run(&["run", "pipeline.toml"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("jobs") && stderr(&refused).contains("expected 1 to 64"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn postgres_connection_errors_name_the_cause() {
    // Nothing listens on port 1.
    let pipeline =
        Pipeline::new("type = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:1/nothing\"\n");
    let output = pipeline.run(&["run", "pipeline.toml"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("cannot connect to PostgreSQL at 127.0.0.1:1"),
        "{}",
        stderr(&output)
    );

    // A database that does not exist.
    let pipeline = Pipeline::new(&format!(
        "type = \"postgres\"\nurl = \"postgres://postgres@{SERVER}/runner_no_such_db\"\n"
    ));
    let output = pipeline.run(&["run", "pipeline.toml"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("\"runner_no_such_db\" does not exist"),
        "{}",
        stderr(&output)
    );

    // The same plugin loaded from a file gets no implied grant: its connection is refused.
    let wasm = Path::new(env!("CARGO_BIN_EXE_runner"))
        .parent()
        .unwrap()
        .join("../plugins/wasm32-wasip2/release/runner_plugin_postgres.wasm");
    let wasm = wasm.canonicalize().expect("the built postgres component");
    let source = Db::create("grant");
    let pipeline = Pipeline::new(&format!(
        "plugin = \"{}\"\nurl = \"{}\"\n",
        wasm.display(),
        source.url()
    ));
    let output = pipeline.run(&["run", "pipeline.toml"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains(&format!("cannot connect to PostgreSQL at {SERVER}")),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("may reach only"),
        "{}",
        stderr(&output)
    );

    // A wrong password: a listener that answers like a server with password authentication.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || fake_password_server(listener));
    let pipeline = Pipeline::new(&format!(
        "type = \"postgres\"\nurl = \"postgres://alice@127.0.0.1:{port}/app\"\npassword = \"${{env:PGPASSWORD_TEST}}\"\n"
    ));
    let output = pipeline.run(&["run", "pipeline.toml"]);
    server.join().unwrap();
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("password authentication failed for user \"alice\""),
        "{err}"
    );
    assert!(
        !err.contains("not-used-with-trust"),
        "the password never shows: {err}"
    );
}

/// Answers one connection as PostgreSQL does for a wrong cleartext password.
fn fake_password_server(listener: std::net::TcpListener) {
    use std::io::{Read, Write};
    let (mut stream, _) = listener.accept().unwrap();
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).unwrap();
    let mut startup = vec![0u8; u32::from_be_bytes(length) as usize - 4];
    stream.read_exact(&mut startup).unwrap();
    // AuthenticationCleartextPassword.
    stream.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).unwrap();
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).unwrap();
    assert_eq!(header[0], b'p', "a password message");
    let mut password = vec![0u8; u32::from_be_bytes(header[1..5].try_into().unwrap()) as usize - 4];
    stream.read_exact(&mut password).unwrap();
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', "FATAL"),
        (b'C', "28P01"),
        (b'M', "password authentication failed for user \"alice\""),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    message.extend_from_slice(&body);
    stream.write_all(&message).unwrap();
}

/// Roles created for one test, dropped after its databases.
struct Roles(Vec<String>);

impl Drop for Roles {
    fn drop(&mut self) {
        for role in &self.0 {
            let _ = Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-XAtq",
                    "-c",
                ])
                .arg(format!("DROP ROLE IF EXISTS {role}"))
                .output();
        }
    }
}

#[test]
fn postgres_privileges_restore_owners_and_grants() {
    let (owner, reader) = (
        format!("runner_owner_{}", std::process::id()),
        format!("runner_reader_{}", std::process::id()),
    );
    psql(
        "postgres",
        &format!(
            "DROP ROLE IF EXISTS {owner}; DROP ROLE IF EXISTS {reader}; CREATE ROLE {owner}; CREATE ROLE {reader}"
        ),
    );
    let _roles = Roles(vec![owner.clone(), reader.clone()]);
    let source = Db::create("priv");
    source.sql(FIXTURE);
    source.sql(&format!(
        "ALTER SCHEMA app OWNER TO {owner}; ALTER TABLE app.orders OWNER TO {owner}; ALTER VIEW app.big_orders OWNER TO {owner};
         ALTER TYPE app.mood OWNER TO {owner}; ALTER DOMAIN app.positive OWNER TO {owner}; ALTER FUNCTION app.touch() OWNER TO {owner};
         GRANT USAGE ON SCHEMA app TO {reader}; GRANT SELECT ON app.orders, app.big_orders TO {reader};
         GRANT SELECT (name), UPDATE (email) ON app.customers TO {reader}; GRANT USAGE ON SEQUENCE app.counter TO {reader};
         REVOKE EXECUTE ON FUNCTION app.add(int, int) FROM PUBLIC; GRANT EXECUTE ON FUNCTION app.add(int, int) TO {reader} WITH GRANT OPTION;"
    ));
    let pipeline = Pipeline::for_db(&source, "privileges = true\n");
    pipeline.backup();
    let target = Db::reserve("priv_dst");
    let output = pipeline.restore(&["--target", &target.name]);
    assert!(output.status.success(), "{}", stderr(&output));

    // pg_dump with owners and privileges this time.
    let dump = |db: &Db| {
        let output = Command::new("pg_dump")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "--schema-only",
                "-d",
                &db.name,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| {
                !(l.starts_with("--")
                    || l.starts_with("SET ")
                    || l.starts_with("SELECT pg_catalog.set_config")
                    || l.starts_with('\\')
                    || l.trim().is_empty())
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let before = dump(&source);
    assert!(
        before.contains(&format!("OWNER TO {owner}")) && before.contains(&format!("TO {reader}"))
    );
    assert_eq!(before, dump(&target));
}

/// `pgbench` with two client connections to the local server, then `args`.
fn pgbench_writers(args: &[&str]) -> Command {
    let mut command = Command::new("pgbench");
    command
        .args(["-h", "127.0.0.1", "-U", "postgres", "-c", "2"])
        .args(args);
    command
}
