#!/usr/bin/env bash
# bench/proxy-peers.sh -- the graymesh proxy side by side with HAProxy and nginx, and direct.
#
#   bench/proxy-peers.sh                  install what is missing, build (release), run, table
#   SKIP_BUILD=1 bench/proxy-peers.sh     reuse target/release/graymesh
#   GM_BIN=PATH GM_COMMIT=SHA bench/...   measure a graymesh binary built elsewhere (no build),
#                                         e.g. from `git archive SHA` while crates/ has WIP
#   KEEP=DIR bench/proxy-peers.sh         keep configs, logs, raw wrk/oha/h2load output in DIR
#   PERF=1 bench/proxy-peers.sh           afterwards: syscalls and context switches per request of
#                                         each proxy at 5k req/s (perf stat), and perf record of
#                                         graymesh, HAProxy and nginx during extra wrk runs, with a
#                                         breakdown by bench/perf-breakdown.py (PERF_CALL_GRAPH=
#                                         dwarf|fp, default dwarf)
#
# Knobs (environment): PIN=1 (proxy under test on CPU 0; load generator, upstream and pilot on
#   CPU 1), WRK_SECONDS=5, OHA_SECONDS=6, H2_SECONDS=5, RATES="1000 5000", SERVICES=100 (extra
#   services in pilot's config, for the idle-RSS figure), SKIP_INSTALL=1, PHASES="wrk oha h2"
#   (which measurements run; e.g. PHASES=h2 for the HTTP/2 figures alone, PERF=1 then profiles
#   the proxies under h2load).
#
# Method: shared/BENCHMARKING.md. One worker per peer (graymesh --concurrency 1, HAProxy
# nbthread 1, nginx worker_processes 1), upstream nginx `return 200` with keep-alive from every
# peer. Every peer does the same routing: header match `x-canary: true` -> v2, else a 90/10
# weighted split v1/v2 (two upstream server blocks). graymesh gets it from pilot as Istio YAML
# (ServiceEntry + DestinationRule + VirtualService), with 100 more services configured; its
# metrics are always on.
#   peak:    wrk -t1 -c16 -dWRK_SECONDS, two rounds (second in reverse order), ratio of sums
#   cost:    oha -q RATE -zOHA_SECONDS -c16 --latency-correction; proxy CPU (utime+stime from
#            /proc/PID/stat) per 1,000 requests; p50/p99 minus direct's
#   memory:  VmRSS idle (before any request) and at the end of the 5k run
#   HTTP/2:  h2load -c16 -m10 -t1 -DH2_SECONDS (h2c prior knowledge), two rounds
# Loopback only; every load is bounded in time; everything started here is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PIN="${PIN:-1}"
WRK_SECONDS="${WRK_SECONDS:-5}"
OHA_SECONDS="${OHA_SECONDS:-6}"
H2_SECONDS="${H2_SECONDS:-5}"
RATES="${RATES:-1000 5000}"
SERVICES="${SERVICES:-100}"
PERF="${PERF:-0}"
PHASES=" ${PHASES:-wrk oha h2} "
phase() { [[ "$PHASES" == *" $1 "* ]]; }
PERF_CALL_GRAPH="${PERF_CALL_GRAPH:-dwarf}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
GM_BIN="${GM_BIN:-$TARGET_DIR/release/graymesh}"
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '\n==> %s\n' "$*"; }
die() { echo "error: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Tools
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    need=()
    command -v nginx >/dev/null || need+=(nginx-light)
    command -v haproxy >/dev/null || need+=(haproxy)
    command -v wrk >/dev/null || need+=(wrk)
    command -v h2load >/dev/null || need+=(nghttp2-client)
    command -v taskset >/dev/null || need+=(util-linux)
    if [ "$PERF" = 1 ] && ! command -v perf >/dev/null; then need+=(linux-perf); fi
    if [ "${#need[@]}" -gt 0 ]; then
        say "apt-get install ${need[*]}"
        apt-get update -qq
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; then
            # nginx-light is not in every Debian release; plain nginx is.
            need=("${need[@]/nginx-light/nginx}")
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
        fi
    fi
    if phase oha && ! command -v oha >/dev/null; then
        say "cargo install oha --locked (a few minutes)"
        cargo install oha --locked
    fi
fi
tools=(nginx haproxy wrk h2load taskset python3 curl)
phase oha && tools+=(oha)
for t in "${tools[@]}"; do
    command -v "$t" >/dev/null || die "$t is missing (run without SKIP_INSTALL=1)"
done
# Debian's packages start a system nginx/haproxy where systemd runs; this script never uses them.

if [ "${SKIP_BUILD:-0}" != 1 ] && [ -z "${GM_COMMIT:-}" ]; then
    say "cargo build --release -p graymesh"
    cargo build --release -p graymesh
fi
[ -x "$GM_BIN" ] || die "missing $GM_BIN"
[ "${SKIP_BUILD:-0}" = 1 ] && echo "not rebuilt: $GM_BIN is from $(date -r "$GM_BIN" '+%F %H:%M')"

COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
DIRTY="$(git diff --quiet HEAD -- crates 2>/dev/null || echo ' (crates/ has uncommitted changes)')"
if [ -n "${GM_COMMIT:-}" ]; then  # GM_BIN built elsewhere, e.g. from a clean export of a commit
    COMMIT="$GM_COMMIT (binary $GM_BIN)"
    DIRTY=""
fi
say "commit $COMMIT$DIRTY; $(nproc) cores; $(nginx -v 2>&1 | sed 's/.*: //'); $(haproxy -v | sed -n 1p | awk '{print "HAProxy " $3}'); $(oha --version 2>/dev/null || echo 'no oha'); $(wrk -v 2>&1 | sed -n 1p | awk '{print "wrk " $2}'); $(h2load --version | awk '{print $2}')"

# ---------------------------------------------------------------------------------------------
# Processes
WORK="$(mktemp -d "${TMPDIR:-/tmp}/graymesh-proxy-peers.XXXXXX")"
chmod 755 "$WORK"
PIDS=()
PERF_PID=""

cleanup() {
    set +e
    if [ -n "$PERF_PID" ] && kill -0 "$PERF_PID" 2>/dev/null; then kill -INT "$PERF_PID"; wait "$PERF_PID"; fi
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    done
    if [ -n "${KEEP:-}" ]; then
        mkdir -p "$KEEP" && cp -r "$WORK"/. "$KEEP"/ && echo "kept: $KEEP"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$PIN" = 1 ]; then
    PROXY_CPU=(taskset -c 0)
    LOAD_CPU=(taskset -c 1)
else
    PROXY_CPU=()
    LOAD_CPU=()
fi

# Free loopback ports, all distinct.
mapfile -t PORTS < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(16):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
EOF
)
UP1="${PORTS[0]}" UP2="${PORTS[1]}" UP1_H2="${PORTS[2]}" UP2_H2="${PORTS[3]}"
PILOT_XDS="${PORTS[4]}" PILOT_HTTP="${PORTS[5]}"
GM="${PORTS[6]}" GM_H2="${PORTS[7]}" GM_OUT="${PORTS[8]}" GM_ADMIN="${PORTS[9]}"
HAP="${PORTS[10]}" HAP_H2="${PORTS[11]}" NGX="${PORTS[12]}" NGX_H2="${PORTS[13]}"

# wait_http URL [SECONDS] [HEADER]: until the URL answers 200.
wait_http() {
    local url="$1" limit="${2:-30}" i
    for i in $(seq $((limit * 10))); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)" = 200 ] && return 0
        sleep 0.1
    done
    return 1
}

