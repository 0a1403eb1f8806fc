#!/usr/bin/env bash
# End-to-end comparison: examples/gateway.rs against HAProxy and nginx doing the same stickiness in
# front of the same three backends, on loopback, with the same core count, measured with wrk in one
# run, alternating gateway and peer. Each proxy adds X-Forwarded-For and nothing else (HAProxy
# `option forwardfor`, nginx `$proxy_add_x_forwarded_for`, the gateway's
# `--forwarded-headers x-forwarded-for`), so all do the same work per request.
# Also: an axum router bare vs behind Sticky in process.
#
#   scripts/bench-e2e.sh            # writes target/bench-e2e.md and prints it
#   DURATION=10 ROUNDS=3 THREADS=1 CONNECTIONS=32 scripts/bench-e2e.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-8}        # seconds per measurement
ROUNDS=${ROUNDS:-2}            # alternating rounds per pair
THREADS=${THREADS:-1}          # worker threads for the gateway, HAProxy and nginx alike
CONNECTIONS=${CONNECTIONS:-32}
OUT=${OUT:-target/bench-e2e.md}
ONLY=${ONLY:-cookie ip header overhead}   # which groups to measure (a subset of these four words)
WORK=$(mktemp -d /tmp/bench-e2e.XXXXXX)
PROXY=127.0.0.1:19180
BACKEND_PORTS=(19101 19102 19103)
BACKEND_IDS=(a b c)

need() { command -v "$1" >/dev/null 2>&1; }
if ! need haproxy || ! need nginx || ! need wrk || ! need bc || ! need curl; then
    echo "installing haproxy, nginx and wrk" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy nginx wrk curl bc >/dev/null
fi

cargo build -q --release --example gateway --example backend --example overhead

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 1 100); do
        if curl -s -o /dev/null "http://$1/healthz" 2>/dev/null || curl -s -o /dev/null "http://$1/" 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "nothing answers on $1" >&2
    return 1
}

for i in 0 1 2; do
    target/release/examples/backend --listen "127.0.0.1:${BACKEND_PORTS[$i]}" --id "${BACKEND_IDS[$i]}" --threads 1 &
    PIDS+=($!)
done
for port in "${BACKEND_PORTS[@]}"; do wait_port "127.0.0.1:$port"; done
for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || { echo "a backend failed to start (port in use?)" >&2; exit 1; }; done

# --- peers' configurations ---------------------------------------------------------------------
haproxy_cfg() { # $1 = balance lines
    cat > "$WORK/haproxy.cfg" <<CFG
global
    nbthread $THREADS
    maxconn 4096
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
$1
    server a 127.0.0.1:${BACKEND_PORTS[0]} cookie a
    server b 127.0.0.1:${BACKEND_PORTS[1]} cookie b
    server c 127.0.0.1:${BACKEND_PORTS[2]} cookie c
CFG
}

nginx_cfg() { # $1 = upstream balancing directive
    cat > "$WORK/nginx.conf" <<CFG
worker_processes $THREADS;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $WORK/body;
    proxy_temp_path $WORK/proxy;
    fastcgi_temp_path $WORK/fastcgi;
    uwsgi_temp_path $WORK/uwsgi;
    scgi_temp_path $WORK/scgi;
    upstream be {
        $1;
        server 127.0.0.1:${BACKEND_PORTS[0]};
        server 127.0.0.1:${BACKEND_PORTS[1]};
        server 127.0.0.1:${BACKEND_PORTS[2]};
        keepalive 128;
    }
    server {
        listen $PROXY;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
CFG
}

port_free() { ! (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

start_proxy() { # $1 = gateway|haproxy|nginx, rest = gateway args
    local kind=$1; shift
    for _ in $(seq 1 50); do port_free "$PROXY" && break; sleep 0.1; done
    port_free "$PROXY" || { echo "$PROXY is in use by another process; stop it first" >&2; exit 1; }
    case $kind in
        gateway)
            target/release/examples/gateway --listen "$PROXY" \
                --backend a=http://127.0.0.1:${BACKEND_PORTS[0]} \
                --backend b=http://127.0.0.1:${BACKEND_PORTS[1]} \
                --backend c=http://127.0.0.1:${BACKEND_PORTS[2]} \
                --threads "$THREADS" --forwarded-headers x-forwarded-for --cookie-key-file "$WORK/cookie.key" "$@" 2>"$WORK/gateway.log" &
            ;;
        haproxy) haproxy -f "$WORK/haproxy.cfg" -db 2>"$WORK/haproxy.log" & ;;
        nginx) nginx -c "$WORK/nginx.conf" 2>"$WORK/nginx.log" & ;;
        overhead-*) target/release/examples/overhead --listen "$PROXY" --mode "${kind#overhead-}" --threads "$THREADS" & ;;
    esac
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    sleep 0.3
    wait_port "$PROXY"
    kill -0 "$PROXY_PID" 2>/dev/null || { echo "$kind exited at start; see $WORK" >&2; exit 1; }
}

