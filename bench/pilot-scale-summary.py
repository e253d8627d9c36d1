#!/usr/bin/env python3
"""Summarize one run of bench/pilot-scale.sh: its figures, and ratios against the targets.

Reads WORK/load.json (written by xds-load) and WORK/pilot.log (for the times pilot published a
new generation); the rest comes in as arguments from the script. Prints text only.
"""

import argparse
import datetime
import json
import re

TARGET_P99_S = 1.0
TARGET_RSS_MIB = 300e6 / 2**20  # "300 MB"
ISTIOD_MEM_MIB = 1.5e9 / 2**20  # istiod: 1 vCPU and 1.5 GB for 1,000 services / 2,000 sidecars
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def published_times(log_path):
    """Unix times of pilot's "published new generation" log lines."""
    times = []
    with open(log_path, errors="replace") as f:
        for line in f:
            line = ANSI.sub("", line)
            if "published new generation" not in line:
                continue
            stamp = re.sub(r"\.(\d{6})\d*", r".\1", line.split()[0]).replace("Z", "+00:00")
            times.append(datetime.datetime.fromisoformat(stamp).timestamp())
    return times


def fmt_pct(p):
    if not p:
        return "no samples"
    return (f"p50 {p['p50_ms']:.0f} ms, p90 {p['p90_ms']:.0f} ms, p99 {p['p99_ms']:.0f} ms, "
            f"max {p['max_ms']:.0f} ms")


def print_edit(e, published):
    name = e["content_file"].rsplit("/", 1)[-1]
    after = [t - e["edited_unix_s"] for t in published if t >= e["edited_unix_s"]]
    pub_ms = after[0] * 1000 if after else None
    first, ack = e["first_received_ms"], e["ack_after_edit_ms"]
    print(f"\nedit {name}: {e['got_new_route']}/{e['expected_streams']} concerned streams "
          f"ACKed the new route")
    if pub_ms is not None:
        print(f"  edit → pilot published the new generation  {pub_ms:8.0f} ms"
              "  (file watch + reload + 2 × debounce)")
        if first is not None:
            print(f"  published → first stream has the route    {first - pub_ms:8.0f} ms"
                  "  (translation)")
    if first is not None and ack:
        print(f"  first → last ACK                           {ack['max_ms'] - first:8.0f} ms"
              "  (fan-out to the concerned streams)")
    print(f"  edit → ACK                                 {fmt_pct(ack)}")
    print(f"  pilot CPU, edit → last ACK                 {e['pilot_cpu_to_last_ack_s']} s")
    idle = e.get("pilot_cpu_while_idle_before_s")
    if idle is not None:
        note = "  ← pilot was busy with no edit and no client activity" if idle > 0.2 else ""
        print(f"  pilot CPU while idle just before the edit  {idle} s (settle pause){note}")
    print(f"  responses after the edit                   {e['responses_after_edit']}, "
          f"{e['responses_to_unconcerned_streams']} to unconcerned streams")
    print(f"  pilot RSS after                            {e['pilot']['rss_mib']:.1f} MiB")
    h = e["pilot_push_latency"]
    if h:
        print(f"  pilot's push-latency histogram             {h['pushes']} pushes, "
              f"mean {h['mean_s']} s, p99 ≤ {h['p99_le_s']} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--pinned", default="1")
    ap.add_argument("--ready-s", type=float, required=True)
    ap.add_argument("--ready", required=True, help="'cpu_s rss_kib hwm_kib' at /ready")
    ap.add_argument("--end", required=True, help="'cpu_s rss_kib hwm_kib' after the load")
    ap.add_argument("--load-exit", default="0")
    args = ap.parse_args()
    with open(f"{args.work}/load.json") as f:
        d = json.load(f)
    published = published_times(f"{args.work}/pilot.log")
    ready_cpu, ready_rss, _ = (float(x) for x in args.ready.split())
    end_cpu, end_rss, end_hwm = (float(x) for x in args.end.split())
    pin = "pilot on CPU 0, xds-load on CPU 1" if args.pinned == "1" else "not pinned"
    print(f"scale: {d['services']} services, {d['streams']} ADS streams over "
          f"{d['connections']} HTTP/2 connections ({pin})")
    print(f"pilot startup: /ready after {args.ready_s:.2f} s, CPU {ready_cpu:.2f} s, "
          f"RSS {ready_rss / 1024:.1f} MiB")
    s = d["initial_sync"]
    print(f"initial sync: {s['synced']}/{d['streams']} streams had LDS+RDS+CDS+EDS after "
          f"{s['all_synced_s']} s; per stream {fmt_pct(s['per_stream_ms'])}; "
          f"pilot CPU {s['pilot_cpu_s']} s; RSS {s['pilot']['rss_mib']:.1f} MiB")
    for e in d["edits"]:
        print_edit(e, published)
    print_targets(d, end_cpu, end_rss, end_hwm)
    print(f"\nxds-load exit status: {args.load_exit}")


def print_targets(d, end_cpu, end_rss, end_hwm):
    full = [e for e in d["edits"]
            if e["expected_streams"] == d["streams"] and e["ack_after_edit_ms"]]
    print("\n== against the targets ==")
    for e in full:
        p99 = e["ack_after_edit_ms"]["p99_ms"] / 1000
        print(f"full push ({e['content_file'].rsplit('/', 1)[-1]}): edit → last-ACK p99 "
              f"{p99:.2f} s = {p99 / TARGET_P99_S:.1f}× the 1 s target; "
              f"CPU {e['pilot_cpu_to_last_ack_s']} CPU-s")
    hwm, rss = end_hwm / 1024, end_rss / 1024
    print(f"pilot memory: peak (VmHWM) {hwm:.1f} MiB, now {rss:.1f} MiB = "
          f"{hwm / TARGET_RSS_MIB:.2f}× the 300 MB target; "
          f"{hwm / ISTIOD_MEM_MIB:.2f}× istiod's 1.5 GB")
    print(f"pilot CPU over the whole run: {end_cpu:.1f} CPU-s on its 1 CPU "
          f"(istiod's reference: 1 vCPU)")


if __name__ == "__main__":
    main()