# cpu_ticks PID: utime+stime in clock ticks. rss_kib PID: VmRSS.
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
utime_ticks() { awk '{ sub(/^.*\) /, ""); print $12 }' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# rss_split PID: "anon_kib file_kib" (RssAnon, RssFile + RssShmem: the mapped binary's pages).
rss_split() { awk '/^RssAnon:/ { a = $2 } /^RssFile:|^RssShmem:/ { f += $2 } END { print a, f }' "/proc/$1/status"; }
HZ="$(getconf CLK_TCK)"

RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
# record KEY=VALUE... : one JSON object per line (values are numbers or plain strings).
record() {
    python3 - "$@" >>"$RESULTS" <<'EOF'
import json, sys
d = {}
for kv in sys.argv[1:]:
    k, v = kv.split("=", 1)
    try:
        d[k] = float(v) if "." in v or "e" in v.lower() else int(v)
    except ValueError:
        d[k] = v
print(json.dumps(d))
EOF
}

# ---------------------------------------------------------------------------------------------
# Upstream: nginx `return 200`, v1 and v2 server blocks, HTTP/1.1 and h2c (prior knowledge).
say "upstream nginx on 127.0.0.1:$UP1 (v1) / $UP2 (v2), h2c $UP1_H2 / $UP2_H2"
mkdir -p "$WORK/upstream/logs"
cat >"$WORK/upstream/nginx.conf" <<EOF
worker_processes 1;
error_log $WORK/upstream/logs/error.log warn;
pid $WORK/upstream/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    default_type text/plain;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server { listen 127.0.0.1:$UP1 backlog=4096; location / { return 200 "v1\n"; } }
    server { listen 127.0.0.1:$UP2 backlog=4096; location / { return 200 "v2\n"; } }
    server { listen 127.0.0.1:$UP1_H2 http2; location / { return 200 "v1\n"; } }
    server { listen 127.0.0.1:$UP2_H2 http2; location / { return 200 "v2\n"; } }
}
EOF
"${LOAD_CPU[@]}" nginx -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf" -g 'daemon off;' \
    >"$WORK/upstream/logs/stdout.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$UP1/" 10 || die "upstream nginx did not start: $(cat "$WORK/upstream/logs/"*)"
