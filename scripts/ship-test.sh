#!/usr/bin/env bash
# Deployment tests: the container image, compose, Kubernetes manifests and
# nginx in front of several replicas, for real. scripts/test.sh runs it as
# one of its steps; it also runs alone:
#
#   scripts/ship-test.sh [image] [compose] [k8s] [nginx]    (default: all four)
#
# What it installs, idempotently (as root, like CI):
#   Debian: podman, runc, musl-tools (musl-gcc for aws-lc-sys), nginx-light
#   rustup: the x86_64-unknown-linux-musl target
#   PyPI:   podman-compose and kubernetes-validate, pinned in
#           scripts/ship/requirements.txt, into .ship/venv
# Podman reads target/ship/containers.conf (through CONTAINERS_CONF):
# runc, because crun rejects this kernel's hybrid cgroups, and fixed
# ulimits, because the runtime cannot raise them here.
#
# No image registry is reachable from the build machines, so the image is
# built with --build-arg BINARIES=host from static binaries cargo builds
# here (the final scratch stage is the same as for an in-image build), and
# nginx runs from the host's nginx-light rather than in a container.
#
# Prints PASS/FAIL/SKIP lines and ends with "N passed, N failed"; exits
# non-zero on any failure. Every container, stack and process it starts is
# removed on exit.

set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
WORK="$TARGET_DIR/ship"
MUSL=x86_64-unknown-linux-musl
IMAGE=localhost/mcp-sidecar:ship-test
CONTAINER=mcp-sidecar-ship-test
PROJECT=mcp-sidecar-ship-test
MAX_IMAGE_BYTES=$((15 * 1000 * 1000))
KEY=ship-test-key-0123456789abcdef
PASSED=0
FAILED=0
SKIPPED=0
START=$(date +%s)
mkdir -p "$WORK"

pass() { PASSED=$((PASSED + 1)); echo "PASS $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $*"; }
skip() { SKIPPED=$((SKIPPED + 1)); echo "SKIP $*"; }
step() { printf '\n==> %s\n' "$*"; }
summary() {
  local line="$PASSED passed, $FAILED failed"
  if [ "$SKIPPED" -gt 0 ]; then line="$line, $SKIPPED skipped"; fi
  printf '\n(ship tests: %ss)\n%s\n' "$(($(date +%s) - START))" "$line"
}

cleanup() {
  if command -v podman >/dev/null 2>&1; then
    podman rm -f -t 2 "$CONTAINER" >/dev/null 2>&1 || true
    if [ -x "$ROOT/.ship/venv/bin/podman-compose" ] && [ -f "$WORK/compose.env" ]; then
      "$ROOT/.ship/venv/bin/podman-compose" -p "$PROJECT" -f compose.yaml --env-file "$WORK/compose.env" \
        down -t 2 >/dev/null 2>&1 || true
    fi
  fi
  if [ -n "${FAKE_PID:-}" ]; then kill "$FAKE_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

want() {
  local w
  for w in "$@"; do
    case " $SECTIONS " in *" $w "*) return 0 ;; esac
  done
  return 1
}
SECTIONS="${*:-image compose k8s nginx}"

# ------------------------------------------------------------------ installs
step "installs"
need_debs=()
for pkg in podman runc musl-tools nginx-light; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need_debs+=("$pkg")
done
if [ "${#need_debs[@]}" -gt 0 ]; then
  echo "installing Debian packages: ${need_debs[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    fail "install: ${need_debs[*]} are missing and this is not root (apt-get install ${need_debs[*]})"
    summary
    exit 1
  fi
  # policy-rc.d-less machines would start nginx as a service: nothing here
  # runs it as one, so stop it from starting.
  export DEBIAN_FRONTEND=noninteractive RUNLEVEL=1
  if ! { timeout 600 apt-get update -qq && timeout 900 apt-get install -y -qq --no-install-recommends "${need_debs[@]}"; } >"$WORK/apt.log" 2>&1; then
    tail -20 "$WORK/apt.log"
    fail "install: apt-get install ${need_debs[*]}"
    summary
    exit 1
  fi
