#!/usr/bin/env bash
# End-to-end comparison: examples/gateway.rs against HAProxy and nginx doing the same stickiness in
# front of the same three backends, on loopback, with the same core count, measured with wrk in one
# run, alternating gateway and peer. Each proxy adds X-Forwarded-For and nothing else (HAProxy
# `option forwardfor`, nginx `$proxy_add_x_forwarded_for`, the gateway's
# `--forwarded-headers x-forwarded-for`), so all do the same work per request.
# Also: an axum router bare vs behind Sticky in process.
#
#   scripts/bench-e2e.sh            # writes target/bench-e2e.md and prints it
#   DURATION=2 ROUNDS=12 THREADS=1 CONNECTIONS=32 ONLY="cookie ip" scripts/bench-e2e.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-2}        # seconds per slice (one side loaded, the other idle)
ROUNDS=${ROUNDS:-12}           # alternating rounds per pair
THREADS=${THREADS:-1}          # worker threads for the gateway, HAProxy and nginx alike
CONNECTIONS=${CONNECTIONS:-32}
OUT=${OUT:-target/bench-e2e.md}
ONLY=${ONLY:-cookie ip header overhead}   # which groups to measure (a subset of these four words)
# On two cores, threads placed by the scheduler make a round's result depend more on where each
# landed than on the proxy (single rounds moved by 20-50%), so everything is pinned (PIN=0 leaves
# placement to the scheduler). Where: requests/s measure the proxy only if the proxy's core is the
# one that runs out. wrk and the backends together make as many system calls per request as the
# proxy does (a send and a receive each), so with the backends beside wrk that core ran out first
# (98-99% busy, the proxy's 80-88%) and every proxy scored the same. So the backends share the
# proxy's core (as an application does beside its sidecar) and wrk has the other: the proxy's
# core is the limit, and the table shows both cores' busy time so that this can be checked.
# BACKEND_CPUS=0 puts the backends beside wrk as before.
PIN=${PIN:-$([ "$(nproc)" -ge 2 ] && echo 1 || echo 0)}
PROXY_CPUS=${PROXY_CPUS:-1}
LOAD_CPUS=${LOAD_CPUS:-0}
BACKEND_CPUS=${BACKEND_CPUS:-$PROXY_CPUS}
# A round during which the hypervisor took more than this share of the machine (steal time in
# /proc/stat) measured the host, not the proxies: it is run again, at most ROUNDS times in all.
MAX_STEAL_PCT=${MAX_STEAL_PCT:-3}
WORK=$(mktemp -d /tmp/bench-e2e.XXXXXX)
PROXY=127.0.0.1:19180
BACKEND_PORTS=(19101 19102 19103)
BACKEND_IDS=(a b c)

need() { command -v "$1" >/dev/null 2>&1; }
# Command prefixes (taskset execs the program, so $! is still the program's pid).
ON_PROXY_CPUS=(); ON_LOAD_CPUS=(); ON_BACKEND_CPUS=()
if [ "$PIN" = 1 ]; then
    ON_PROXY_CPUS=(taskset -c "$PROXY_CPUS"); ON_LOAD_CPUS=(taskset -c "$LOAD_CPUS"); ON_BACKEND_CPUS=(taskset -c "$BACKEND_CPUS")
fi
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

# The three backends are one single-threaded process listening on three ports: the same for every
# proxy, and on a shared core one process to switch to instead of three.
backend_args=()
for i in 0 1 2; do backend_args+=(--listen "127.0.0.1:${BACKEND_PORTS[$i]}" --id "${BACKEND_IDS[$i]}"); done
"${ON_BACKEND_CPUS[@]}" target/release/examples/backend "${backend_args[@]}" --threads 1 &
PIDS+=($!)
for port in "${BACKEND_PORTS[@]}"; do wait_port "127.0.0.1:$port"; done
kill -0 "${PIDS[0]}" 2>/dev/null || { echo "the backends failed to start (port in use?)" >&2; exit 1; }

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
    bind $PROXY_PEER
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
        listen $PROXY_PEER;
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

