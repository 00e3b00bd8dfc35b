#!/usr/bin/env bash
# Benchmark (run by hand, not in CI): backup and restore of a ~1 GiB SQLite database,
# `runner run` (sqlite -> zstd -3 -> local) and `runner restore` next to the sqlite3
# shell's `.backup` + `zstd -3` and `zstd -d` + `PRAGMA integrity_check`, with wall time,
# MiB/s of database bytes, peak RSS and stored bytes.
#
#   cargo build --release && benches/sqlite-vs-sqlite3.sh
#
# Environment: RUNNER (binary, default target/release/runner), SIZE_MIB (database size,
# default 1024), WORK (scratch directory, default a new one under /var/tmp, removed at
# the end unless KEEP=1). Needs sqlite3, zstd and GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNNER=$(realpath "${RUNNER:-target/release/runner}")
SIZE_MIB=${SIZE_MIB:-1024}
WORK=${WORK:-$(mktemp -d /var/tmp/runner-sqlite-bench.XXXXXX)}
for tool in sqlite3 zstd /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "error: $tool is missing (apt-get install sqlite3 zstd time)" >&2; exit 1; }
done
[ -x "$RUNNER" ] || { echo "error: build the runner first: cargo build --release" >&2; exit 1; }
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK" && cd "$WORK"
mkdir -p db

# A database of realistic rows (ids, numbers, short text, hex payloads that compress
# about 2:1) with two indexes, in WAL mode like most applications' databases.
if [ ! -f db/app.db ]; then
    rows=$((SIZE_MIB * 1024 * 1024 / 420))
    echo "generating db/app.db: $rows rows (~$SIZE_MIB MiB)"
    sqlite3 db/app.db >/dev/null <<SQL
PRAGMA journal_mode = WAL;
CREATE TABLE events(id INTEGER PRIMARY KEY, user TEXT NOT NULL, kind INTEGER NOT NULL, at INTEGER NOT NULL, payload TEXT);
CREATE INDEX events_user ON events(user);
CREATE INDEX events_at ON events(at);
WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT $rows)
INSERT INTO events SELECT x, 'user-' || (x * 7919 % 50000), x % 13, 1700000000 + x * 3, hex(randomblob(150)) FROM n;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
fi
rm -rf repo restored peer.db peer.db.zst   # a kept WORK reuses only the database
db_bytes=$(stat -c %s db/app.db)
echo "database: $db_bytes bytes ($((db_bytes / 1048576)) MiB)"

cat > pipeline.toml <<TOML
[source]
type = "sqlite"
paths = ["db/app.db"]
scratch_dir = "."
[source.limits]
call_timeout = "3600s"

[[transform]]
type = "zstd"
level = 3

[sink]
type = "local"
path = "repo"
TOML

# measure NAME COMMAND...: wall seconds, database MiB/s and peak RSS of one command.
measure() {
    local name=$1; shift
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    local start end rss
    start=$(date +%s.%N)
    /usr/bin/time -f "%M" -o time.out "$@" >/dev/null
    end=$(date +%s.%N)
    rss=$(tail -1 time.out)
    awk -v n="$name" -v s="$start" -v e="$end" -v b="$db_bytes" -v r="$rss" \
        'BEGIN { t = e - s; printf "%-44s %7.2f s %8.1f MiB/s %7.0f MiB RSS\n", n, t, b / 1048576 / t, r / 1024 }'
}

export RUNNER_CACHE_DIR="$WORK/cache"
"$RUNNER" validate pipeline.toml >/dev/null   # compiles the components once, like cron's second run

echo "--- backup"
measure "runner run (sqlite -> zstd -3 -> local)" "$RUNNER" run pipeline.toml
measure "sqlite3 .backup + zstd -3" sh -c 'sqlite3 db/app.db ".backup peer.db" && zstd -q -3 -f peer.db -o peer.db.zst && rm peer.db'
echo "stored: runner $(du -sb repo/data | cut -f1) bytes of data (+ $(du -sb repo/components | cut -f1) bytes of components, once per repository), sqlite3+zstd $(stat -c %s peer.db.zst) bytes"

echo "--- restore"
measure "runner restore (+ integrity_check)" "$RUNNER" restore pipeline.toml --target restored/runner.db
measure "zstd -d + sqlite3 integrity_check" sh -c 'mkdir -p restored && zstd -q -d -f peer.db.zst -o restored/peer.db && sqlite3 restored/peer.db "PRAGMA integrity_check" | grep -qx ok'
measure "zstd -d (no check)" zstd -q -d -f peer.db.zst -o restored/peer2.db
cmp <(sqlite3 db/app.db "SELECT count(*), sum(kind), max(at) FROM events") \
    <(sqlite3 restored/runner.db "SELECT count(*), sum(kind), max(at) FROM events") && echo "restored database matches"
