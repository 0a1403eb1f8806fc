#!/usr/bin/env bash
# User-space instructions per request of examples/overhead.rs, the bare axum router against
# `Sticky` over three copies of it, counted by callgrind (deterministic, unlike requests/s on a
# shared machine: it decides changes to the in-process cost while other work runs). wrk loads each
# mode for DURATION seconds and the total is divided by the requests served; startup (well under a
# million instructions, against tens of thousands per request times the requests) is left in.
#
#   scripts/instructions-overhead.sh          # prints both, the difference and the ratio
#   KEEP=dir scripts/instructions-overhead.sh # also keeps the callgrind files in dir
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
# Not 19101-19103 or 19180: scripts/bench-e2e.sh and scripts/instructions.sh use those.
ADDR=${ADDR:-127.0.0.1:19280}
WORK=${KEEP:-$(mktemp -d /tmp/instructions-overhead.XXXXXX)}
mkdir -p "$WORK"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need valgrind || ! need curl || ! need bc; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk valgrind curl bc >/dev/null
fi
cargo build -q --release --example overhead

PID=
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

wait_up() {
    for _ in $(seq 1 150); do curl -s -o /dev/null "http://$ADDR/" && return 0; sleep 0.2; done
    echo "nothing answers on $ADDR" >&2
    return 1
}

# $1 = mode (bare|sticky); prints instructions per request.
count() {
    local mode=$1
    valgrind --tool=callgrind --callgrind-out-file="$WORK/$mode.out" \
        target/release/examples/overhead --listen "$ADDR" --mode "$mode" --threads 1 >/dev/null 2>&1 &
    PID=$!
    wait_up
    wrk -t1 -c8 -d"${DURATION}s" "http://$ADDR/" > "$WORK/$mode.wrk"
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=
    local total requests
    total=$(grep -h '^summary:' "$WORK/$mode.out"* | head -1 | awk '{print $2}')
    requests=$(awk '/requests in/ {print $1}' "$WORK/$mode.wrk")
    echo $((total / requests))
}

bare=$(count bare)
sticky=$(count sticky)
echo "instructions per request (overhead example): bare $bare, sticky $sticky, difference $((sticky - bare)), ratio $(echo "$sticky / $bare" | bc -l | cut -c1-5)"
