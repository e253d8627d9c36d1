#!/usr/bin/env bash
# bench/proxy-callgrind.sh -- instructions per proxied request of the graymesh proxy, under
# valgrind's callgrind: a steadier figure than CPU time on a shared machine, and a profile.
#
#   bench/proxy-callgrind.sh                 h2load (HTTP/2) through the proxy, 20,000 requests
#   PROTO=h1 bench/proxy-callgrind.sh        wrk-free HTTP/1.1 variant: h2load --h1
#   GM_BIN=PATH N=20000 OUT=FILE bench/proxy-callgrind.sh
#
# Runs: nginx `return 200` upstream (v1 and v2 h2c server blocks, or HTTP/1.1 for PROTO=h1),
# `graymesh pilot --config-dir` with one ServiceEntry/DestinationRule/VirtualService (the
# `x-canary` match and the 90/10 split of bench/proxy-peers.sh), and `graymesh proxy
# --concurrency 1` under callgrind. 2,000 requests warm up, counters are zeroed, N requests
# (h2load -c16 -m10 -t1) are measured, the counters dumped. Prints instructions per request and
# the top of the inclusive profile; the callgrind file is kept (OUT, default
# /tmp/graymesh-callgrind.out). Loopback only; everything started is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GM_BIN="${GM_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/graymesh}"
N="${N:-20000}"
PROTO="${PROTO:-h2}"
OUT="${OUT:-/tmp/graymesh-callgrind.out}"
for t in nginx h2load valgrind callgrind_control callgrind_annotate curl python3; do
    command -v "$t" >/dev/null || { echo "error: $t is missing (apt-get install nginx-light nghttp2-client valgrind)" >&2; exit 1; }
done
[ -x "$GM_BIN" ] || { echo "error: missing $GM_BIN (cargo build --release -p graymesh)" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/graymesh-callgrind.XXXXXX")"
PIDS=()
cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

mapfile -t P < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(7)]
for s in ss: s.bind(("127.0.0.1", 0))
for s in ss: print(s.getsockname()[1])')
UP1="${P[0]}" UP2="${P[1]}" XDS="${P[2]}" HTTP="${P[3]}" GM="${P[4]}" ADMIN="${P[5]}" OUTB="${P[6]}"

if [ "$PROTO" = h2 ]; then LISTEN="http2"; PORT_NAME=http2; PROTOCOL=HTTP2; H2LOAD=(); else
    LISTEN=""; PORT_NAME=http; PROTOCOL=HTTP; H2LOAD=(--h1); fi
mkdir -p "$WORK/upstream/logs" "$WORK/config"
cat >"$WORK/upstream/nginx.conf" <<EOF
worker_processes 1;
error_log $WORK/upstream/logs/error.log warn;
pid $WORK/upstream/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    server { listen 127.0.0.1:$UP1 $LISTEN; location / { return 200 "v1\n"; } }
    server { listen 127.0.0.1:$UP2 $LISTEN; location / { return 200 "v2\n"; } }
}
EOF
HOST=bench.default.svc.cluster.local
cat >"$WORK/config/bench.yaml" <<EOF
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: bench, namespace: default}
spec:
  hosts: [$HOST]
  location: MESH_INTERNAL
  ports: [{number: 8080, name: $PORT_NAME, protocol: $PROTOCOL}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {$PORT_NAME: $UP1}, labels: {version: v1}}
  - {address: 127.0.0.1, ports: {$PORT_NAME: $UP2}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bench, namespace: default}
spec:
  host: $HOST
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bench, namespace: default}
spec:
  hosts: [$HOST]
  http:
  - name: canary
    match: [{headers: {x-canary: {exact: "true"}}}]
    route: [{destination: {host: $HOST, subset: v2}}]
  - name: split
    route:
    - {destination: {host: $HOST, subset: v1}, weight: 90}
    - {destination: {host: $HOST, subset: v2}, weight: 10}
EOF

nginx -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
"$GM_BIN" pilot --config-dir "$WORK/config" --xds-addr "127.0.0.1:$XDS" --http-addr "127.0.0.1:$HTTP" \
    >"$WORK/pilot.log" 2>&1 &
PIDS+=($!)
valgrind --tool=callgrind --callgrind-out-file="$OUT" --dump-instr=no "$GM_BIN" proxy \
    --pilot "127.0.0.1:$XDS" --node-id bench-1 --upstream "bench:8080=127.0.0.1:$GM" \
    --admin-addr "127.0.0.1:$ADMIN" --outbound-addr "127.0.0.1:$OUTB" --no-register --concurrency 1 \
    >"$WORK/proxy.log" 2>&1 &
PROXY=$!
PIDS+=("$PROXY")
CURL=(--http2-prior-knowledge)
[ "$PROTO" = h2 ] || CURL=()
ok=0
for _ in $(seq 200); do
    if [ "$(curl -s "${CURL[@]}" -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$GM/")" = 200 ]; then
        ok=1; break
    fi
    sleep 0.3
done
[ "$ok" = 1 ] || { echo "error: the proxy did not answer: $(tail -5 "$WORK/proxy.log")" >&2; exit 1; }
timeout 120 h2load "${H2LOAD[@]}" -c16 -m10 -t1 -n 2000 "http://127.0.0.1:$GM/" >/dev/null
callgrind_control -z "$PROXY" >/dev/null
timeout 600 h2load "${H2LOAD[@]}" -c16 -m10 -t1 -n "$N" "http://127.0.0.1:$GM/" | grep -E '^requests:'
callgrind_control -d "$PROXY" >/dev/null
sleep 1
DUMP="$(ls -t "$OUT".* | head -1)"
total="$(callgrind_annotate "$DUMP" | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')"
echo "$("$GM_BIN" --version 2>/dev/null || echo graymesh), $PROTO: $((total / N)) instructions per request ($total for $N; $DUMP)"
callgrind_annotate --inclusive=yes "$DUMP" | grep -E 'graymesh_proxy|h2::hpack|h2::(server|client)::Connection' \
    | sed -n 1,15p | cut -c1-160