else
  echo "Debian packages: up to date"
fi
if ! rustup target list --installed 2>/dev/null | grep -qx "$MUSL"; then
  timeout 600 rustup target add "$MUSL" || { fail "install: rustup target add $MUSL"; summary; exit 1; }
fi
VENV="$ROOT/.ship/venv"
STAMP="$VENV/.installed-from"
wanted="$(sha256sum scripts/ship/requirements.txt | cut -d' ' -f1) $(python3 --version 2>&1)"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$wanted" ]; then
  echo "Python packages: up to date"
else
  rm -rf "$VENV"
  python3 -m venv "$VENV" && timeout 900 "$VENV/bin/pip" install -q --disable-pip-version-check \
    -r scripts/ship/requirements.txt || { fail "install: pip install -r scripts/ship/requirements.txt"; summary; exit 1; }
  echo "$wanted" >"$STAMP"
fi
export CONTAINERS_CONF="$WORK/containers.conf"
cat >"$CONTAINERS_CONF" <<'EOF'
# Written by scripts/ship-test.sh.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
# crun rejects this kernel's hybrid cgroup layout; runc works.
runtime = "runc"
EOF
pass "install: podman $(podman --version | cut -d' ' -f3), runc, musl target, podman-compose, kubernetes-validate"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# mcp_call BASE [KEY]: initialize, notifications/initialized, tools/call echo.
# Prints the echoed text.
mcp_call() {
  local base=$1 key=${2:-} hdr="$WORK/headers" auth=()
  [ -n "$key" ] && auth=(-H "authorization: Bearer $key")
  curl -fsS --max-time 20 -D "$hdr" -o /dev/null "${auth[@]}" \
    -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
    --data '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"ship-test","version":"1"}}}' \
    "$base/mcp" || return 1
  local sid
  sid=$(tr -d '\r' <"$hdr" | sed -n 's/^[Mm]cp-[Ss]ession-[Ii]d: //p')
  [ -n "$sid" ] || return 1
  local h=(-H 'content-type: application/json' -H 'accept: application/json' -H "mcp-session-id: $sid" -H 'mcp-protocol-version: 2025-06-18')
  curl -fsS --max-time 20 -o /dev/null "${auth[@]}" "${h[@]}" \
    --data '{"jsonrpc":"2.0","method":"notifications/initialized"}' "$base/mcp" || return 1
  curl -fsS --max-time 60 "${auth[@]}" "${h[@]}" --data "$3" "$base/mcp"
}

# -------------------------------------------------------------- static build
if want image compose; then
  step "static binaries (cargo build --profile image --target $MUSL)"
  t0=$(date +%s)
  # Two invocations: the example turns on the dev-dependencies, whose features
  # (reqwest's aws-lc-rs) would otherwise be unified into coda-mcp.
  if cargo build --profile image --locked --target "$MUSL" --workspace --bins &&
    cargo build --profile image --locked --target "$MUSL" --example everything; then
    BUILD_SECS=$(($(date +%s) - t0))
    REL="$TARGET_DIR/$MUSL/image"
    static=1
    for b in "$REL/mcp-proxy" "$REL/coda-mcp" "$REL/examples/everything"; do
      if readelf -lW "$b" 2>/dev/null | grep -q 'Requesting program interpreter'; then
        static=0
        echo "$b is dynamically linked"
      fi
    done
    if [ "$static" = 1 ]; then
      pass "static: mcp-proxy, coda-mcp and everything are static musl binaries (built in ${BUILD_SECS}s)"
    else
      fail "static: a binary has a program interpreter"
    fi
    rm -rf "$WORK/context"
    mkdir -p "$WORK/context/dist"
    cp "$REL/mcp-proxy" "$REL/coda-mcp" "$REL/examples/everything" "$WORK/context/dist/"
    cp /etc/ssl/certs/ca-certificates.crt "$WORK/context/dist/"
  else
    fail "static: cargo build --target $MUSL"
    SECTIONS=$(sed 's/image//; s/compose//' <<<"$SECTIONS")
  fi