wait_http "http://127.0.0.1:$UP2/" 10 || die "upstream nginx v2 did not start"

# ---------------------------------------------------------------------------------------------
# graymesh: pilot with the bench service (+ SERVICES more) and the proxy.
CFG="$WORK/pilot-config"
mkdir -p "$CFG"
python3 "$ROOT/bench/gen-config.py" --out "$CFG" --edits "$WORK/unused-edits" \
    --services "$SERVICES" --endpoints 2 >/dev/null
bench_service() { # NAME V1_PORT V2_PORT PORT_NAME PROTOCOL
    local host="$1.default.svc.cluster.local"
    cat <<EOF
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: $1
  namespace: default
spec:
  hosts:
  - $host
  location: MESH_INTERNAL
  ports:
  - number: 8080
    name: $4
    protocol: $5
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    ports:
      $4: $2
    labels:
      app: $1
      version: v1
  - address: 127.0.0.1
    ports:
      $4: $3
    labels:
      app: $1
      version: v2
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: $1
  namespace: default
spec:
  host: $host
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: $1
  namespace: default
spec:
  hosts:
  - $host
  http:
  - name: canary
    match:
    - headers:
        x-canary:
          exact: "true"
    route:
    - destination:
        host: $host
        subset: v2
  - name: split
    route:
    - destination:
        host: $host
        subset: v1
      weight: 90
    - destination:
        host: $host
        subset: v2
      weight: 10
EOF
}
{
    bench_service bench "$UP1" "$UP2" http HTTP
    echo "---"
    bench_service bench-h2 "$UP1_H2" "$UP2_H2" http2 HTTP2
} >"$CFG/bench.yaml"

say "graymesh pilot (xDS 127.0.0.1:$PILOT_XDS, http $PILOT_HTTP), $((SERVICES + 2)) services"
"${LOAD_CPU[@]}" "$GM_BIN" pilot --config-dir "$CFG" --xds-addr "127.0.0.1:$PILOT_XDS" \
    --http-addr "127.0.0.1:$PILOT_HTTP" >"$WORK/pilot.log" 2>&1 &
PILOT_PID=$!
PIDS+=("$PILOT_PID")
wait_http "http://127.0.0.1:$PILOT_HTTP/ready" 60 || die "pilot not ready: $(tail -20 "$WORK/pilot.log")"
PILOT_CPU0="$(cpu_ticks "$PILOT_PID")"

say "graymesh proxy --concurrency 1 (bench:8080 on $GM, bench-h2:8080 on $GM_H2, admin $GM_ADMIN)"
"${PROXY_CPU[@]}" "$GM_BIN" proxy --pilot "127.0.0.1:$PILOT_XDS" --node-id bench-1 \
    --upstream "bench:8080=127.0.0.1:$GM" --upstream "bench-h2:8080=127.0.0.1:$GM_H2" \
    --outbound-addr "127.0.0.1:$GM_OUT" --admin-addr "127.0.0.1:$GM_ADMIN" \
    --no-register --concurrency 1 >"$WORK/proxy.log" 2>&1 &
