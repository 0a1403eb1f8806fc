#!/usr/bin/env bash
# User and system CPU time per proxied request, the gateway against HAProxy doing the same
# stickiness, read from /proc/PID/stat around a wrk run (clock ticks, so runs of several seconds).
# Unlike requests/s this shows where a proxy's own cost goes (user space vs the kernel), which
# matters on a 2-core machine where wrk and the backends share the cores with the proxy.
#
#   scripts/cpu-per-request.sh                          # header:X-User, 2 rounds of 8 s
#   STRATEGY=ip ROUNDS=3 DURATION=10 scripts/cpu-per-request.sh   # or cookie
set -euo pipefail
cd "$(dirname "$0")/.."

STRATEGY=${STRATEGY:-header}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-8}
PROXY=127.0.0.1:19390
WORK=$(mktemp -d /tmp/cpu-per-request.XXXXXX)

need() { command -v "$1" >/dev/null 2>&1; }
if ! need haproxy || ! need wrk || ! need curl; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy wrk curl >/dev/null
fi
cargo build -q --release --example gateway --example backend

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
for i in 1 2 3; do
    target/release/examples/backend --listen "127.0.0.1:1930$i" --id "b$i" --threads 1 &
    PIDS+=($!)
done

cat > "$WORK/users.lua" <<'LUA'
local counter = 0
request = function()
    counter = counter + 1
    return wrk.format("GET", "/", { ["X-User"] = "user-" .. (counter % 10000) })
end
LUA
case $STRATEGY in
    header) balance=$'    balance hdr(X-User)\n    hash-type consistent'; gw=(--strategy header:X-User) ;;
    ip) balance=$'    balance source\n    hash-type consistent'; gw=(--strategy ip-ring) ;;
    cookie) balance=$'    balance roundrobin\n    cookie SRV insert indirect nocache'
        gw=(--strategy cookie-pinned --cookie-name srv --cookie-indirect --cookie-key-file "$WORK/cookie.key") ;;
    *) echo "STRATEGY must be header, ip or cookie" >&2; exit 2 ;;
esac
cat > "$WORK/haproxy.cfg" <<CFG
global
    nbthread 1
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    option forwardfor
frontend fe
    bind $PROXY
    default_backend be
backend be
$balance
    server a 127.0.0.1:19301 cookie a
    server b 127.0.0.1:19302 cookie b
    server c 127.0.0.1:19303 cookie c
CFG

# Prints "requests user_ticks system_ticks" for one proxy under load.
run() {
    "$@" >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 1 100); do curl -s -o /dev/null "http://$PROXY/" && break; sleep 0.1; done
    # The header strategy gets many users from a script; with the cookie every request carries
    # the cookie a client has after its first response (a script's headers would replace it).
    local extra=()
    case $STRATEGY in
        header) extra=(-s "$WORK/users.lua") ;;
        cookie) extra=(-H "Cookie: $(curl -s -D - -o /dev/null "http://$PROXY/" |
            awk 'tolower($1) == "set-cookie:" { split($2, kv, ";"); print kv[1]; exit }')") ;;
    esac
    local before after requests
    before=$(awk '{print $14, $15}' "/proc/$pid/stat")
    requests=$(wrk -t1 -c32 -d"${DURATION}s" "${extra[@]}" "http://$PROXY/" | awk '/requests in/ {print $1}')
    after=$(awk '{print $14, $15}' "/proc/$pid/stat")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "$requests $before $after" | awk '{print $1, $4 - $2, $5 - $3}'
}
per_request() { # requests user sys -> "user + sys µs"
    echo "$1 $2 $3 $(getconf CLK_TCK)" | awk '{printf "%.2f + %.2f us", $2 * 1e6 / $4 / $1, $3 * 1e6 / $4 / $1}'
}

gateway=(target/release/examples/gateway --listen "$PROXY" --threads 1 "${gw[@]}"
    --forwarded-headers x-forwarded-for --backend a=http://127.0.0.1:19301
    --backend b=http://127.0.0.1:19302 --backend c=http://127.0.0.1:19303)
for round in $(seq 1 "$ROUNDS"); do
    g=$(run "${gateway[@]}")
    h=$(run haproxy -f "$WORK/haproxy.cfg" -db)
    # shellcheck disable=SC2086
    echo "$STRATEGY round $round, user + system CPU per request: gateway $(per_request $g) ($(echo "$g" | cut -d' ' -f1) requests), haproxy $(per_request $h) ($(echo "$h" | cut -d' ' -f1) requests)"
done
