#!/usr/bin/env bash
# Instructions per echo call, counted by valgrind's callgrind: the
# proxy (per-session and --shared) and the HTTP floor, each run twice
# under the same load (SESSIONS x CONNS connections of sequential calls),
# with SMALL and LARGE calls per connection; the difference divided by
# the difference in calls leaves out start-up and shutdown. Unlike the
# CPU-per-call rows of bench/run.sh, the count does not depend on how
# busy or how fast the machine is, so it can compare two builds on a
# noisy VM (run-to-run spread up to 1%, from how the load's timing
# batches reads and wakes under valgrind). See bench/README.md.
#
#   bench/callgrind.sh                      release build, then all three
#   bench/callgrind.sh --proxy other/mcp-proxy
#
# Needs valgrind and python3. Knobs: SMALL (50), LARGE (550), SESSIONS (2),
# CONNS (2); ACCEPT=sse asks for answers on SSE streams, as the SDKs do;
# ERA=modern makes the calls 2026-07-28 ones (the floor is left out:
# it speaks only 2025-11-25); RUNS picks runs ("floor per-session
# shared", all three by default). Takes about 3 minutes after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/release"
proxy="$target/mcp-proxy"
if [[ "${1:-}" == "--proxy" ]]; then proxy="$2"; fi
: "${SMALL:=50}" "${LARGE:=550}" "${SESSIONS:=2}" "${CONNS:=2}"
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed" >&2; exit 1; }
cargo build --release --bins --examples
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
    for _ in $(seq 300); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $1))" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "callgrind.sh: nothing listens on port $1" >&2
    return 1
}

# Total instructions of one run: `proxy|floor` MODE CALLS
count() {
    local kind=$1 mode=$2 calls=$3 out="$work/cg.$1.$2.$3" pid port
    if [[ $kind == proxy ]]; then
        port=$(free_port)
        local shared=()
        [[ $mode == shared ]] && shared=(--shared)
        valgrind --tool=callgrind --callgrind-out-file="$out" "$proxy" \
            --host 127.0.0.1 --port "$port" "${shared[@]}" -- "$target/examples/everything" \
            >/dev/null 2>"$work/log" &
        pid=$!
        wait_port "$port"
        python3 bench/callgrind_drive.py "$port" "$calls" "$SESSIONS" "$CONNS"
        kill -TERM "$pid"
        wait "$pid" || true
    else
        # The floor serves until its stdin closes and prints its port.
        mkfifo "$work/in"
        valgrind --tool=callgrind --callgrind-out-file="$out" "$target/examples/bench" --floor-server \
            <"$work/in" >"$work/port" 2>"$work/log" &
        pid=$!
        exec 3>"$work/in"
        for _ in $(seq 300); do [[ -s $work/port ]] && break; sleep 0.1; done
        port=$(grep -o '[0-9]*$' "$work/port" | head -1)
        python3 bench/callgrind_drive.py "$port" "$calls" "$SESSIONS" "$CONNS"
        exec 3>&-
        wait "$pid" || true
        rm -f "$work/in" "$work/port"
    fi
    sed -n 's/^summary: //p' "$out"
}

: "${RUNS:=floor per-session shared}"
[[ ${ERA:-} == modern ]] && RUNS="${RUNS//floor/}"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $proxy, answers on ${ACCEPT:-json}, ${ERA:-session-era} calls"
calls=$(( (LARGE - SMALL) * SESSIONS * CONNS ))
for run in $RUNS; do
    if [[ $run == floor ]]; then kind=floor mode=-; else kind=proxy mode=$run; fi
    small=$(count "$kind" "$mode" "$SMALL")
    large=$(count "$kind" "$mode" "$LARGE")
    label=$([[ $kind == floor ]] && echo "HTTP floor" || echo "proxy $mode")
    echo "$label: $(( (large - small) / calls )) instructions per echo call"
done