GM_PID=$!
PIDS+=("$GM_PID")
wait_http "http://127.0.0.1:$GM_ADMIN/ready" 60 || die "proxy not ready: $(tail -20 "$WORK/proxy.log")"
sleep 2
GM_RSS_IDLE="$(rss_kib "$GM_PID")"
GM_THREADS="$(awk '/^Threads:/ { print $2 }' "/proc/$GM_PID/status")"
curl -s "http://127.0.0.1:$GM_ADMIN/config_dump" >"$WORK/proxy-config-dump.json"
echo "ready; idle RSS $((GM_RSS_IDLE / 1024)) MiB, $GM_THREADS threads; routes: $(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(len(d["routes"]), "route configs,", len(d["clusters"]), "clusters,", len(d["listeners"]), "listeners")' "$WORK/proxy-config-dump.json")"

# ---------------------------------------------------------------------------------------------
# HAProxy: nbthread 1, http-reuse always; the same header match and 90/10 split.
say "HAProxy nbthread 1 on $HAP (h2c: $HAP_H2)"
cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    http-reuse always
frontend fe
    bind 127.0.0.1:$HAP
    use_backend v2 if { req.hdr(x-canary) -m str true }
    default_backend split
frontend fe_h2
    bind 127.0.0.1:$HAP_H2 proto h2
    use_backend v2_h2 if { req.hdr(x-canary) -m str true }
    default_backend split_h2
backend split
    balance roundrobin
    server v1 127.0.0.1:$UP1 weight 9
    server v2 127.0.0.1:$UP2 weight 1
backend v2
    server v2 127.0.0.1:$UP2
backend split_h2
    balance roundrobin
    server v1 127.0.0.1:$UP1_H2 weight 9 proto h2
    server v2 127.0.0.1:$UP2_H2 weight 1 proto h2
backend v2_h2
    server v2 127.0.0.1:$UP2_H2 proto h2
EOF
haproxy -c -q -f "$WORK/haproxy.cfg" || die "haproxy config rejected"
"${PROXY_CPU[@]}" haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
HAP_PID=$!
PIDS+=("$HAP_PID")
wait_http "http://127.0.0.1:$HAP/" 10 || die "haproxy did not start: $(cat "$WORK/haproxy.log")"