fi

# --------------------------------------------------------------------- image
if want image; then
  step "image: podman build --build-arg BINARIES=host"
  if timeout 300 podman build -q --format docker --build-arg BINARIES=host \
      -f Dockerfile -t "$IMAGE" "$WORK/context" >"$WORK/build.log" 2>&1; then
    pass "image: builds FROM scratch with host-built binaries"
  else
    tail -20 "$WORK/build.log"
    fail "image: podman build"
  fi
  size=$(podman image inspect --format '{{.Size}}' "$IMAGE" 2>/dev/null || echo 0)
  if [ "$size" -gt 0 ] && [ "$size" -le "$MAX_IMAGE_BYTES" ]; then
    pass "image: $size bytes ($(awk "BEGIN{printf \"%.1f\", $size/1000000}") MB) <= 15 MB"
  else
    fail "image: $size bytes, over 15 MB"
  fi
  user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE" 2>/dev/null)
  [ "$user" = "65532:65532" ] && pass "image: runs as numeric user $user" || fail "image: user is '$user'"

  step "image: run read-only, non-root, no capabilities"
  PORT=$(free_port)
  podman rm -f "$CONTAINER" >/dev/null 2>&1
  if podman run -d --name "$CONTAINER" --read-only --cap-drop ALL \
      --security-opt no-new-privileges --user 65532:65532 \
      -p "127.0.0.1:$PORT:8080" -e MCP_PROXY_API_KEY="$KEY" -e MCP_PROXY_SHUTDOWN_GRACE=2s \
      "$IMAGE" >/dev/null 2>"$WORK/run.err"; then
    ok=0
    for _ in $(seq 1 100); do
      curl -fsS --max-time 2 "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && { ok=1; break; }
      sleep 0.2
    done
    if [ "$ok" = 1 ]; then
      pass "image: /health answers through the published port 127.0.0.1:$PORT"
    else
      podman logs "$CONTAINER" 2>&1 | tail -10
      fail "image: /health did not answer within 20 s"
    fi
    out=$(mcp_call "http://127.0.0.1:$PORT" "$KEY" \
      '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello from the image"}}}' 2>&1)
    if grep -q 'hello from the image' <<<"$out"; then
      pass "image: an MCP tools/call through the published port"
    else
      fail "image: tools/call: $out"
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H 'content-type: application/json' \
      --data '{"jsonrpc":"2.0","id":1,"method":"ping"}' "http://127.0.0.1:$PORT/mcp")
    [ "$code" = 401 ] && pass "image: no key, 401" || fail "image: no key gave $code"
    pid=$(podman inspect --format '{{.State.Pid}}' "$CONTAINER")
    uid=$(awk '/^Uid:/{print $2}' "/proc/$pid/status" 2>/dev/null)
    capeff=$(awk '/^CapEff:/{print $2}' "/proc/$pid/status" 2>/dev/null)
    nnp=$(awk '/^NoNewPrivs:/{print $2}' "/proc/$pid/status" 2>/dev/null)
    if [ "$uid" = 65532 ] && [ "$capeff" = 0000000000000000 ] && [ "$nnp" = 1 ]; then
      pass "image: PID 1 runs as uid 65532 with no capabilities and no-new-privileges"
    else
      fail "image: PID 1 uid=$uid CapEff=$capeff NoNewPrivs=$nnp"
    fi
    ro=$(podman inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$CONTAINER")
    [ "$ro" = true ] && pass "image: root filesystem is read-only" || fail "image: ReadonlyRootfs=$ro"
    if timeout 30 podman healthcheck run "$CONTAINER" >/dev/null 2>&1; then
      pass "image: HEALTHCHECK (mcp-proxy healthcheck) reports healthy"
    else
      fail "image: podman healthcheck run"
    fi
    t0=$(date +%s%N)
    podman stop -t 10 "$CONTAINER" >/dev/null 2>&1
    ms=$((($(date +%s%N) - t0) / 1000000))
    rc=$(podman inspect --format '{{.State.ExitCode}}' "$CONTAINER")
    if [ "$rc" = 0 ] && [ "$ms" -lt 10000 ]; then
      pass "image: SIGTERM stops it in ${ms} ms with exit code 0 (grace 10 s)"
    else
      podman logs "$CONTAINER" 2>&1 | tail -5
      fail "image: stop took ${ms} ms, exit code $rc"
    fi
    podman rm -f "$CONTAINER" >/dev/null 2>&1
  else
    cat "$WORK/run.err"
    fail "image: podman run"
  fi
fi

# ------------------------------------------------------------------- compose
if want compose; then
  step "compose: podman-compose up (coda service) against a fake Coda"
  PC=("$VENV/bin/podman-compose" -p "$PROJECT" -f compose.yaml --env-file "$WORK/compose.env")
  CPORT=$(free_port)
  FAKE_PORT=18080
  # A non-default MCP_PROXY_PORT: the health check must follow it.
  cat >"$WORK/compose.env" <<EOF
MCP_IMAGE=$IMAGE
MCP_PROXY_API_KEY=$KEY
CODA_API_TOKEN=test-token-5f0c
CODA_API_BASE_URL=http://127.0.0.1:$FAKE_PORT/apis/v1
MCP_PUBLISH_PORT=$CPORT
MCP_PROXY_PORT=9090
MCP_PROXY_SHUTDOWN_GRACE=2s
EOF
  # --workspace, as scripts/test.sh builds it: with -p coda-mcp alone cargo
  # unifies features anew and rebuilds 88 crates beside the ones it has.
  if ! cargo build --locked --workspace --example fake_coda >"$WORK/fake-build.log" 2>&1; then
    tail -20 "$WORK/fake-build.log"
    fail "compose: cargo build --workspace --example fake_coda"
  elif ! env -i PATH="$PATH" HOME="${HOME:-/root}" "${PC[@]}" config >/dev/null 2>"$WORK/compose-config.err"; then
    tail -5 "$WORK/compose-config.err"
    fail "compose: config of the default service asks for more than .env gives"
  elif ! timeout 300 "${PC[@]}" up -d --no-build coda >"$WORK/compose-up.log" 2>&1; then
    tail -20 "$WORK/compose-up.log"
    fail "compose: up -d coda"
  else
    pass "compose: up -d starts the default service; the nginx profile asks for no variable"
    cname=$(podman ps --filter "label=io.podman.compose.project=$PROJECT" --filter "label=com.docker.compose.service=coda" --format '{{.Names}}' | head -1)
    cpid=$(podman inspect --format '{{.State.Pid}}' "$cname" 2>/dev/null)
    # The fake Coda runs in the container's network namespace (its loopback),
    # so no traffic leaves the machine's own namespaces.
    nsenter -t "$cpid" -n "$TARGET_DIR/debug/examples/fake_coda" --port "$FAKE_PORT" 2>"$WORK/fake-coda.log" &
    FAKE_PID=$!
    ok=0
    for _ in $(seq 1 100); do
      curl -fsS --max-time 2 "http://127.0.0.1:$CPORT/health" >/dev/null 2>&1 && { ok=1; break; }
      sleep 0.2
    done
    [ "$ok" = 1 ] && pass "compose: /health on the loopback-published port $CPORT" || fail "compose: /health did not answer"
    out=$(mcp_call "http://127.0.0.1:$CPORT" "$KEY" \
      '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"coda_whoami","arguments":{}}}' 2>&1)
    if grep -q 'Ada Lovelace' <<<"$out"; then
      pass "compose: tools/call coda_whoami through mcp-proxy and coda-mcp reaches the fake Coda"
    else
      podman logs "$cname" 2>&1 | tail -10
      fail "compose: coda_whoami: $(head -c 300 <<<"$out")"
    fi
    # podman-compose runs services in a pod: the port belongs to the pod, so ask `podman port`.
    settings="$(podman inspect --format '{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.RestartPolicy.Name}} {{.Config.User}}' "$cname") $(podman port "$cname" 2>/dev/null | sed -n 's/.*-> \([0-9.]*\):.*/\1/p' | sort -u | tr '\n' ' ' | sed 's/ $//')"
    echo "read-only, cap drop, restart, user, published on: $settings"
    if [ "$settings" = "true unless-stopped 65532:65532 127.0.0.1" ]; then
      pass "compose: read-only, restart unless-stopped, uid 65532, published on loopback only"
    else
      fail "compose: container settings: $settings"
    fi
    capeff=$(awk '/^CapEff:/{print $2}' "/proc/$cpid/status" 2>/dev/null)
    [ "$capeff" = 0000000000000000 ] && pass "compose: no capabilities" || fail "compose: CapEff=$capeff"
    if timeout 30 podman healthcheck run "$cname" >/dev/null 2>&1; then
      pass "compose: healthcheck (mcp-proxy healthcheck) healthy on MCP_PROXY_PORT=9090"
    else
      fail "compose: podman healthcheck run $cname"
    fi
    if timeout 120 "${PC[@]}" down -t 10 >"$WORK/compose-down.log" 2>&1 \
        && [ -z "$(podman ps -a --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}')" ]; then
      pass "compose: down removes the stack"
    else
      tail -10 "$WORK/compose-down.log"
      fail "compose: down"
    fi
    kill "$FAKE_PID" 2>/dev/null
    wait "$FAKE_PID" 2>/dev/null
    FAKE_PID=
  fi
fi

# ----------------------------------------------------------------------- k8s
if want k8s; then
  step "k8s: kubernetes-validate --strict (offline schemas)"
  for f in examples/k8s/*.yaml; do
    case "$f" in
      *httproute.yaml)
        # Gateway API kinds are CRDs: kubernetes-validate has no schema for them.
        skip "k8s: $f (Gateway API CRD, no offline schema)"
        continue
        ;;
    esac
    if out=$("$VENV/bin/kubernetes-validate" --strict -k 1.30.0 "$f" 2>&1) && ! grep -q '^ERROR\|^WARN' <<<"$out"; then
      pass "k8s: $f"
    else
      echo "$out"
      fail "k8s: $f"
    fi
  done
  bad=0
  for f in examples/clients/*.json; do
    python3 -m json.tool "$f" >/dev/null 2>&1 || { echo "not JSON: $f"; bad=1; }
  done
  [ "$bad" = 0 ] && pass "k8s: the client configurations in examples/clients are valid JSON" || fail "examples/clients"
fi

# --------------------------------------------------------------------- nginx
if want nginx; then
  step "nginx: three replicas behind nginx-light (tests/nginx.rs)"
  # --workspace for the same reason as fake_coda above (37 crates otherwise).
  if timeout 600 cargo test --locked --workspace --test nginx -- --ignored --test-threads 1 >"$WORK/nginx.log" 2>&1; then
    pass "nginx: sessions stick under load, a stopped replica's sessions get 404 and re-initialize elsewhere, 2026-07-28 spreads, legacy SSE sticks"
  else
    grep -E 'panicked|assert|Error' "$WORK/nginx.log" | head -10
    fail "nginx: cargo test --workspace --test nginx -- --ignored (log: $WORK/nginx.log)"
  fi
fi

summary
[ "$FAILED" -eq 0 ]
