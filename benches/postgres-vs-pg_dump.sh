#!/usr/bin/env bash
# Benchmark (not a test): runner's postgres pipeline (postgres -> zstd-3 -> local)
# against pg_dump -Fc and pg_restore -j 2, on one pgbench database, in the same run.
# Prints a table with seconds, MB/s of table data and the stored size.
#
#   benches/postgres-vs-pg_dump.sh [SCALE] [WORKDIR]   (default scale 50, ~750 MB of tables)
#
# Needs: the PostgreSQL server on 127.0.0.1:5432 (trust auth for postgres), pgbench,
# pg_dump, pg_restore, psql, GNU time; a release build of runner (built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SCALE=${1:-50}
WORK=${2:-$(mktemp -d /tmp/runner-pgbench.XXXXXX)}
mkdir -p "$WORK"
echo "workdir: $WORK, pgbench scale $SCALE"
[ -x target/release/runner ] || cargo build --release
RUNNER=$ROOT/target/release/runner
PG=(-h 127.0.0.1 -U postgres)
SRC=runner_bench_src
OURS=runner_bench_restored
THEIRS=runner_bench_pg_restore

psql "${PG[@]}" -XAtq -d postgres -c "DROP DATABASE IF EXISTS $SRC WITH (FORCE)" -c "CREATE DATABASE $SRC"
echo "initializing pgbench scale $SCALE..."
pgbench "${PG[@]}" -i -s "$SCALE" --foreign-keys -q "$SRC" >/dev/null 2>&1
DATA_MB=$(psql "${PG[@]}" -XAtq -d "$SRC" -c "SELECT pg_database_size(current_database()) / 1048576")

cat > "$WORK/pipeline.toml" <<TOML
[source]
type = "postgres"
url = "postgres://postgres@127.0.0.1:5432/$SRC"

[[transform]]
type = "zstd"
level = 3

[sink]
type = "local"
path = "repo"
TOML
rm -rf "$WORK/repo" "$WORK/dump.fc"

# seconds COMMAND...: wall-clock seconds of one command (its output goes to $WORK/log).
seconds() {
    local start end
    start=$(date +%s.%N)
    "$@" >>"$WORK/log" 2>&1
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}

drop() { psql "${PG[@]}" -XAtq -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)"; }
drop "$OURS"; drop "$THEIRS"

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
RUN=$(cd "$WORK" && seconds "$RUNNER" run pipeline.toml)
DUMP=$(seconds pg_dump "${PG[@]}" -Fc -f "$WORK/dump.fc" "$SRC")
RESTORE=$(cd "$WORK" && seconds "$RUNNER" restore pipeline.toml --target "$OURS")
psql "${PG[@]}" -XAtq -d postgres -c "CREATE DATABASE $THEIRS"
PGRESTORE=$(seconds pg_restore "${PG[@]}" -j 2 -d "$THEIRS" "$WORK/dump.fc")

OURS_MB=$(du -sm "$WORK/repo" | cut -f1)
THEIRS_MB=$(du -sm "$WORK/dump.fc" | cut -f1)
rate() { echo "scale=1; $DATA_MB / $1" | bc; }
echo "load average before the timings: $LOAD"
printf '\n%-34s %9s %9s %10s\n' "step ($DATA_MB MB database)" seconds "MB/s" "stored MB"
printf '%-34s %9.1f %9s %10s\n' "runner run (postgres, zstd-3)" "$RUN" "$(rate "$RUN")" "$OURS_MB"
printf '%-34s %9.1f %9s %10s\n' "pg_dump -Fc (gzip 6)" "$DUMP" "$(rate "$DUMP")" "$THEIRS_MB"
printf '%-34s %9.1f %9s %10s\n' "runner restore (staging + rename)" "$RESTORE" "$(rate "$RESTORE")" "-"
printf '%-34s %9.1f %9s %10s\n' "pg_restore -j 2" "$PGRESTORE" "$(rate "$PGRESTORE")" "-"

# Same rows on both sides.
for t in pgbench_accounts pgbench_branches pgbench_tellers pgbench_history; do
    a=$(psql "${PG[@]}" -XAtq -d "$OURS" -c "SELECT count(*) FROM $t")
    b=$(psql "${PG[@]}" -XAtq -d "$THEIRS" -c "SELECT count(*) FROM $t")
    [ "$a" = "$b" ] || { echo "row counts differ on $t: $a vs $b"; exit 1; }
done
drop "$OURS"; drop "$THEIRS"; drop "$SRC"
