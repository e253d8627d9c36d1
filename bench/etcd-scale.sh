#!/usr/bin/env bash
# bench/etcd-scale.sh -- the registry on etcd at scale: 10,000 instances registered with leases.
#
#   bench/etcd-scale.sh                  build (release), run, print the summary (~2 min + build)
#   SKIP_BUILD=1 bench/etcd-scale.sh     reuse target/release binaries
#   KEEP=DIR bench/etcd-scale.sh         keep pilot's log, etcd's log and the JSON in DIR
#   BEFORE_BIN=/path/graymesh bench/etcd-scale.sh   also measure the keep-alive figures of another
#                                        build (e.g. the one-stream-per-heartbeat pilot) on a fresh etcd
#
# Knobs (environment): INSTANCES=10000 SERVICES=100 TTL=10 (s; heartbeats every TTL/3)
#   CHANGED=1000 CONCURRENCY=64 STEADY_S=10 TIMEOUT_S=120 NICE=19 (niceness of etcd, pilot and
#   the load tool: 19 spares other work on a shared machine, but then any nice-0 CPU load --
#   a cargo build -- starves all three and the run measures the starvation, see bench/README.md)
#
# What it does: starts a real etcd (Debian etcd-server, installed if missing) on free loopback
# ports with a temp data dir, then bench/etcd-load, which runs `graymesh pilot --etcd`,
# registers the instances through pilot's registration API (as sidecars do: pilot grants and
# keeps the leases), heartbeats each every TTL/3, and measures etcd's request rate at steady
# state (from etcd's /metrics on its client URL), pilot's time to full sync after a restart
# (until /ready, and until an ADS client holds every endpoint), and the time from changing
# CHANGED instances at once (their port moves) to the ADS client holding the change. Not CI.
# Loopback only; every wait is bounded; etcd and pilot are stopped and the temp dir removed on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

INSTANCES="${INSTANCES:-10000}"
SERVICES="${SERVICES:-100}"
TTL="${TTL:-10}"
NICE="${NICE:-19}"
CHANGED="${CHANGED:-1000}"
CONCURRENCY="${CONCURRENCY:-64}"
STEADY_S="${STEADY_S:-10}"
TIMEOUT_S="${TIMEOUT_S:-120}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PILOT_BIN="${GM_BIN:-$TARGET_DIR/release/graymesh}"
LOAD_BIN="$TARGET_DIR/release/etcd-load"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/graymesh-etcd-scale.XXXXXX")"
ETCD_PID=""

stop_etcd() {
    if [ -n "$ETCD_PID" ] && kill -0 "$ETCD_PID" 2>/dev/null; then
        kill -TERM "$ETCD_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$ETCD_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$ETCD_PID" 2>/dev/null || true
    fi
    ETCD_PID=""
}

cleanup() {
    stop_etcd
    rm -rf "$WORK"/etcd-*.data # etcd's data dirs (tens of MB each): never kept
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

ETCD="$(command -v etcd || true)"
if [ -z "$ETCD" ]; then
    say "installing etcd (Debian etcd-server)"
    apt-get install -y etcd-server >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y etcd-server >/dev/null; }
    ETCD="$(command -v etcd)"
fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    say "cargo build --release -p graymesh -p graymesh-bench-etcd-load"
    nice -n 19 cargo build --release -p graymesh -p graymesh-bench-etcd-load
fi
[ -x "$PILOT_BIN" ] && [ -x "$LOAD_BIN" ] || { echo "missing $PILOT_BIN or $LOAD_BIN" >&2; exit 1; }

say "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- crates bench 2>/dev/null || echo ' (uncommitted changes)'); $("$ETCD" --version | head -1); $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "$NICE" -gt 0 ] && awk -v n="$(nproc)" '{ exit !($1 > n * 0.75) }' /proc/loadavg; then
    echo "warning: load average $(cut -d' ' -f1 /proc/loadavg) on $(nproc) cores: etcd, pilot and the load tool run at nice $NICE, so" \
        "other work starves them and the run measures that (NICE=0 to share the CPU fairly)" >&2
fi

# start_etcd NAME: a fresh etcd with its own data dir on free loopback ports; sets ETCD_URL.
start_etcd() {
    local client peer
    client="http://127.0.0.1:$(free_port)"
    peer="http://127.0.0.1:$(free_port)"
    nice -n "$NICE" "$ETCD" --name "bench" --data-dir "$WORK/etcd-$1.data" \
        --listen-client-urls "$client" --advertise-client-urls "$client" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "bench=$peer" >"$WORK/etcd-$1.log" 2>&1 &
    ETCD_PID=$!
    for _ in $(seq 100); do
        if curl -fsS "$client/health" 2>/dev/null | grep -q '"health":"true"'; then
            ETCD_URL="$client"
            return 0
        fi
        kill -0 "$ETCD_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "etcd did not become healthy within 10 s; log:" >&2
    tail -20 "$WORK/etcd-$1.log" >&2
    exit 1
}