# nginx: worker_processes 1, upstream keepalive 64, proxy_http_version 1.1; same routing.
# nginx proxies HTTP/1.x only (no h2 to upstreams): its h2c port forwards over HTTP/1.1.
say "nginx worker_processes 1 on $NGX (h2c: $NGX_H2, forwarded as HTTP/1.1)"
mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
error_log $WORK/nginx/logs/error.log warn;
pid $WORK/nginx/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    upstream bench_split {
        server 127.0.0.1:$UP1 weight=9;
        server 127.0.0.1:$UP2 weight=1;
        keepalive 64;
    }
    upstream bench_v2 {
        server 127.0.0.1:$UP2;
        keepalive 64;
    }
    map \$http_x_canary \$bench_upstream {
        default bench_split;
        "true"  bench_v2;
    }
    server {
        listen 127.0.0.1:$NGX backlog=4096;
        listen 127.0.0.1:$NGX_H2 http2;
        location / {
            proxy_pass http://\$bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
"${PROXY_CPU[@]}" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' \
    >"$WORK/nginx/logs/stdout.log" 2>&1 &
NGX_MASTER=$!
PIDS+=("$NGX_MASTER")
wait_http "http://127.0.0.1:$NGX/" 10 || die "nginx did not start: $(cat "$WORK/nginx/logs/"*)"
NGX_PID="$(pgrep -P "$NGX_MASTER" | sed -n 1p)"
[ -n "$NGX_PID" ] || die "no nginx worker"

sleep 1
HAP_RSS_IDLE="$(rss_kib "$HAP_PID")"
NGX_RSS_IDLE="$(rss_kib "$NGX_PID")"
read -r GM_ANON GM_FILE < <(rss_split "$GM_PID")
read -r HAP_ANON HAP_FILE < <(rss_split "$HAP_PID")
read -r NGX_ANON NGX_FILE < <(rss_split "$NGX_PID")
record kind=rss_idle peer=graymesh kib="$GM_RSS_IDLE" anon="$GM_ANON" file="$GM_FILE" services="$((SERVICES + 2))"
record kind=rss_idle peer=haproxy kib="$HAP_RSS_IDLE" anon="$HAP_ANON" file="$HAP_FILE" services=1
record kind=rss_idle peer=nginx kib="$NGX_RSS_IDLE" anon="$NGX_ANON" file="$NGX_FILE" services=1

declare -A URL=(
    [direct]="http://127.0.0.1:$UP1/"
    [graymesh]="http://127.0.0.1:$GM/"
    [haproxy]="http://127.0.0.1:$HAP/"
    [nginx]="http://127.0.0.1:$NGX/"
)
declare -A H2URL=(
    [direct]="http://127.0.0.1:$UP1_H2/"
    [graymesh]="http://127.0.0.1:$GM_H2/"
    [haproxy]="http://127.0.0.1:$HAP_H2/"
    [nginx]="http://127.0.0.1:$NGX_H2/"
)
declare -A PID_OF=([direct]="" [graymesh]="$GM_PID" [haproxy]="$HAP_PID" [nginx]="$NGX_PID")
PEERS=(direct graymesh haproxy nginx)

# ---------------------------------------------------------------------------------------------
say "checks: 200 through every peer, the split and the header match"
for p in "${PEERS[@]}"; do
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${URL[$p]}")"
    [ "$code" = 200 ] || die "$p: ${URL[$p]} answered $code"
    h2="$(curl -s --http2-prior-knowledge -o /dev/null -w '%{http_code} %{http_version}' --max-time 2 "${H2URL[$p]}" || true)"
    canary="$(curl -s --max-time 2 -H 'x-canary: true' "${URL[$p]}")"
    split="$(for _ in $(seq 200); do curl -s --max-time 2 "${URL[$p]}"; done | sort | uniq -c | tr -s ' \n' ' ')"
    printf '%-9s HTTP/1.1 200; h2c: %s; x-canary: true -> %s; 200 requests: %s\n' "$p" "$h2" "$canary" "$split"
    record kind=check peer="$p" h2="$h2" canary="$canary" split="$split"
done

# ---------------------------------------------------------------------------------------------
# run_wrk PEER ROUND
run_wrk() {
    local p="$1" round="$2" pid="${PID_OF[$1]}" c0=0 c1=0 out
    out="$WORK/wrk-$p-$round.txt"
    local u0=0 u1=0
    [ -n "$pid" ] && c0="$(cpu_ticks "$pid")" && u0="$(utime_ticks "$pid")"
    "${LOAD_CPU[@]}" timeout $((WRK_SECONDS + 30)) wrk -t1 -c16 -d"${WRK_SECONDS}s" --latency "${URL[$p]}" >"$out" 2>&1
    [ -n "$pid" ] && c1="$(cpu_ticks "$pid")" && u1="$(utime_ticks "$pid")"
    local rps reqs errors non2xx
    rps="$(awk '/^Requests\/sec:/ { print $2 }' "$out")"
    reqs="$(awk '/requests in/ { print $1 }' "$out")"
    errors="$(awk '/Socket errors:/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' "$out")"
    non2xx="$(awk '/Non-2xx/ { print $NF }' "$out")"
    record kind=wrk peer="$p" round="$round" rps="$rps" requests="$reqs" \
        errors="${errors:-0}" non2xx="${non2xx:-0}" cpu_ms="$(((c1 - c0) * 1000 / HZ))" \
        user_ms="$(((u1 - u0) * 1000 / HZ))"
    printf '%-9s round %s: %10s req/s  (%s requests, errors %s, non-2xx %s)\n' \
        "$p" "$round" "$rps" "$reqs" "${errors:-0}" "${non2xx:-0}"
}

if phase wrk; then
    say "warm-up: wrk 1 s per peer"
    for p in "${PEERS[@]}"; do
        "${LOAD_CPU[@]}" timeout 30 wrk -t1 -c16 -d1s "${URL[$p]}" >/dev/null 2>&1 || true
    done
    say "peak: wrk -t1 -c16 -d${WRK_SECONDS}s, two rounds, alternating peers"
    for p in direct graymesh haproxy nginx; do run_wrk "$p" 1; done
    for p in nginx haproxy graymesh direct; do run_wrk "$p" 2; done
fi

# ---------------------------------------------------------------------------------------------
# run_oha PEER RATE
run_oha() {
    local p="$1" rate="$2" pid="${PID_OF[$1]}" c0=0 c1=0 out
    out="$WORK/oha-$p-$rate.json"
    local u0=0 u1=0
    [ -n "$pid" ] && c0="$(cpu_ticks "$pid")" && u0="$(utime_ticks "$pid")"
    "${LOAD_CPU[@]}" timeout $((OHA_SECONDS + 30)) oha --no-tui -q "$rate" -z "${OHA_SECONDS}s" -c 16 \
        --latency-correction --output-format json "${URL[$p]}" >"$out" 2>"$WORK/oha-$p-$rate.err"
    [ -n "$pid" ] && c1="$(cpu_ticks "$pid")" && u1="$(utime_ticks "$pid")"
    local rss=0
    [ -n "$pid" ] && rss="$(rss_kib "$pid")"
    record kind=oha peer="$p" rate="$rate" file="$out" cpu_ms="$(((c1 - c0) * 1000 / HZ))" \
        user_ms="$(((u1 - u0) * 1000 / HZ))" rss_kib="$rss"
    python3 - "$out" "$p" "$rate" "$(((c1 - c0) * 1000 / HZ))" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
codes = d.get("statusCodeDistribution", {})
n = sum(codes.values())
lp = d["latencyPercentiles"]
cpu = int(sys.argv[4])
per_k = f"{cpu / n * 1000:.0f} CPU-ms/1k" if n and sys.argv[2] != "direct" else ""
print(f"{sys.argv[2]:<9} {sys.argv[3]:>5} req/s: {n} responses {codes}, "
      f"p50 {lp['p50'] * 1000:.3f} ms, p99 {lp['p99'] * 1000:.3f} ms  {per_k}")
EOF
}

phase oha || RATES=""
for rate in $RATES; do
    say "fixed rate: oha -q $rate -z ${OHA_SECONDS}s -c 16 --latency-correction"
    for p in "${PEERS[@]}"; do run_oha "$p" "$rate"; done
done

# ---------------------------------------------------------------------------------------------
# run_h2 PEER ROUND
run_h2() {
    local p="$1" round="$2" pid="${PID_OF[$1]}" c0=0 c1=0 out
    out="$WORK/h2load-$p-$round.txt"
    [ -n "$pid" ] && c0="$(cpu_ticks "$pid")"
    "${LOAD_CPU[@]}" timeout $((H2_SECONDS + 30)) h2load -c16 -m10 -t1 -D "$H2_SECONDS" \
        "${H2URL[$p]}" >"$out" 2>&1 || true
    [ -n "$pid" ] && c1="$(cpu_ticks "$pid")"
    local rps ok failed
    rps="$(awk '/^finished in/ { gsub(",", ""); print $4 }' "$out")"
    ok="$(awk '/^requests:/ { print $8 }' "$out")"
    failed="$(awk '/^requests:/ { print $10 + $12 }' "$out")"
    record kind=h2load peer="$p" round="$round" rps="${rps:-0}" succeeded="${ok:-0}" \
        failed="${failed:-0}" cpu_ms="$(((c1 - c0) * 1000 / HZ))"
    printf '%-9s round %s: %10s req/s  (%s succeeded, %s failed/errored)\n' \
        "$p" "$round" "${rps:-?}" "${ok:-?}" "${failed:-?}"
}

if phase h2; then
    say "HTTP/2 (h2c prior knowledge): h2load -c16 -m10 -t1 -D $H2_SECONDS, two rounds"
    for p in "${PEERS[@]}"; do  # warm-up
        "${LOAD_CPU[@]}" timeout 30 h2load -c16 -m10 -t1 -D 1 "${H2URL[$p]}" >/dev/null 2>&1 || true
    done
    for p in direct graymesh haproxy nginx; do run_h2 "$p" 1; done
    for p in nginx haproxy graymesh direct; do run_h2 "$p" 2; done
fi

# ---------------------------------------------------------------------------------------------
if [ "$PERF" = 1 ]; then
    # Syscalls and context switches per request, every peer, at a fixed 5k req/s.
    SYSCALLS=(read recvfrom recvmsg readv write writev sendto sendmsg epoll_wait epoll_pwait
        epoll_ctl futex sched_yield accept4 setsockopt getsockopt mmap munmap madvise brk
        getrandom ioctl shutdown close)
    events="raw_syscalls:sys_enter,context-switches,cpu-migrations"
    for sc in "${SYSCALLS[@]}"; do events="$events,syscalls:sys_enter_$sc"; done
    phase oha && say "perf stat: syscalls per request at 5,000 req/s (oha -z ${OHA_SECONDS}s)"
    for p in graymesh haproxy nginx; do
        phase oha || break
        perf stat -x, -e "$events" -p "${PID_OF[$p]}" -o "$WORK/syscalls-$p.csv" \
            -- sleep $((OHA_SECONDS + 3)) >/dev/null 2>&1 &
        stat_pid=$!
        sleep 1.5  # perf attaches its counters first
        "${LOAD_CPU[@]}" timeout $((OHA_SECONDS + 30)) oha --no-tui -q 5000 -z "${OHA_SECONDS}s" -c 16 \
            --latency-correction --output-format json "${URL[$p]}" >"$WORK/oha-syscalls-$p.json"
        wait "$stat_pid" || true
        record kind=syscalls peer="$p" file="$WORK/syscalls-$p.csv" oha="$WORK/oha-syscalls-$p.json"
    done

    # perf_profile PEER: perf record (call graphs) during a wrk run (h2load with PHASES=h2),
    # then where the CPU went.
    perf_profile() {
        local p="$1" pid="${PID_OF[$1]}" c0 c1 out="$WORK/perf-$1"
        if ! phase wrk; then perf_profile_h2 "$@"; return; fi
        say "perf record -F 1999 --call-graph $PERF_CALL_GRAPH -p $pid ($p) during wrk -t1 -c16 -d${WRK_SECONDS}s"
        local args=(-g)
        [ "$PERF_CALL_GRAPH" = dwarf ] && args=(--call-graph dwarf,16384)
        perf record -F 1999 "${args[@]}" -p "$pid" -o "$out.data" >"$out-record.log" 2>&1 &
        PERF_PID=$!
        sleep 1
        c0="$(cpu_ticks "$pid")"
        "${LOAD_CPU[@]}" timeout $((WRK_SECONDS + 30)) wrk -t1 -c16 -d"${WRK_SECONDS}s" "${URL[$p]}" >"$out-wrk.txt" 2>&1
        c1="$(cpu_ticks "$pid")"
        kill -INT "$PERF_PID"
        wait "$PERF_PID" || true
        PERF_PID=""
        local reqs us
        reqs="$(awk '/requests in/ { print $1 }' "$out-wrk.txt")"
        us="$(python3 -c "print(f'{($c1 - $c0) * 1e6 / $HZ / $reqs:.1f}')")"
        echo "$p under perf: $(awk '/^Requests\/sec:/ { print $2 }' "$out-wrk.txt") req/s, $us CPU-µs per request"
        perf script -i "$out.data" --no-inline -F ip,sym,dso 2>/dev/null \
            | python3 "$ROOT/bench/perf-breakdown.py" --us-per-request "$us" >"$out-breakdown.md" || true
        cat "$out-breakdown.md"
        perf_reports "$p" "$out"
    }
    # perf_reports PEER OUT: self and inclusive time by symbol from OUT.data into OUT-self.txt and
    # OUT-children.txt (trailing blanks trimmed, long generic names cut at 220 characters).
    perf_reports() {
        local p="$1" out="$2"
        perf report -i "$out.data" --no-children --sort symbol --stdio --percent-limit 0.5 \
            -g none 2>/dev/null | sed -e 's/ *[- ]*$//' -e '/^$/d' | cut -c1-220 >"$out-self.txt" || true
        perf report -i "$out.data" --children --sort symbol --stdio --percent-limit 1 \
            -g none 2>/dev/null | sed -e 's/ *[- ]*$//' -e '/^$/d' | cut -c1-220 >"$out-children.txt" || true
        echo "top self time ($p; the rest in $(basename "$out")-self.txt with KEEP=DIR):"
        grep -v '^#' "$out-self.txt" | sed -n 1,25p || true
    }
    # perf_profile_h2 PEER: syscalls per request and a profile during h2load.
    perf_profile_h2() {
        local p="$1" pid="${PID_OF[$1]}" c0 c1 out="$WORK/perf-h2-$1"
        say "perf stat (syscalls) and perf record -p $pid ($p) during h2load -c16 -m10 -t1 -D $H2_SECONDS"
        perf stat -x, -e "$events" -p "$pid" -o "$out-syscalls.csv" -- sleep $((H2_SECONDS + 2)) >/dev/null 2>&1 &
        local stat_pid=$!
        sleep 1
        c0="$(cpu_ticks "$pid")"
        "${LOAD_CPU[@]}" timeout $((H2_SECONDS + 30)) h2load -c16 -m10 -t1 -D "$H2_SECONDS" "${H2URL[$p]}" >"$out-load.txt" 2>&1 || true
        c1="$(cpu_ticks "$pid")"
        wait "$stat_pid" || true
        local reqs
        reqs="$(awk '/^requests:/ { print $8 }' "$out-load.txt")"
        echo "$p: $(awk '/^finished in/ { print $4 }' "$out-load.txt") req/s, $(python3 -c "print(f'{($c1 - $c0) * 1e6 / $HZ / $reqs:.1f}')") CPU-µs per request; per request:"
        python3 - "$out-syscalls.csv" "$reqs" <<'PYEOF'
import csv, sys
n = int(sys.argv[2])
for row in csv.reader(open(sys.argv[1])):
    if len(row) > 2 and row[0].strip().isdigit() and int(row[0]) > 0:
        print(f"  {row[2].replace('syscalls:sys_enter_', ''):<28} {int(row[0]) / n:8.3f}")
PYEOF
        local args=(-g)
        [ "$PERF_CALL_GRAPH" = dwarf ] && args=(--call-graph dwarf,16384)
        perf record -F 1999 "${args[@]}" -p "$pid" -o "$out.data" >"$out-record.log" 2>&1 &
        PERF_PID=$!
        sleep 1
        "${LOAD_CPU[@]}" timeout $((H2_SECONDS + 30)) h2load -c16 -m10 -t1 -D "$H2_SECONDS" "${H2URL[$p]}" >/dev/null 2>&1 || true
        kill -INT "$PERF_PID"
        wait "$PERF_PID" || true
        PERF_PID=""
        perf_reports "$p" "$out"
    }
    for p in graymesh haproxy nginx; do perf_profile "$p"; done
fi

# Metrics were on: what graymesh counted (every request of every phase above).
curl -s --max-time 5 "http://127.0.0.1:$GM_ADMIN/metrics" >"$WORK/proxy-metrics.txt" || true
say "graymesh /metrics: $(awk '/^graymesh_proxy_requests_total/ { n += $NF } END { printf "%d", n }' "$WORK/proxy-metrics.txt") requests counted; by destination: $(awk '/^graymesh_proxy_requests_total/ { match($0, /destination_service="[^"]*",destination_version="[^"]*"/); k = substr($0, RSTART, RLENGTH); gsub(/destination_service=|destination_version=|"/, "", k); c[k] += $NF } END { for (k in c) printf "%s=%d ", k, c[k] }' "$WORK/proxy-metrics.txt")"

# pilot shares CPU 1 with the load: it should be idle once the proxy is configured.
record kind=meta commit="$COMMIT$DIRTY" date="$(date -u '+%F %H:%M UTC')" \
    services="$((SERVICES + 2))" wrk_seconds="$WRK_SECONDS" oha_seconds="$OHA_SECONDS" pin="$PIN" \
    pilot_cpu_ms="$((($(cpu_ticks "$PILOT_PID") - PILOT_CPU0) * 1000 / HZ))" \
    loadavg="$(cut -d' ' -f1-3 /proc/loadavg)"
say "summary"
python3 "$ROOT/bench/proxy-peers-summary.py" "$RESULTS"
