#!/usr/bin/env bash
# User-space instructions per proxied request, the gateway against HAProxy, counted by callgrind
# (deterministic, unlike requests/s on a shared machine). Same three backends and the same
# stickiness with X-Forwarded-For as scripts/bench-e2e.sh; a wrk load runs for DURATION seconds
# and the total is divided by the requests served. HAProxy's own startup (parsing its
# configuration, about 236 million instructions) is measured without load and subtracted; the
# gateway's is under a million and left in.
#
#   scripts/instructions.sh                     # header:X-User (default)
#   STRATEGY=cookie scripts/instructions.sh     # cookie-pinned vs cookie SRV insert indirect
#   STRATEGY=ip scripts/instructions.sh         # ip-ring vs balance source + consistent
#   GATEWAY_ARGS="--request-timeout none" scripts/instructions.sh   # extra gateway flags
#
# callgrind cannot see SHA-NI, so the cookie strategy's HMAC counts as about 7,000 instructions
# more than it costs natively.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-8}
STRATEGY=${STRATEGY:-header}
PROXY=127.0.0.1:19180
WORK=$(mktemp -d /tmp/instructions.XXXXXX)

need() { command -v "$1" >/dev/null 2>&1; }
if ! need haproxy || ! need wrk || ! need valgrind || ! need curl || ! need bc; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy wrk valgrind curl bc >/dev/null
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
    target/release/examples/backend --listen "127.0.0.1:1910$i" --id "b$i" --threads 1 &
    PIDS+=($!)
done

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
BALANCE
    server a 127.0.0.1:19101 cookie a
    server b 127.0.0.1:19102 cookie b
    server c 127.0.0.1:19103 cookie c
CFG
case $STRATEGY in
    header) balance="    balance hdr(X-User)\n    hash-type consistent"; gw_strategy=(--strategy header:X-User) ;;
    cookie) balance="    balance roundrobin\n    cookie SRV insert indirect nocache"
        gw_strategy=(--strategy cookie-pinned --cookie-name srv --cookie-indirect --cookie-key-file "$WORK/cookie.key") ;;
    ip) balance="    balance source\n    hash-type consistent"; gw_strategy=(--strategy ip-ring) ;;
    *) echo "STRATEGY must be header, cookie or ip" >&2; exit 2 ;;
esac
sed -i "s/^BALANCE\$/$balance/" "$WORK/haproxy.cfg"

cat > "$WORK/users.lua" <<'LUA'
local counter = 0
request = function()
    counter = counter + 1
    return wrk.format("GET", "/", { ["X-User"] = "user-" .. (counter % 10000) })
end
LUA

wait_up() {
    for _ in $(seq 1 150); do curl -s -o /dev/null "http://$PROXY/" && return 0; sleep 0.2; done
    echo "nothing answers on $PROXY" >&2
    return 1
}

# $1 = label, $2 = load (yes|no), rest = command; prints the instruction total.
count() {
    local label=$1 load=$2; shift 2
    valgrind --tool=callgrind --callgrind-out-file="$WORK/$label.out" "$@" >/dev/null 2>&1 &
    local pid=$!
    wait_up
    if [ "$load" = yes ]; then
        # The header strategy gets many users from a script; with the cookie, every request
        # carries the cookie a client has after its first response (a wrk script's headers would
        # replace it).
        local extra=(-s "$WORK/users.lua")
        case $STRATEGY in
            cookie) extra=(-H "Cookie: $(curl -s -D - -o /dev/null "http://$PROXY/" |
                awk 'tolower($1) == "set-cookie:" { split($2, kv, ";"); print kv[1]; exit }')") ;;
            ip) extra=() ;;
        esac
        wrk -t1 -c8 -d"${DURATION}s" "${extra[@]}" "http://$PROXY/" > "$WORK/$label.wrk"
    fi
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    grep -h '^summary:' "$WORK/$label.out"* | head -1 | awk '{print $2}'
}
requests() { awk '/requests in/ {print $1}' "$WORK/$1.wrk"; }

# shellcheck disable=SC2206
extra_args=(${GATEWAY_ARGS:-})
gateway=(target/release/examples/gateway --listen "$PROXY" --threads 1 "${gw_strategy[@]}" "${extra_args[@]}"
    --forwarded-headers x-forwarded-for --backend a=http://127.0.0.1:19101
    --backend b=http://127.0.0.1:19102 --backend c=http://127.0.0.1:19103)
gw_total=$(count gateway yes "${gateway[@]}")
gw_per=$((gw_total / $(requests gateway)))

hap_startup=$(count haproxy-idle no haproxy -f "$WORK/haproxy.cfg" -db)
hap_total=$(count haproxy yes haproxy -f "$WORK/haproxy.cfg" -db)
hap_per=$(((hap_total - hap_startup) / $(requests haproxy)))

echo "instructions per request ($STRATEGY, X-Forwarded-For): gateway $gw_per, haproxy $hap_per, ratio $(echo "$gw_per / $hap_per" | bc -l | cut -c1-4)"
