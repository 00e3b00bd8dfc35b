#!/usr/bin/env bash
# Benchmark (not a test): runner's postgres pipeline (postgres -> zstd-3 -> local)
# against pg_dump -Fd -j JOBS and pg_restore -j JOBS, on one pgbench database plus COPIES
# copies of pgbench_accounts (so several large tables are shared out between the
# connections), in the same run; runner with jobs = 1 too, to show what parallel tables
# give. Prints a table with seconds, MB/s of table data and the stored size.
#
#   benches/postgres-vs-pg_dump.sh [SCALE] [WORKDIR] [JOBS] [COPIES]
#       (defaults: scale 50, a new temporary directory, 2 jobs, 1 copy: ~1.4 GB of tables)
#
# Needs: the PostgreSQL server on 127.0.0.1:5432 (trust auth for postgres), pgbench,
# pg_dump, pg_restore, psql, GNU time; a release build of runner (built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SCALE=${1:-50}
WORK=${2:-$(mktemp -d /tmp/runner-pgbench.XXXXXX)}
JOBS=${3:-2}
COPIES=${4:-1}
mkdir -p "$WORK"
echo "workdir: $WORK, pgbench scale $SCALE, $COPIES copies of pgbench_accounts, jobs $JOBS"
[ -x target/release/runner ] || cargo build --release --tests --bins
RUNNER=$ROOT/target/release/runner
PG=(-h 127.0.0.1 -U postgres)
SRC=runner_bench_src
OURS=runner_bench_restored
THEIRS=runner_bench_pg_restore

psql "${PG[@]}" -XAtq -d postgres -c "DROP DATABASE IF EXISTS $SRC WITH (FORCE)" -c "CREATE DATABASE $SRC"
echo "initializing pgbench scale $SCALE..."
pgbench "${PG[@]}" -i -s "$SCALE" --foreign-keys -q "$SRC" >/dev/null 2>&1
for i in $(seq 1 "$COPIES"); do
    psql "${PG[@]}" -XAtq -d "$SRC" \
        -c "CREATE TABLE accounts_copy_$i (LIKE pgbench_accounts INCLUDING ALL)" \
        -c "INSERT INTO accounts_copy_$i SELECT * FROM pgbench_accounts" \
        -c "ANALYZE accounts_copy_$i"
done
DATA_MB=$(psql "${PG[@]}" -XAtq -d "$SRC" -c "SELECT pg_database_size(current_database()) / 1048576")

cat > "$WORK/pipeline.toml" <<TOML
[source]
type = "postgres"
url = "postgres://postgres@127.0.0.1:5432/$SRC"
jobs = $JOBS

[[transform]]
type = "zstd"
level = 3

[sink]
type = "local"
path = "repo"
TOML
sed "s/^jobs = .*/jobs = 1/" "$WORK/pipeline.toml" > "$WORK/serial.toml"
sed -i 's/^path = "repo"/path = "repo1"/' "$WORK/serial.toml"
rm -rf "$WORK/repo" "$WORK/repo1" "$WORK/dump.d"

# seconds COMMAND...: wall-clock seconds of one command (its output goes to $WORK/log).
seconds() {
    local start end
    start=$(date +%s.%N)
    "$@" >>"$WORK/log" 2>&1
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}

drop() { psql "${PG[@]}" -XAtq -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)"; }
SERIAL=${OURS}_serial
drop "$OURS"; drop "$THEIRS"; drop "$SERIAL"

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
RUN=$(cd "$WORK" && seconds "$RUNNER" run pipeline.toml)
RUN1=$(cd "$WORK" && seconds "$RUNNER" run serial.toml)
DUMP=$(seconds pg_dump "${PG[@]}" -Fd -j "$JOBS" -f "$WORK/dump.d" "$SRC")
RESTORE=$(cd "$WORK" && seconds "$RUNNER" restore pipeline.toml --target "$OURS")
RESTORE1=$(cd "$WORK" && seconds "$RUNNER" restore serial.toml --target "$SERIAL")
psql "${PG[@]}" -XAtq -d postgres -c "CREATE DATABASE $THEIRS"
PGRESTORE=$(seconds pg_restore "${PG[@]}" -j "$JOBS" -d "$THEIRS" "$WORK/dump.d")
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

OURS_MB=$(du -sm "$WORK/repo" | cut -f1)
THEIRS_MB=$(du -sm "$WORK/dump.d" | cut -f1)
rate() { echo "scale=1; $DATA_MB / $1" | bc; }
echo "load average before the timings: $LOAD, after: $LOAD_AFTER"
printf '\n%-40s %9s %9s %10s\n' "step ($DATA_MB MB database)" seconds "MB/s" "stored MB"
printf '%-40s %9.1f %9s %10s\n' "runner run, jobs = $JOBS (zstd-3)" "$RUN" "$(rate "$RUN")" "$OURS_MB"
printf '%-40s %9.1f %9s %10s\n' "runner run, jobs = 1" "$RUN1" "$(rate "$RUN1")" "-"
printf '%-40s %9.1f %9s %10s\n' "pg_dump -Fd -j $JOBS (gzip 6)" "$DUMP" "$(rate "$DUMP")" "$THEIRS_MB"
printf '%-40s %9.1f %9s %10s\n' "runner restore, jobs = $JOBS" "$RESTORE" "$(rate "$RESTORE")" "-"
printf '%-40s %9.1f %9s %10s\n' "runner restore, jobs = 1" "$RESTORE1" "$(rate "$RESTORE1")" "-"
printf '%-40s %9.1f %9s %10s\n' "pg_restore -j $JOBS" "$PGRESTORE" "$(rate "$PGRESTORE")" "-"

# Same rows on both sides.
for t in pgbench_accounts pgbench_branches pgbench_tellers pgbench_history $(seq -f 'accounts_copy_%g' 1 "$COPIES"); do
    a=$(psql "${PG[@]}" -XAtq -d "$OURS" -c "SELECT count(*) FROM $t")
    b=$(psql "${PG[@]}" -XAtq -d "$THEIRS" -c "SELECT count(*) FROM $t")
    c=$(psql "${PG[@]}" -XAtq -d "$SERIAL" -c "SELECT count(*) FROM $t")
    [ "$a" = "$b" ] && [ "$a" = "$c" ] || { echo "row counts differ on $t: $a, $c vs $b"; exit 1; }
done
drop "$OURS"; drop "$THEIRS"; drop "$SERIAL"; drop "$SRC"