# run_load NAME BIN [ARGS...]: etcd-load against a fresh etcd, JSON in $WORK/NAME.json.
run_load() {
    local name="$1" bin="$2"
    shift 2
    start_etcd "$name"
    say "$name: $INSTANCES instances, $SERVICES services, TTL ${TTL}s, pilot $bin"
    nice -n "$NICE" "$LOAD_BIN" --graymesh "$bin" --etcd "$ETCD_URL" \
        --xds-addr "127.0.0.1:$(free_port)" --http-addr "127.0.0.1:$(free_port)" \
        --pilot-log "$WORK/pilot-$name.log" --instances "$INSTANCES" --services "$SERVICES" \
        --ttl "$TTL" --changed "$CHANGED" --concurrency "$CONCURRENCY" --steady-s "$STEADY_S" \
        --timeout-s "$TIMEOUT_S" --json "$WORK/$name.json" "$@"
    stop_etcd
    rm -rf "$WORK/etcd-$name.data"
}

if [ -n "${BEFORE_BIN:-}" ]; then
    run_load before "$BEFORE_BIN" --keepalive-only
fi
run_load after "$PILOT_BIN"

say "summary"
python3 - "$WORK" "$INSTANCES" "$TTL" <<'PY'
import json, os, sys
work, instances, ttl = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
def load(name):
    path = os.path.join(work, name + ".json")
    return json.load(open(path)) if os.path.exists(path) else None
after, before = load("after"), load("before")
def keepalive(run):
    ka = run["steady"]["by_method"].get("LeaseKeepAlive", {})
    return ka, run["steady"]["all"], run["steady"]
def row(label, *cells):
    print(f"| {label} | " + " | ".join(str(c) for c in cells) + " |")
print("| figure | measured | aim / reference | ratio |")
print("|---|---|---|---|")
ka, total, steady = keepalive(after)
beats = steady["heartbeats_ok_per_s"]
msgs = ka.get("messages_received_per_s", 0.0)
row("heartbeats answered 204 per s (steady)", f"{beats:.0f} ({steady['heartbeats_failed_per_s']:.1f}/s failed)",
    f"{instances} / (TTL/3) = {instances / (ttl / 3):.0f}", "")
row("**LeaseKeepAlive streams opened per s**", f"**{ka.get('calls_started_per_s', 0.0):.1f}**",
    "aim: one stream per sidecar, not one request per instance per s", "")
row("LeaseKeepAlive streams open at the end", f"{steady['keep_alive_streams_open']:.0f}",
    f"{instances} sidecars", f"{steady['keep_alive_streams_open'] / instances:.4f} per sidecar")
row("**keep-alive messages received by etcd per s**", f"**{msgs:.0f}**",
    f"{instances}/s (one request per instance per s)", f"**{msgs / instances:.2f}×**")
row("all etcd gRPC calls started per s / messages received per s",
    f"{total['calls_started_per_s']:.1f} / {total['messages_received_per_s']:.0f}", "", "")
row("pilot CPU at steady state", f"{steady['pilot_cpu_per_s']:.3f} CPU-s per s", "", "")
if before:
    bka, btotal, bsteady = keepalive(before)
    bmsgs = bka.get("messages_received_per_s", 0.0)
    bstreams = bka.get("calls_started_per_s", 0.0)
    row("before (BEFORE_BIN): streams opened per s / messages per s", f"{bstreams:.1f} / {bmsgs:.0f}",
        "", f"after ÷ before: streams {ka.get('calls_started_per_s', 0.0) / max(bstreams, 1e-9):.4f}×, messages {msgs / max(bmsgs, 1e-9):.2f}×")
    row("before: all etcd gRPC calls started per s", f"{btotal['calls_started_per_s']:.1f}", "",
        f"after ÷ before: {total['calls_started_per_s'] / max(btotal['calls_started_per_s'], 1e-9):.4f}×")
    row("before: pilot CPU at steady state", f"{bsteady['pilot_cpu_per_s']:.3f} CPU-s per s", "",
        f"after ÷ before: {steady['pilot_cpu_per_s'] / max(bsteady['pilot_cpu_per_s'], 1e-9):.2f}×")
row("registering all instances through pilot", f"{after['register_s']:.1f} s", "", "")
if "restart" in after:
    r = after["restart"]
    row("**pilot restart → /ready**", f"**{r['ready_s']:.2f} s**", "", "")
    row("**pilot restart → ADS client holds all endpoints**", f"**{r['ads_holds_all_s']:.2f} s**", "", "")
    row("pilot CPU / RSS at that point", f"{r['pilot_cpu_s']:.2f} CPU-s / {r['pilot_rss_mib']:.0f} MiB", "", "")
if "change" in after:
    c = after["change"]
    row(f"**{c['changed']} instances changed at once → ADS client has all**", f"**{c['edit_to_ads_s']:.2f} s**",
        "within TTL + push time", "")
    row("of which the registration calls took", f"{c['api_calls_s']:.2f} s", "", "")
    row("pilot CPU for the change", f"{c['pilot_cpu_s']:.2f} CPU-s", "", "")
print("heartbeats over the whole run:", after["heartbeats"], "; pilot RSS at the end", f"{after['pilot_rss_mib_end']:.0f} MiB")
PY
