#!/usr/bin/env bash
# coda-mcp benchmark: tools/call round trips through coda-mcp (stdio, and
# through mcp-proxy) next to direct HTTP calls to the fake Coda, plus binary
# size and RSS. See crates/coda-mcp/examples/coda_bench.rs.
#
#   bench/coda.sh                 2000 calls per path, 3 repeats
#   bench/coda.sh --calls 500     extra flags go to the bench binary
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins --example coda_bench
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
exec "${CARGO_TARGET_DIR:-target}/release/examples/coda_bench" "$@"