# Starts one proxy on $2; sets STARTED_PID (the process whose CPU time is read: nginx's single
# worker, the others' only process).
start_proxy() { # $1 = gateway|haproxy|nginx|overhead-bare|overhead-sticky, $2 = address, rest = gateway args
    local kind=$1 addr=$2; shift 2
    for _ in $(seq 1 50); do port_free "$addr" && break; sleep 0.1; done
    port_free "$addr" || { echo "$addr is in use by another process; stop it first" >&2; exit 1; }
    case $kind in
        gateway)
            "${ON_PROXY_CPUS[@]}" target/release/examples/gateway --listen "$addr" \
                --backend a=http://127.0.0.1:${BACKEND_PORTS[0]} \
                --backend b=http://127.0.0.1:${BACKEND_PORTS[1]} \
                --backend c=http://127.0.0.1:${BACKEND_PORTS[2]} \
                --threads "$THREADS" --forwarded-headers x-forwarded-for --cookie-key-file "$WORK/cookie.key" "$@" 2>"$WORK/gateway.log" &
            ;;
        haproxy) "${ON_PROXY_CPUS[@]}" haproxy -f "$WORK/haproxy.cfg" -db 2>"$WORK/haproxy.log" & ;;
        nginx) "${ON_PROXY_CPUS[@]}" nginx -c "$WORK/nginx.conf" 2>"$WORK/nginx.log" & ;;
        overhead-*) "${ON_PROXY_CPUS[@]}" target/release/examples/overhead --listen "$addr" --mode "${kind#overhead-}" --threads "$THREADS" & ;;
    esac
    local pid=$!
    PIDS+=("$pid")
    sleep 0.3
    wait_port "$addr"
    kill -0 "$pid" 2>/dev/null || { echo "$kind exited at start; see $WORK" >&2; exit 1; }
    STARTED_PID=$pid
    if [ "$kind" = nginx ]; then
        STARTED_PID=$(pgrep -P "$pid" | head -1)
        [ "$THREADS" = 1 ] || echo "note: nginx CPU time counts its first worker only" >&2
    fi
}

