#!/usr/bin/env python3
"""Summary table of bench/proxy-peers.sh: reads its results.jsonl, prints figures and ratios
against the targets (the issue's and shared/BENCHMARKING.md's).

    proxy-peers-summary.py RESULTS_JSONL
"""

import json
import os
import sys

PEERS = ["direct", "graymesh", "haproxy", "nginx"]


def load(path):
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    return rows


def oha_figures(row, base):
    # The file sits beside results.jsonl (the run's work dir, or its KEEP copy).
    d = json.load(open(os.path.join(base, os.path.basename(row["file"])), encoding="utf-8"))
    codes = d.get("statusCodeDistribution", {})
    n = sum(codes.values())
    ok = codes.get("200", 0)
    lp = d["latencyPercentiles"]
    return {
        "n": n,
        "ok": ok,
        "p50": lp["p50"] * 1000,
        "p99": lp["p99"] * 1000,
        "cpu_per_k": row["cpu_ms"] / n * 1000 if n else None,
        "user_per_k": row["user_ms"] / n * 1000 if n and "user_ms" in row else None,
        "rss": row["rss_kib"],
        # oha counts requests cut off at the end of -z as errors: not the peer's fault.
        "errors": sum(v for k, v in d.get("errorDistribution", {}).items()
                      if k != "aborted due to deadline"),
    }


def fmt(x, spec="{:.0f}", none="—"):
    return none if x is None else spec.format(x)


def mb(kib):
    return kib * 1024 / 1e6


