#!/usr/bin/env bash
# bench/release.sh -- gray release: rollback latency across 10 sidecars, and failed requests
# during 100 consecutive full 0→100 weight shifts under load (issue 5).
#
#   bench/release.sh                     build (release), run both, print the figures (~4-6 min + build)
#   SKIP_BUILD=1 bench/release.sh        reuse target/release binaries
#   KEEP=DIR bench/release.sh            keep the logs of pilot and every sidecar, and the JSON, in DIR
#
# Knobs (environment): SIDECARS=10 ROUNDS=20 ROLLBACK_RATE=200 (req/s per sidecar)
#   SHIFTS=100 SHIFT_RATE=2500 (req/s in all) SHIFT_WORKERS=2 (connections per sidecar)
#   HOLD_MS=100 (each weight step of a shift held by a self-resuming suspend gate; 0: none)
#   TIMEOUT_S=30 (every wait) BUDGET_S=900 (the whole shift phase) NICE=5
#
# What it does: bench/release-load runs `graymesh pilot --config-dir` (a temp dir holding a
# ServiceEntry for reviews v1 + v2, two fake apps in the load process), SIDECARS client sidecars
# (`graymesh proxy --no-register --upstream reviews:9080=127.0.0.1:P`), keep-alive HTTP/1.1 load
# through each, and applies the Applications through pilot's config API (what `graymesh apply`
# sends), the rollback through `POST /v1/rollouts/default/reviews/rollback` (what
# `graymesh rollout rollback` sends). Not CI. Loopback only; every load loop is bounded in
# requests and time, every wait bounded; every process is killed and the temp dir removed on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
GM_BIN="${GM_BIN:-$TARGET_DIR/release/graymesh}"
LOAD_BIN="$TARGET_DIR/release/release-load"
NICE="${NICE:-5}"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/graymesh-release.XXXXXX")"
cleanup() {
    if [ -n "${KEEP:-}" ]; then
        mkdir -p "$KEEP" && cp -r "$WORK"/. "$KEEP"/ && echo "kept: $KEEP"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '\n==> %s\n' "$*"; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    say "cargo build --release -p graymesh -p graymesh-bench-release-load"
    nice -n 19 cargo build --release -p graymesh -p graymesh-bench-release-load
fi
[ -x "$GM_BIN" ] && [ -x "$LOAD_BIN" ] || { echo "missing $GM_BIN or $LOAD_BIN" >&2; exit 1; }

say "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- crates bench 2>/dev/null || echo ' (uncommitted changes)'); $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

say "release-load: ${SIDECARS:-10} sidecars, ${ROUNDS:-20} rollback rounds, ${SHIFTS:-100} shifts at ${SHIFT_RATE:-2500} req/s"
nice -n "$NICE" "$LOAD_BIN" --graymesh "$GM_BIN" --work "$WORK" \
    --sidecars "${SIDECARS:-10}" --rounds "${ROUNDS:-20}" --rollback-rate "${ROLLBACK_RATE:-200}" \
    --shifts "${SHIFTS:-100}" --shift-rate "${SHIFT_RATE:-2500}" --shift-workers "${SHIFT_WORKERS:-2}" --hold-ms "${HOLD_MS:-100}" \
    --timeout-s "${TIMEOUT_S:-30}" --budget-s "${BUDGET_S:-900}" --json "$WORK/release.json" >/dev/null

say "summary (load at the end: $(cut -d' ' -f1-3 /proc/loadavg))"
python3 - "$WORK/release.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
def row(*cells):
    print("| " + " | ".join(str(c) for c in cells) + " |")
def pct(p, unit=" ms"):
    return f"{p['p50']:.0f} / {p['p99']:.0f} / {p['max']:.0f}{unit}"
print("| figure | measured | aim / reference |")
print("|---|---|---|")
if "rollback" in r:
    b = r["rollback"]
    row(f"**rollback → every new request on v1, all {r['sidecars']} sidecars (max per round), p50 / p99 / max over {b['rounds']} rounds**",
        f"**{pct(b['overall_ms'])}**", "< 100 ms")
    row(f"same, per sidecar ({b['per_sidecar_ms']['n']} sidecar-rounds), p50 / p99 / max", pct(b["per_sidecar_ms"]), "")
    row("last request not answered by v1, after the command (max per round), p50 / p99 / max", pct(b["last_non_v1_ms"]),
        "lower bound of the figure above")
    row("rollback command answered by pilot, p50 / p99 / max", pct(b["command_reply_ms"]), "")
    row("v2 share at 50/50 just before the command, p50 (min–max)",
        f"{b['v2_share_before']['p50']:.2f} ({b['v2_share_before']['min']:.2f}–{b['v2_share_before']['max']:.2f})", "0.50")
    l = b["load"]
    row("load during the rounds: requests, failed, rate", f"{l['requests']:,}, {l['failed']}, {l['rate_per_s']:.0f} req/s", "")
    row("sidecars: routing tables installed / attempts retried during the rounds",
        f"{b['proxies']['tables_installed']:.0f} / {b['proxies']['retries']:.0f}", "")
    row("CPU during the rounds: pilot / all sidecars", f"{b['cpu_s']['pilot']:.1f} / {b['cpu_s']['sidecars']:.1f} CPU-s over {b['cpu_s']['wall']:.0f} s", "")
if "shifts" in r:
    s = r["shifts"]
    row(f"**failed requests during {s['shifts']} full shifts 0→100**",
        f"**{s['failed']} of {s['requests']:,} ({100 * s['error_ratio']:.4f} %)**",
        "0 (Flagger #256: 54 of 249,974)")
    row("achieved rate", f"{s['rate_per_s']:.0f} req/s over {s['seconds']:.0f} s", "≥ 2,000 req/s")
    row("answers by version (v1 / v2)", f"{s['answered_v1']:,} / {s['answered_v2']:,}", "")
    row("one shift (10 weight steps, each held by its gate, then promote), p50 / p99 / max", pct(s["shift_ms"]), "")
    row("sidecars: routing tables installed / attempts retried (Istio's default retry policy is on)",
        f"{s['proxies']['tables_installed']:.0f} / {s['proxies']['retries']:.0f}", "retried attempts hide nothing only if 0")
    row("CPU during the shifts: pilot / all sidecars", f"{s['cpu_s']['pilot']:.1f} / {s['cpu_s']['sidecars']:.1f} CPU-s over {s['cpu_s']['wall']:.0f} s", "")
    for f in s["shifts_with_failures"]:
        print(f"shift {f['shift']} ({f['from']}→{f['to']}, {f['applied_at_s']:.2f}–{f['promoted_at_s']:.2f} s): {f['failed']} failed")
    for f in s["first_failures"]:
        print("failure:", f)
if "rollback" in r:
    for f in r["rollback"]["load"]["first_failures"]:
        print("failure during the rollback rounds:", f)
PY
