#!/usr/bin/env bash
# Benchmark (not a test): documents per second for `runner run` (export) and `runner restore`
# (bulk load, replace mode) of the elasticsearch source against the in-process emulator, next
# to the emulator's own cost for the same pages and bulk requests, and the bytes stored per
# document after zstd-3.
#
#   benches/elasticsearch.sh [SCALE]     (SCALE × 3,333 documents in 6 indices; default 30 ≈ 100k)
set -euo pipefail
cd "$(dirname "$0")/.."
ES_BENCH_SCALE=${1:-30} cargo test --release --test cli -- elasticsearch::bench_export_and_restore \
    --ignored --nocapture --test-threads 1 2>&1 | sed -n 's/.*\(elasticsearch bench:\)/\1/p; /^  /p' 