def main():
    rows = load(sys.argv[1])
    meta = next((r for r in rows if r["kind"] == "meta"), {})
    wrk = {p: [r for r in rows if r["kind"] == "wrk" and r["peer"] == p] for p in PEERS}
    h2 = {p: [r for r in rows if r["kind"] == "h2load" and r["peer"] == p] for p in PEERS}
    rates = sorted({r["rate"] for r in rows if r["kind"] == "oha"})
    oha = {
        (r["peer"], r["rate"]): oha_figures(r, os.path.dirname(os.path.abspath(sys.argv[1])))
        for r in rows if r["kind"] == "oha"
    }
    idle = {r["peer"]: r["kib"] for r in rows if r["kind"] == "rss_idle"}
    idle_split = {r["peer"]: (r.get("anon", 0), r.get("file", 0))
                  for r in rows if r["kind"] == "rss_idle"}

    wrk_sum = {p: sum(r["rps"] for r in wrk[p]) for p in PEERS}
    wrk_cpu = {
        p: (sum(r["cpu_ms"] for r in wrk[p]) / sum(r["requests"] for r in wrk[p]) * 1000)
        if p != "direct" and wrk[p] else None
        for p in PEERS
    }
    wrk_user = {
        p: (sum(r.get("user_ms", 0) for r in wrk[p]) / sum(r["requests"] for r in wrk[p]) * 1000)
        if p != "direct" and wrk[p] and all("user_ms" in r for r in wrk[p]) else None
        for p in PEERS
    }
    h2_sum = {p: sum(r["rps"] for r in h2[p]) for p in PEERS}
    lo, hi = (rates[0], rates[-1]) if rates else (None, None)

    print(f"commit {meta.get('commit', '?')}, {meta.get('date', '?')}; graymesh with "
          f"{meta.get('services', '?')} services configured; pinned: {meta.get('pin', '?')}; "
          f"pilot CPU during the run: {meta.get('pilot_cpu_ms', '?')} ms; "
          f"load average at the end: {meta.get('loadavg', '?')}")
    print()
    hi_k = f"{hi // 1000}k" if hi else "?"
    print("| peer | wrk req/s, mean (round 1, 2) | graymesh ÷ peer | CPU-ms/1k at peak (user / sys) "
          f"| RSS idle MB (anon + file) | RSS end of {hi_k} MB | h2load req/s, mean (round 1, 2) "
          "| graymesh ÷ peer (h2) | h2 CPU-ms/1k |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p in PEERS:
        cells = []
        rounds = ", ".join(f"{r['rps']:.0f}" for r in wrk[p])
        cells.append(f"{wrk_sum[p] / max(len(wrk[p]), 1):.0f} ({rounds})")
        cells.append("—" if p == "graymesh" or not wrk_sum[p]
                     else f"{wrk_sum['graymesh'] / wrk_sum[p]:.2f}×")
        cells.append("—" if wrk_cpu[p] is None else f"{wrk_cpu[p]:.0f}" if wrk_user[p] is None else
                     f"{wrk_cpu[p]:.0f} ({wrk_user[p]:.0f} / {wrk_cpu[p] - wrk_user[p]:.0f})")
        cells.append(f"{mb(idle[p]):.1f} ({mb(idle_split[p][0]):.1f} + {mb(idle_split[p][1]):.1f})"
                     if p in idle else "—")
        end = oha.get((p, hi))
        cells.append(f"{mb(end['rss']):.1f}" if end and p != "direct" else "—")
        h2r = ", ".join(f"{r['rps']:.0f}" for r in h2[p])
        cells.append(f"{h2_sum[p] / max(len(h2[p]), 1):.0f} ({h2r})" if h2_sum[p]
                     else f"no h2c prior knowledge ({h2r})")
        cells.append("—" if p == "graymesh" or not h2_sum[p]
                     else f"{h2_sum['graymesh'] / h2_sum[p]:.2f}×")
        h2_ok = sum(r["succeeded"] for r in h2[p])
        cells.append(fmt(sum(r["cpu_ms"] for r in h2[p]) / h2_ok * 1000)
                     if p != "direct" and h2_ok else "—")
        print(f"| {p} | " + " | ".join(cells) + " |")
    print()
    print("| peer | rate req/s | p50 / p99 ms | added vs direct p50 / p99 ms | CPU-ms/1k "
          "| of which user / sys |")
    print("|---|---|---|---|---|---|")
    for rate in rates:
        d = oha.get(("direct", rate))
        for p in PEERS:
            f = oha.get((p, rate))
            if not f:
                continue
            added = ("—" if p == "direct" or not d
                     else f"{f['p50'] - d['p50']:+.3f} / {f['p99'] - d['p99']:+.3f}")
            cpu = "—" if p == "direct" else fmt(f["cpu_per_k"])
            split = ("—" if p == "direct" or f["user_per_k"] is None else
                     f"{f['user_per_k']:.0f} / {f['cpu_per_k'] - f['user_per_k']:.0f}")
            print(f"| {p} | {rate} | {f['p50']:.3f} / {f['p99']:.3f} | {added} | {cpu} | {split} |")
    print()
    print("Ratios are ratios of sums over the two rounds. CPU-ms/1k: the proxy process's "
          "utime+stime per 1,000 responses (nginx: its one worker). nginx's h2c port forwards "
          "as HTTP/1.1 (nginx has no HTTP/2 to upstreams); graymesh and HAProxy forward h2c as h2c.")

    sys_rows = [r for r in rows if r["kind"] == "syscalls"]
    if sys_rows:
        base = os.path.dirname(os.path.abspath(sys.argv[1]))
        per = {}
        for r in sys_rows:
            d = json.load(open(os.path.join(base, os.path.basename(r["oha"])), encoding="utf-8"))
            n = sum(d.get("statusCodeDistribution", {}).values())
            counts = {}
            for line in open(os.path.join(base, os.path.basename(r["file"])), encoding="utf-8"):
                f = line.strip().split(",")
                if len(f) < 3 or line.startswith("#") or not f[0].replace(".", "").isdigit():
                    continue
                counts[f[2].replace("syscalls:sys_enter_", "")] = float(f[0])
            per[r["peer"]] = {k: v / n for k, v in counts.items()} if n else {}
        names = sorted({k for c in per.values() for k, v in c.items() if v >= 0.01},
                       key=lambda k: -max(c.get(k, 0) for c in per.values()))
        names = ["raw_syscalls:sys_enter", "context-switches"] + [
            k for k in names if k not in ("raw_syscalls:sys_enter", "context-switches")]
        peers = [p for p in PEERS if p in per]
        print("\nPer request at 5,000 req/s (perf stat -p PID; raw_syscalls:sys_enter = all syscalls):\n")
        print("| per request | " + " | ".join(peers) + " |")
        print("|---|" + "---|" * len(peers))
        for k in names:
            print(f"| {k} | " + " | ".join(f"{per[p].get(k, 0):.2f}" for p in peers) + " |")
        print()

    bad = []
    for (p, rate), f in sorted(oha.items()):
        if f["ok"] != f["n"] or f["errors"]:
            bad.append(f"{p} at {rate}: {f['ok']} of {f['n']} were 200, {f['errors']} errors")
    for p in PEERS:
        for r in wrk[p]:
            if r.get("errors") or r.get("non2xx"):
                bad.append(f"wrk {p} round {r['round']}: {r['errors']} socket errors, "
                           f"{r['non2xx']} non-2xx")
        for r in h2[p]:
            if r.get("failed"):
                bad.append(f"h2load {p} round {r['round']}: {r['failed']} failed/errored")
    if bad:
        print("\nNOT CLEAN: " + "; ".join(bad))

    # Targets.
    print("\n| target | graymesh | reference | verdict |")
    print("|---|---|---|---|")

    def row(name, value, ref, ok):
        print(f"| {name} | {value} | {ref} | {'met' if ok else 'MISSED'} |")

    if wrk_sum["haproxy"]:
        r = wrk_sum["graymesh"] / wrk_sum["haproxy"]
        row("peak throughput ≥ 1.0× HAProxy (aim 1.3×)", f"{r:.2f}×",
            f"HAProxy {wrk_sum['haproxy'] / 2:.0f} req/s", r >= 1.0)
    for rate in rates:
        g, h = oha.get(("graymesh", rate)), oha.get(("haproxy", rate))
        if g and h and g["cpu_per_k"] and h["cpu_per_k"]:
            r = g["cpu_per_k"] / h["cpu_per_k"]
            row(f"CPU-ms/1k at {rate // 1000}k req/s ≤ 0.75× HAProxy", f"{g['cpu_per_k']:.0f} ({r:.2f}×)",
                f"HAProxy {h['cpu_per_k']:.0f}, nginx {fmt(oha.get(('nginx', rate), {}).get('cpu_per_k'))}",
                r <= 0.75)
    if lo is not None:
        g, d, h = oha.get(("graymesh", lo)), oha.get(("direct", lo)), oha.get(("haproxy", lo))
        if g and d and h:
            a50, a99 = g["p50"] - d["p50"], g["p99"] - d["p99"]
            h50, h99 = h["p50"] - d["p50"], h["p99"] - d["p99"]
            row(f"added p50 at {lo // 1000}k req/s ≤ 0.05 ms (issue; BENCHMARKING: ≤ 0.15 ms)",
                f"{a50:+.3f} ms", f"HAProxy {h50:+.3f} ms", a50 <= 0.05)
            row(f"added p99 at {lo // 1000}k req/s ≤ 0.2 ms (issue; BENCHMARKING: ≤ HAProxy's)",
                f"{a99:+.3f} ms", f"HAProxy {h99:+.3f} ms", a99 <= 0.2)
    if "graymesh" in idle:
        row(f"RSS idle with {meta.get('services', '?')} services ≤ 15 MB", f"{mb(idle['graymesh']):.1f} MB",
            f"HAProxy {mb(idle['haproxy']):.1f}, nginx worker {mb(idle['nginx']):.1f} MB (1 service)",
            mb(idle["graymesh"]) <= 15)
    end = oha.get(("graymesh", hi))
    if end:
        row(f"RSS at end of {hi // 1000}k req/s ≤ 30 MB", f"{mb(end['rss']):.1f} MB",
            f"HAProxy {mb(oha[('haproxy', hi)]['rss']):.1f}, nginx {mb(oha[('nginx', hi)]['rss']):.1f} MB",
            mb(end["rss"]) <= 30)
    if h2_sum["haproxy"]:
        r = h2_sum["graymesh"] / h2_sum["haproxy"]
        row("h2load (h2c) ≥ 1.0× HAProxy", f"{r:.2f}×", f"HAProxy {h2_sum['haproxy'] / 2:.0f} req/s", r >= 1.0)


if __name__ == "__main__":
    main()
