#!/usr/bin/env bash
# Builds the release binaries, then measures mcp-proxy against direct stdio
# with examples/everything as the child. See bench/README.md.
#
#   bench/run.sh                  full run (~3 minutes after the build)
#   BENCH_QUICK=1 bench/run.sh    quick run (< 2 minutes after the build)
#   bench/run.sh --direct-only    extra flags go to the bench binary
#
# Knobs (environment): BENCH_DURATION_SECS (seconds per throughput run),
# BENCH_REPEATS, BENCH_LATENCY_CALLS, BENCH_SESSIONS, BENCH_LARGE_BYTES.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -n "${BENCH_QUICK:-}" ]]; then
    : "${BENCH_DURATION_SECS:=2}" "${BENCH_LATENCY_CALLS:=1000}"
fi
: "${BENCH_DURATION_SECS:=5}" "${BENCH_REPEATS:=3}" "${BENCH_LATENCY_CALLS:=2000}"
: "${BENCH_SESSIONS:=100}" "${BENCH_LARGE_BYTES:=8388608}"

cargo build --release --bins --examples

echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)," \
    "$(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
exec target/release/examples/bench \
    --duration-secs "$BENCH_DURATION_SECS" \
    --repeats "$BENCH_REPEATS" \
    --latency-calls "$BENCH_LATENCY_CALLS" \
    --sessions "$BENCH_SESSIONS" \
    --large-bytes "$BENCH_LARGE_BYTES" \
    "$@"
