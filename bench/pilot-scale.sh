#!/usr/bin/env bash
# bench/pilot-scale.sh -- pilot at scale: 1,000 services, 10,000 endpoints, 1,000 xDS streams.
#
#   bench/pilot-scale.sh                 build (release), generate, run, print the summary
#   SKIP_BUILD=1 bench/pilot-scale.sh    reuse target/release binaries
#   KEEP=DIR bench/pilot-scale.sh        keep config, pilot log, metrics and JSON in DIR
#
# Knobs (environment): SERVICES=1000 ENDPOINTS=10 (per service) STREAMS=1000
#   STREAMS_PER_CONNECTION=100 TIMEOUT_S=60 (each wait of the load client)
#   PIN=1 (pilot on CPU 0, load client on CPU 1; PIN=0 lets both float)
#   DEBOUNCE_MS= (empty: pilot's default) PERF=0 (1: perf-record pilot from /ready to the end;
#   PERF_CALL_GRAPH=dwarf for callers, keep perf.data with KEEP=DIR)
#
# What it does: generates the config (bench/gen-config.py) into a temp dir, starts
# `graymesh pilot` on free loopback ports, waits for /ready, runs bench/xds-load (N ADS streams
# that follow LDS→RDS→CDS→EDS and ACK everything; it performs the edits itself and times them),
# samples pilot's CPU (utime+stime) and memory (VmRSS, VmHWM) from /proc, scrapes /metrics, and
# prints a summary with ratios against the targets: edit→last ACK p99 < 1 s, RSS < 300 MB, and
# istiod's published 1 vCPU / 1.5 GB for 1,000 services. Loopback only; every wait is bounded;
# pilot is stopped and the temp dir removed on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SERVICES="${SERVICES:-1000}"
ENDPOINTS="${ENDPOINTS:-10}"
STREAMS="${STREAMS:-1000}"
STREAMS_PER_CONNECTION="${STREAMS_PER_CONNECTION:-100}"
TIMEOUT_S="${TIMEOUT_S:-60}"
PIN="${PIN:-1}"
DEBOUNCE_MS="${DEBOUNCE_MS:-}"
PERF="${PERF:-0}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PILOT_BIN="$TARGET_DIR/release/graymesh"
LOAD_BIN="$TARGET_DIR/release/xds-load"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/graymesh-pilot-scale.XXXXXX")"
PILOT_PID=""
PERF_PID=""

