#!/usr/bin/env bash
# Benchmark (not a test): runner's files pipeline against restic and the tar | zstd floor,
# on one >= 1 GiB mixed corpus, in the same run. Prints a table with MB/s and peak RSS, and
# how many times faster runner is than restic.
#
#   [ROUNDS=3] benches/files-vs-restic.sh [WORKDIR]   (default: a temporary directory;
#                                                      the table shows each tool's median)
#
# Needs: a release build of runner (built if missing), restic, zstd and GNU time (installed
# with apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${1:-$(mktemp -d /tmp/runner-bench.XXXXXX)}
mkdir -p "$WORK"
echo "workdir: $WORK"

for tool in restic zstd /usr/bin/time; do
    if ! command -v "$tool" >/dev/null; then
        pkg=$tool; [ "$tool" = /usr/bin/time ] && pkg=time
        apt-get install -y -qq "$pkg" >/dev/null
    fi
done
[ -x target/release/runner ] || cargo build --release
RUNNER=$ROOT/target/release/runner

CORPUS=$WORK/corpus
if [ ! -d "$CORPUS" ]; then
    echo "building the corpus..."
    mkdir -p "$CORPUS/text" "$CORPUS/binaries" "$CORPUS/random" "$CORPUS/small"
    # Text: source code and documentation from the Rust toolchain and the system (~300 MB).
    # (head closes the pipe early on purpose: the SIGPIPE upstream is expected.)
    { find "$(rustc --print sysroot)" /usr/share/doc /usr/include -type f \( -name '*.rs' -o -name '*.h' -o -name '*.md' -o -name '*.html' -o -name 'copyright' \) 2>/dev/null \
        | while read -r f; do cat "$f"; done | head -c 300M > "$CORPUS/text/corpus.txt"; } || true
    # Binaries: shared libraries and executables (~300 MB).
    { find /usr/lib /usr/bin /root/.rustup -type f -size +100k 2>/dev/null | while read -r f; do
        cp "$f" "$CORPUS/binaries/$(echo "$f" | tr / _)" 2>/dev/null || true
        [ "$(du -sm "$CORPUS/binaries" | cut -f1)" -ge 300 ] && break
    done; } || true
    # Incompressible: 300 MB of random bytes.
    head -c 300M /dev/urandom > "$CORPUS/random/random.bin"
    # Many small files: 20 000 files of 1-16 KiB.
    python3 - "$CORPUS/small" <<'PY'
import os, random, sys
random.seed(1)
root = sys.argv[1]
words = open('/usr/share/dict/words').read().split() if os.path.exists('/usr/share/dict/words') else [f"word{i}" for i in range(5000)]
for i in range(20000):
    d = os.path.join(root, f"{i % 200:03d}")
    os.makedirs(d, exist_ok=True)
    n = random.randint(1024, 16384)
    text = " ".join(random.choice(words) for _ in range(n // 6))[:n]
    open(os.path.join(d, f"f{i:05d}.txt"), "w").write(text)
PY
fi
SIZE=$(du -sb "$CORPUS" | cut -f1)
echo "corpus: $((SIZE / 1048576)) MiB"

# Runs a command with cold caches; appends "name seconds peak-RSS-KiB" to the results.
RESULTS=$WORK/results.txt
: > "$RESULTS"
measure() {
    local name=$1; shift
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    /usr/bin/time -f "%e %M" -o "$WORK/time.out" "$@" > "$WORK/$name.log" 2>&1
    echo "$name $(cat "$WORK/time.out")" >> "$RESULTS"
    echo "  $name: $(awk '{printf "%.1fs, %d MiB peak", $1, $2/1024}' "$WORK/time.out")"
}

export RUNNER_PASSPHRASE=bench-passphrase RESTIC_PASSWORD=bench-passphrase RUNNER_CACHE_DIR=$WORK/cache
cat > "$WORK/bench.toml" <<TOML
[repository]
passphrase = "\${env:RUNNER_PASSPHRASE}"
[source]
type = "files"
paths = ["corpus"]
[[transform]]
type = "checksum"
[[transform]]
type = "zstd"
level = 3
[[transform]]
type = "aes-gcm"
[sink]
type = "local"
path = "runner-repo"
TOML
"$RUNNER" plugins >/dev/null   # fill the compile cache: measure the data path, not Cranelift

# This machine's disk and CPU vary from run to run: each tool runs ROUNDS times, every
# round from empty repositories and targets, and the table shows the median.
ROUNDS=${ROUNDS:-3}
for round in $(seq "$ROUNDS"); do
    echo "round $round of $ROUNDS"
    rm -rf "$WORK/runner-repo" "$WORK/restic-repo" "$WORK/runner-restore" "$WORK/restic-restore" "$WORK/tar.zst"
    restic init --repo "$WORK/restic-repo" >/dev/null
    measure runner-backup "$RUNNER" run "$WORK/bench.toml"
    measure restic-backup restic --repo "$WORK/restic-repo" backup --no-cache "$CORPUS"
    measure tar-zstd sh -c "tar -C '$WORK' -cf - corpus | zstd -3 -T1 -q -o '$WORK/tar.zst'"
    measure runner-restore "$RUNNER" restore "$WORK/bench.toml" --target "$WORK/runner-restore"
    measure restic-restore restic --repo "$WORK/restic-repo" restore latest --no-cache --target "$WORK/restic-restore"
done

runner_stored=$(du -sb "$WORK/runner-repo" | cut -f1)
restic_stored=$(du -sb "$WORK/restic-repo" | cut -f1)
tar_stored=$(stat -c %s "$WORK/tar.zst")
# median seconds and highest peak of one tool over the rounds
median() { awk -v n="$1" '$1 == n { print $2 }' "$RESULTS" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
peak() { awk -v n="$1" '$1 == n && $3 > max { max = $3 } END { print max }' "$RESULTS"; }
echo
printf "%-16s %9s %9s %11s %12s   (median of %d rounds)\n" tool seconds "MB/s" "peak MiB" "stored MiB" "$ROUNDS"
for name in runner-backup restic-backup tar-zstd runner-restore restic-restore; do
    case $name in runner-backup) stored=$runner_stored;; restic-backup) stored=$restic_stored;; tar-zstd) stored=$tar_stored;; *) stored=0;; esac
    awk -v n="$name" -v s="$(median "$name")" -v k="$(peak "$name")" -v size="$SIZE" -v st="$stored" \
        'BEGIN { printf "%-16s %9.1f %9.0f %11.0f %12s\n", n, s, size/1e6/s, k/1024, (st > 0 ? sprintf("%.0f", st/1048576) : "-") }'
done
awk -v rb="$(median runner-backup)" -v qb="$(median restic-backup)" -v rr="$(median runner-restore)" -v qr="$(median restic-restore)" \
    'BEGIN { printf "\nrunner vs restic: backup %.2fx, restore %.2fx (above 1: runner is faster)\n", qb/rb, qr/rr }'
diff -r "$CORPUS" "$WORK/runner-restore/corpus" >/dev/null && echo "runner restore: identical to the corpus" || echo "runner restore: DIFFERS"