stop_proxies() {
    for pid in "${PIDS[@]:1}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    PIDS=("${PIDS[@]:0:1}")
    sleep 0.3
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # user + system, in clock ticks
steal_ticks() { awk '/^cpu / { print $9 }' /proc/stat; }       # the whole machine's, in clock ticks
# "busy idle" ticks of one CPU (idle = idle + iowait; busy = the rest but steal, guest).
core_ticks() { awk -v cpu="cpu$1" '$1 == cpu { print $2 + $3 + $4 + $7 + $8, $5 + $6 }' /proc/stat; }
# Percent busy between two core_ticks readings.
busy_pct() { # $1 $2 = before, $3 $4 = after
    local busy=$(($3 - $1)) idle=$(($4 - $2))
    echo $((busy + idle > 0 ? 100 * busy / (busy + idle) : 0))
}
# The first CPU of a taskset list ("1", "0-1", "0,2"): the one whose busy time is reported.
first_cpu() { local c=${1%%[,-]*}; echo "$c"; }

# One wrk slice against $1 while reading the CPU time of process $2; prints
# "rps p50_ms p99_ms errors requests cpu_ticks steal_ticks proxy_core_busy_pct load_core_busy_pct".
measure() { # $1 = address, $2 = proxy pid, $3 = lua file or ""
    local addr=$1 pid=$2 lua=$3
    local args=(-t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency)
    [ -n "$lua" ] && args+=(-s "$lua")
    local before after steal_before steal_after p0 l0 p1 l1
    local pcpu lcpu
    pcpu=$(first_cpu "$PROXY_CPUS"); lcpu=$(first_cpu "$LOAD_CPUS")
    before=$(cpu_ticks "$pid")
    steal_before=$(steal_ticks)
    p0=$(core_ticks "$pcpu"); l0=$(core_ticks "$lcpu")
    "${ON_LOAD_CPUS[@]}" wrk "${args[@]}" "http://$addr/" > "$WORK/wrk.out" 2>&1 || true
    after=$(cpu_ticks "$pid")
    steal_after=$(steal_ticks)
    p1=$(core_ticks "$pcpu"); l1=$(core_ticks "$lcpu")
    # shellcheck disable=SC2086
    awk -v ticks=$((after - before)) -v steal=$((steal_after - steal_before)) \
        -v pbusy="$(busy_pct $p0 $p1)" -v lbusy="$(busy_pct $l0 $l1)" '
        /Requests\/sec/ { rps = $2 }
        /requests in/ { n = $1 }
        /^ +50%/ { p50 = $2 }
        /^ +99%/ { p99 = $2 }
        /Non-2xx or 3xx responses/ { err += $5 }
        /Socket errors/ { err += 1 }
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        END { printf "%s %.3f %.3f %d %d %d %d %d %d\n", rps, ms(p50), ms(p99), err + 0, n, ticks, steal, pbusy, lbusy }
    ' "$WORK/wrk.out"
}

# wrk's load costs its core less if each request is formatted once, up front, rather than by Lua
# on every call. In init(), not at load time: only then has wrk set the Host header (without it
# nginx answers 400).
cat > "$WORK/users.lua" <<'LUA'
local requests = {}
init = function()
    for i = 0, 9999 do
        requests[i + 1] = wrk.format("GET", "/", { ["X-User"] = "user-" .. i })
    end
end
local counter = 0
request = function()
    counter = counter + 1
    return requests[counter % #requests + 1]
end
LUA

# Three clients' cookies, one per backend, as a wrk script that sends them in turn (as the header
# pair's script sends many users through the same connections): every measured request is
# "sticky", and the load is spread over the three backends instead of piling onto one.
# $1 = address, $2 = cookie name, $3 = the script to write.
cookies_script() {
    local addr=$1 name=$2 out=$3 response id cookie
    declare -A by_backend=()
    for _ in $(seq 1 30); do
        response=$(curl -s -D - "http://$addr/")
        id=$(printf '%s' "$response" | tail -n 1)
        cookie=$(printf '%s' "$response" | awk -v name="$name" 'tolower($1) == "set-cookie:" { split($2, kv, ";"); if (index(kv[1], name "=") == 1) print kv[1] }')
        [ -n "$cookie" ] && by_backend[$id]=$cookie
        [ "${#by_backend[@]}" -ge 3 ] && break
    done
    if [ "${#by_backend[@]}" -lt 3 ]; then
        echo "bench-e2e: $addr gave cookies for ${#by_backend[@]} backend(s), not 3" >&2
        exit 1
    fi
    {
        echo "local requests = {}"
        echo "init = function()"
        for id in "${!by_backend[@]}"; do
            echo "    requests[#requests + 1] = wrk.format(\"GET\", \"/\", { [\"Cookie\"] = \"${by_backend[$id]}\" })"
        done
        echo "end"
        echo "local counter = 0"
        echo "request = function()"
        echo "    counter = counter + 1"
        echo "    return requests[counter % #requests + 1]"
        echo "end"
    } > "$out"
}

TICK_US=$((1000000 / $(getconf CLK_TCK)))

# Reads "A-line B-line" pairs (one per round, as printed by measure) on stdin and prints
# "a_rps b_rps ratio min_ratio median_ratio max_ratio a_p50 a_p99 b_p50 b_p99 a_cpu_us b_cpu_us errors rounds
#  a_proxy_core_busy a_load_core_busy b_proxy_core_busy b_load_core_busy":
# requests/s over all rounds, the spread of the rounds' own ratios, median latencies, CPU per
# request, and the median busy percent of the proxy's core and of wrk's while each side was loaded.
summarise() {
    awk -v tick_us="$TICK_US" '
        function median(arr, k,   i, j, t) {
            for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (arr[j] < arr[i]) { t = arr[i]; arr[i] = arr[j]; arr[j] = t }
            return k % 2 ? arr[(k + 1) / 2] : (arr[k / 2] + arr[k / 2 + 1]) / 2
        }
        {
            if (NF < 18) next
            k++
            # wrk runs a little over its duration; time each side by its own requests/s.
            an += $5; at += $6; bn += $14; bt += $15; err += $4 + $13
            if ($1 > 0) ad += $5 / $1; if ($10 > 0) bd += $14 / $10
            r[k] = $1 / $10; ap50[k] = $2; ap99[k] = $3; bp50[k] = $11; bp99[k] = $12
            apb[k] = $8; alb[k] = $9; bpb[k] = $17; blb[k] = $18
        }
        END {
            if (k == 0) { print "n/a n/a n/a n/a n/a n/a n/a n/a n/a n/a n/a n/a n/a 0 n/a n/a n/a n/a"; exit }
            lo = hi = r[1]; for (i = 2; i <= k; i++) { if (r[i] < lo) lo = r[i]; if (r[i] > hi) hi = r[i] }
            printf "%.0f %.0f %.3f %.2f %.2f %.2f %.3f %.3f %.3f %.3f %.1f %.1f %d %d %d %d %d %d\n",
                an / ad, bn / bd, (an / ad) / (bn / bd), lo, median(r, k), hi,
                median(ap50, k), median(ap99, k), median(bp50, k), median(bp99, k),
                at * tick_us / an, bt * tick_us / bn, err, k,
                median(apb, k), median(alb, k), median(bpb, k), median(blb, k)
        }'
}

STEAL_LIMIT=$((DURATION * $(getconf CLK_TCK) * $(nproc) * 2 * MAX_STEAL_PCT / 100))
# Prints ROUNDS lines "A-line B-line", alternating which side goes first, and each round on stderr;
# a round with too much steal time is logged, counted in $WORK/discarded and run again.
alternate() { # $1 = name of A, $2 = function measuring A, $3 = name of B, $4 = function measuring B
    local kept=0 tries=0 a b steal out=""
    while [ "$kept" -lt "$ROUNDS" ] && [ "$tries" -lt $((2 * ROUNDS)) ]; do
        tries=$((tries + 1))
        if [ $((tries % 2)) -eq 1 ]; then a=$($2); b=$($4); else b=$($4); a=$($2); fi
        steal=$(($(echo "$a" | cut -d' ' -f7) + $(echo "$b" | cut -d' ' -f7)))
        if [ "$steal" -gt "$STEAL_LIMIT" ]; then
            echo "  round run again (steal $steal ticks > $STEAL_LIMIT): $1 $a | $3 $b" >&2
            echo x >> "$WORK/discarded"
            continue
        fi
        kept=$((kept + 1))
        echo "  round $kept: $1 $a | $3 $b" >&2
        out+="$a $b"$'\n'
    done
    printf '%s' "$out"
}

# Warms both sides up (backend connections, caches), then prints the summary of their rounds and
# stops them. Both are up before this is called.
compare() { # $1 = name of A, $2 = function measuring A, $3 = name of B, $4 = function measuring B
    DURATION=1 $2 >/dev/null
    DURATION=1 $4 >/dev/null
    local rounds
    rounds=$(alternate "$@")
    stop_proxies
    printf '%s\n' "$rounds" | summarise
}

# Both sides run at once on their own ports, idle in turn: each round loads the gateway for
# DURATION seconds, then the peer (even rounds the other way round), so a slow patch of a shared
# host falls on both sides alike, and the rounds' own ratios show how far to trust the total.
PROXY_GW=$PROXY
PROXY_PEER=127.0.0.1:19181
RESULTS=()
run_pair() { # label, peer kind, peer setup fn, gateway args (string), lua, cookie name of the gateway, of the peer ("": none)
    local label=$1 peer=$2 setup=$3 gwargs=$4 lua=$5 gwcookie=$6 peercookie=$7
    # shellcheck disable=SC2086
    start_proxy gateway "$PROXY_GW" $gwargs
    local gw_pid=$STARTED_PID
    $setup
    start_proxy "$peer" "$PROXY_PEER"
    local peer_pid=$STARTED_PID
    local gw_lua=$lua peer_lua=$lua
    if [ -n "$gwcookie" ]; then
        gw_lua=$WORK/cookies-gateway.lua
        cookies_script "$PROXY_GW" "$gwcookie" "$gw_lua"
    fi
    if [ -n "$peercookie" ]; then
        peer_lua=$WORK/cookies-$peer.lua
        cookies_script "$PROXY_PEER" "$peercookie" "$peer_lua"
    fi
    side_gateway() { measure "$PROXY_GW" "$gw_pid" "$gw_lua"; }
    side_peer() { measure "$PROXY_PEER" "$peer_pid" "$peer_lua"; }
    local s
    read -r -a s <<< "$(compare gateway side_gateway "$peer" side_peer)"
    RESULTS+=("$(printf '| %s | %s | %s | %s | **%s** | %s / %s / %s (%s rounds) | %s / %s ms | %s / %s ms | %s / %s µs | %s%% / %s%% | %s%% / %s%% | %s |' \
        "$label" "$peer" "${s[0]}" "${s[1]}" "${s[2]}" "${s[3]}" "${s[4]}" "${s[5]}" "${s[13]}" \
        "${s[6]}" "${s[7]}" "${s[8]}" "${s[9]}" "${s[10]}" "${s[11]}" "${s[14]}" "${s[15]}" "${s[16]}" "${s[17]}" "${s[12]}")")
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

: > "$WORK/discarded"
echo "measuring (${ROUNDS} alternating rounds of ${DURATION}s each, ${THREADS} thread(s), ${CONNECTIONS} connections)" >&2
want cookie && run_pair "cookie-pinned vs cookie SRV insert" haproxy setup_haproxy_cookie "--strategy cookie-pinned --cookie-name srv --cookie-indirect" "" srv SRV
want ip && run_pair "ip-ring vs balance source + consistent" haproxy setup_haproxy_source "--strategy ip-ring" "" "" ""
want ip && run_pair "ip-ring vs ip_hash" nginx setup_nginx_iphash "--strategy ip-ring" "" "" ""
want header && run_pair "header:X-User vs balance hdr(X-User) + consistent" haproxy setup_haproxy_header "--strategy header:X-User" "$WORK/users.lua" "" ""
want header && run_pair "header:X-User vs hash \$http_x_user consistent" nginx setup_nginx_header "--strategy header:X-User" "$WORK/users.lua" "" ""

# In process: an axum router bare vs Sticky over three in-process routers, measured the same way.
OVERHEAD=""
if want overhead; then
    start_proxy overhead-sticky "$PROXY_GW"; sticky_pid=$STARTED_PID
    start_proxy overhead-bare "$PROXY_PEER"; bare_pid=$STARTED_PID
    side_sticky() { measure "$PROXY_GW" "$sticky_pid" ""; }
    side_bare() { measure "$PROXY_PEER" "$bare_pid" ""; }
    read -r -a o <<< "$(compare sticky side_sticky bare side_bare)"
    OVERHEAD=$(printf '| in process | Sticky over 3 routers: %s req/s | bare axum router: %s req/s | ratio %s (cost %.1f%%); rounds %s / %s / %s (%s rounds) | CPU per request %s / %s µs | server core / wrk core busy %s%% / %s%% and %s%% / %s%% |' \
        "${o[0]}" "${o[1]}" "${o[2]}" "$(echo "(1 - ${o[2]}) * 100" | bc -l)" "${o[3]}" "${o[4]}" "${o[5]}" "${o[13]}" "${o[10]}" "${o[11]}" \
        "${o[14]}" "${o[15]}" "${o[16]}" "${o[17]}")
fi

{
    placement="placement left to the scheduler"
    [ "$PIN" = 1 ] && placement="each proxy on CPU $PROXY_CPUS, the backends on CPU $BACKEND_CPUS, wrk on CPU $LOAD_CPUS"
    echo "End-to-end, $(nproc) cores ($placement), ${THREADS} proxy thread(s), wrk -t1 -c${CONNECTIONS}, up to ${ROUNDS} alternating rounds of ${DURATION}s per side with both sides up (req/s over all rounds; each round's own ratio min / median / max; median latency; proxy CPU, user + system, per request; median busy time of the proxy's core and of wrk's while each side was loaded). Rounds run again for steal time over ${MAX_STEAL_PCT}%: $(wc -l < "$WORK/discarded")."
    echo
    echo "| stickiness | peer | gateway req/s | peer req/s | gateway / peer | rounds min / median / max | gateway p50 / p99 | peer p50 / p99 | CPU per request gateway / peer | busy, proxy core / wrk core, gateway | same, peer | errors |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${RESULTS[@]}"
    echo
    [ -z "$OVERHEAD" ] || echo "$OVERHEAD"
} | tee "$OUT"