cleanup() {
    if [ -n "$PERF_PID" ] && kill -0 "$PERF_PID" 2>/dev/null; then
        kill -INT "$PERF_PID" 2>/dev/null || true
    fi
    if [ -n "$PILOT_PID" ] && kill -0 "$PILOT_PID" 2>/dev/null; then
        kill -TERM "$PILOT_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$PILOT_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PILOT_PID" 2>/dev/null || true
    fi
    if [ -n "${KEEP:-}" ]; then
        mkdir -p "$KEEP" && cp -r "$WORK"/. "$KEEP"/ && echo "kept: $KEEP"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '\n==> %s\n' "$*"; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# proc_sample PID: "cpu_seconds rss_kib hwm_kib" (utime+stime at USER_HZ=100).
proc_sample() {
    local cpu rss hwm
    cpu="$(awk '{ sub(/^.*\) /, ""); print ($12 + $13) / 100 }' "/proc/$1/stat")"
    rss="$(awk '/^VmRSS:/ { print $2 }' "/proc/$1/status")"
    hwm="$(awk '/^VmHWM:/ { print $2 }' "/proc/$1/status")"
    echo "$cpu $rss $hwm"
}

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    say "cargo build --release -p graymesh -p graymesh-bench-xds-load"
    cargo build --release -p graymesh -p graymesh-bench-xds-load
fi
[ -x "$PILOT_BIN" ] && [ -x "$LOAD_BIN" ] || { echo "missing $PILOT_BIN or $LOAD_BIN" >&2; exit 1; }
[ "${SKIP_BUILD:-0}" = 1 ] && echo "not rebuilt: $PILOT_BIN is from $(date -r "$PILOT_BIN" '+%F %H:%M')"

say "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- crates 2>/dev/null || echo ' (crates/ has uncommitted changes)'); $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 2^20 }' /proc/meminfo)"

say "config: $SERVICES services × $ENDPOINTS endpoints"
python3 bench/gen-config.py --out "$WORK/config" --edits "$WORK/edits" \
    --services "$SERVICES" --endpoints "$ENDPOINTS"

PIN_PILOT=(); PIN_LOAD=()
if [ "$PIN" = 1 ]; then PIN_PILOT=(taskset -c 0); PIN_LOAD=(taskset -c 1); fi
XDS_PORT="$(free_port)"; HTTP_PORT="$(free_port)"
PILOT_ARGS=(pilot --config-dir "$WORK/config" --xds-addr "127.0.0.1:$XDS_PORT"
    --http-addr "127.0.0.1:$HTTP_PORT")
[ -n "$DEBOUNCE_MS" ] && PILOT_ARGS+=(--debounce-ms "$DEBOUNCE_MS")

say "pilot ${PIN_PILOT[*]} $PILOT_BIN ${PILOT_ARGS[*]}"
START_NS="$(date +%s%N)"
"${PIN_PILOT[@]}" "$PILOT_BIN" "${PILOT_ARGS[@]}" >"$WORK/pilot.log" 2>&1 &
PILOT_PID=$!
ready=0
for _ in $(seq 1200); do   # 120 s
    kill -0 "$PILOT_PID" 2>/dev/null || { cat "$WORK/pilot.log" >&2; echo "pilot died" >&2; exit 1; }
    if curl -sf -m 1 "http://127.0.0.1:$HTTP_PORT/ready" >/dev/null 2>&1; then ready=1; break; fi
    sleep 0.1
done
[ "$ready" = 1 ] || { echo "pilot not ready after 120 s" >&2; exit 1; }
READY_S="$(awk -v a="$START_NS" -v b="$(date +%s%N)" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')"
read -r READY_CPU READY_RSS READY_HWM < <(proc_sample "$PILOT_PID")
echo "ready after ${READY_S} s; CPU ${READY_CPU} s; RSS $((READY_RSS / 1024)) MiB"

if [ "$PERF" = 1 ] && ! command -v perf >/dev/null 2>&1; then
    echo "PERF=1 but perf is not installed (apt-get install linux-perf): no profile"
elif [ "$PERF" = 1 ]; then
    perf record -F 499 --call-graph "${PERF_CALL_GRAPH:-fp}" -p "$PILOT_PID" -o "$WORK/perf.data" \
        >"$WORK/perf.log" 2>&1 &
    PERF_PID=$!
fi

say "xds-load: $STREAMS streams over $(( (STREAMS + STREAMS_PER_CONNECTION - 1) / STREAMS_PER_CONNECTION )) connections, then 3 edits"
set +e
timeout -k 10 $(( TIMEOUT_S * 5 + 60 )) "${PIN_LOAD[@]}" "$LOAD_BIN" \
    --xds "127.0.0.1:$XDS_PORT" --streams "$STREAMS" --services "$SERVICES" \
    --streams-per-connection "$STREAMS_PER_CONNECTION" --timeout-s "$TIMEOUT_S" \
    --pilot-pid "$PILOT_PID" --metrics-addr "127.0.0.1:$HTTP_PORT" \
    --edit-file "$WORK/config/virtual-services.yaml" \
    --edit-content-file "$WORK/edits/1-all-50-50.yaml" --edited all \
    --edit-content-file "$WORK/edits/2-svc-0-70-30.yaml" --edited 0 \
    --edit-content-file "$WORK/edits/3-all-90-10.yaml" --edited all \
    --json "$WORK/load.json"
LOAD_RC=$?
set -e
read -r END_CPU END_RSS END_HWM < <(proc_sample "$PILOT_PID")
curl -sf -m 5 "http://127.0.0.1:$HTTP_PORT/metrics" >"$WORK/metrics.txt" || true
if [ -n "$PERF_PID" ]; then
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=""
    perf report -i "$WORK/perf.data" --no-children -g none --percent-limit 1 --stdio 2>/dev/null \
        | grep -v -e '^$' -e '^#' | head -40 >"$WORK/perf-top.txt" || true
fi
[ -f "$WORK/load.json" ] || { echo "xds-load wrote no figures (exit $LOAD_RC)" >&2; exit 1; }

say "summary"
python3 bench/pilot-scale-summary.py --work "$WORK" --pinned "$PIN" --ready-s "$READY_S" \
    --ready "$READY_CPU $READY_RSS $READY_HWM" --end "$END_CPU $END_RSS $END_HWM" \
    --load-exit "$LOAD_RC" | tee "$WORK/summary.txt"
grep -E '^graymesh_xds_(push_latency_seconds_(sum|count)|connected_clients|pushes_total|nacks_total)' \
    "$WORK/metrics.txt" 2>/dev/null | sed 's/^/  metrics: /' || true
[ -f "$WORK/perf-top.txt" ] && { echo; echo "perf (pilot, self time ≥ 1 %):"; cat "$WORK/perf-top.txt"; }
exit "$LOAD_RC"