stop_proxy() {
    kill "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
    sleep 0.3
}

# wrk with an optional Lua script; prints "rps p50_ms p99_ms errors"
measure() { # $1 = lua file or "", rest = extra wrk args
    local lua=$1; shift
    local args=(-t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@")
    [ -n "$lua" ] && args+=(-s "$lua")
    wrk "${args[@]}" "http://$PROXY/" > "$WORK/wrk.out" 2>&1 || true
    awk '
        /Requests\/sec/ { rps = $2 }
        /^ +50%/ { p50 = $2 }
        /^ +99%/ { p99 = $2 }
        /Non-2xx or 3xx responses/ { err += $5 }
        /Socket errors/ { err += 1 }
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        END { printf "%s %.3f %.3f %d\n", rps, ms(p50), ms(p99), err + 0 }
    ' "$WORK/wrk.out"
}

cat > "$WORK/users.lua" <<'LUA'
local counter = 0
request = function()
    counter = counter + 1
    return wrk.format("GET", "/", { ["X-User"] = "user-" .. (counter % 10000) })
end
LUA

# A cookie a client would have after its first response, so every measured request is "sticky".
cookie_of() { # $1 = cookie name
    curl -s -D - -o /dev/null "http://$PROXY/" | awk -v name="$1" 'tolower($1) == "set-cookie:" { split($2, kv, ";"); if (index(kv[1], name "=") == 1) print kv[1] }'
}

RESULTS=()
run_pair() { # label, peer kind, peer setup fn, gateway args (string), lua, cookie name for gateway, cookie for peer
    local label=$1 peer=$2 setup=$3 gwargs=$4 lua=$5 gwcookie=$6 peercookie=$7
    local gw_sum=0 peer_sum=0 gw_line peer_line
    measure_gateway() {
        # shellcheck disable=SC2086
        start_proxy gateway $gwargs
        local hdr=()
        if [ -n "$gwcookie" ]; then hdr=(-H "Cookie: $(cookie_of "$gwcookie")"); fi
        gw_line=$(measure "$lua" "${hdr[@]}")
        stop_proxy
    }
    measure_peer() {
        $setup
        start_proxy "$peer"
        local hdr=()
        if [ -n "$peercookie" ]; then hdr=(-H "Cookie: $peercookie"); fi
        peer_line=$(measure "$lua" "${hdr[@]}")
        stop_proxy
    }
    for round in $(seq 1 "$ROUNDS"); do
        # Odd rounds measure the gateway first, even rounds the peer first, so that whatever
        # favours the first (or second) run of a round favours both alike.
        if [ $((round % 2)) -eq 1 ]; then measure_gateway; measure_peer; else measure_peer; measure_gateway; fi
        echo "  round $round: gateway $gw_line | $peer $peer_line" >&2
        gw_sum=$(echo "$gw_sum + $(echo "$gw_line" | cut -d' ' -f1)" | bc -l)
        peer_sum=$(echo "$peer_sum + $(echo "$peer_line" | cut -d' ' -f1)" | bc -l)
    done
    local gw_avg peer_avg ratio
    gw_avg=$(echo "$gw_sum / $ROUNDS" | bc -l)
    peer_avg=$(echo "$peer_sum / $ROUNDS" | bc -l)
    ratio=$(echo "$gw_avg / $peer_avg" | bc -l)
    RESULTS+=("$(printf '| %s | %s | %.0f | %.0f | %.2f | %s / %s ms | %s / %s ms |' "$label" "$peer" "$gw_avg" "$peer_avg" "$ratio" \
        "$(echo "$gw_line" | cut -d' ' -f2)" "$(echo "$gw_line" | cut -d' ' -f3)" \
        "$(echo "$peer_line" | cut -d' ' -f2)" "$(echo "$peer_line" | cut -d' ' -f3)")")
}

setup_haproxy_cookie() { haproxy_cfg "    balance roundrobin
    cookie SRV insert indirect nocache"; }
setup_haproxy_source() { haproxy_cfg "    balance source
    hash-type consistent"; }
setup_haproxy_header() { haproxy_cfg "    balance hdr(X-User)
    hash-type consistent"; }
setup_nginx_iphash() { nginx_cfg "ip_hash"; }
setup_nginx_header() { nginx_cfg "hash \$http_x_user consistent"; }
no_setup() { :; }

want() { [[ " $ONLY " == *" $1 "* ]]; }

echo "measuring (${DURATION}s x ${ROUNDS} rounds each, ${THREADS} thread(s), ${CONNECTIONS} connections)" >&2
want cookie && run_pair "cookie-pinned vs cookie SRV insert" haproxy setup_haproxy_cookie "--strategy cookie-pinned --cookie-name srv --cookie-indirect" "" srv "SRV=b"
want ip && run_pair "ip-ring vs balance source + consistent" haproxy setup_haproxy_source "--strategy ip-ring" "" "" ""
want ip && run_pair "ip-ring vs ip_hash" nginx setup_nginx_iphash "--strategy ip-ring" "" "" ""
want header && run_pair "header:X-User vs balance hdr(X-User) + consistent" haproxy setup_haproxy_header "--strategy header:X-User" "$WORK/users.lua" "" ""
want header && run_pair "header:X-User vs hash \$http_x_user consistent" nginx setup_nginx_header "--strategy header:X-User" "$WORK/users.lua" "" ""

# In process: an axum router bare vs Sticky over three in-process routers.
ovh_bare=0; ovh_sticky=0
want overhead || ROUNDS_OVH=0
for round in $(seq 1 "${ROUNDS_OVH:-$ROUNDS}"); do
    if [ $((round % 2)) -eq 1 ]; then
        start_proxy overhead-bare; b=$(measure ""); stop_proxy
        start_proxy overhead-sticky; s=$(measure ""); stop_proxy
    else
        start_proxy overhead-sticky; s=$(measure ""); stop_proxy
        start_proxy overhead-bare; b=$(measure ""); stop_proxy
    fi
    echo "  round $round: bare $b | sticky $s" >&2
    ovh_bare=$(echo "$ovh_bare + $(echo "$b" | cut -d' ' -f1)" | bc -l)
    ovh_sticky=$(echo "$ovh_sticky + $(echo "$s" | cut -d' ' -f1)" | bc -l)
done

{
    echo "End-to-end, $(nproc) cores, ${THREADS} proxy thread(s), wrk -t1 -c${CONNECTIONS} -d${DURATION}s, ${ROUNDS} alternating rounds (requests/s are means; latency from the last round)."
    echo
    echo "| stickiness | peer | gateway req/s | peer req/s | gateway / peer | gateway p50 / p99 | peer p50 / p99 |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s\n' "${RESULTS[@]}"
    echo
    if want overhead; then printf '| in process | bare axum router: %.0f req/s | Sticky over 3 routers: %.0f req/s | ratio %.3f (cost %.1f%%) |\n' \
        "$(echo "$ovh_bare / $ROUNDS" | bc -l)" "$(echo "$ovh_sticky / $ROUNDS" | bc -l)" \
        "$(echo "$ovh_sticky / $ovh_bare" | bc -l)" "$(echo "(1 - $ovh_sticky / $ovh_bare) * 100" | bc -l)"; fi
} | tee "$OUT"
