#!/usr/bin/env python3
"""Where a proxy's CPU goes, from `perf script` output of a perf.data recorded with call graphs
(bench/proxy-peers.sh PERF=1 records graymesh with --call-graph dwarf).

    perf script -i perf.data --no-inline -F ip,sym,dso | perf-breakdown.py [--us-per-request X]

Each sample is charged once, to the innermost frame of its stack that belongs to a known part of
the data path (so malloc called from building the upstream request counts as building the
upstream request); tokio and the http crate only when nothing more specific is on the stack. Kernel samples are charged to the syscall they run under (send: writev,
sendto...; receive: recvfrom, read...; epoll_wait), or to softirq/other when there is none.
Also prints the leaf kinds (allocator, memcpy) across all owners. With --us-per-request, the
shares are also turned into microseconds per request.
"""

import argparse
import re
import sys
from collections import Counter

# (category, pattern on the frame's symbol), first match from the leaf up wins.
USER_PARTS = [
    ("metrics (prometheus-client families, labels)", r"graymesh_proxy::metrics|prometheus_client"),
    ("traceparent (random ids, format!)", r"ensure_traceparent"),
    ("upstream request (URI format!, header copy)", r"forward::upstream_request"),
    ("route match (vhost, headers, weighted pick)", r"graymesh_proxy::http::select|graymesh_proxy::table|forward::pick_cluster"),
    ("endpoint pick, outlier, classify", r"graymesh_proxy::upstream|forward::classify|forward::record_outlier|forward::Admission"),
    ("hyper-util client pool (checkout, put, drop)", r"hyper_util::client::legacy::pool"),
    ("hyper-util client (send_request, connect glue)", r"hyper_util::client::legacy"),
    ("hyper h1 client codec (encode request, parse response)", r"hyper::proto::h1::role::Client|hyper::proto::h1::dispatch::Client|hyper::client::"),
    ("hyper h1 server codec (parse request, encode response)", r"hyper::proto::h1::role::Server|hyper::proto::h1::dispatch::Server"),
    ("hyper h1 connection I/O and dispatch loop", r"hyper::proto::h1|hyper::common|hyper::body"),
    ("graymesh handler (handle/forward/attempts, other)", r"graymesh_proxy::http"),
    ("graymesh per-connection glue (listeners)", r"graymesh_proxy::listeners|hyper_util::server"),
    ("tokio (scheduler, I/O driver, timers, channels)", r"^tokio::|tokio::runtime|tokio::sync|mio::"),
    ("http crate (HeaderMap, Uri)", r"^http::|<http::"),
]
USER_PARTS = [(name, re.compile(p)) for name, p in USER_PARTS]

SEND = {"writev", "write", "sendto", "sendmsg", "sendmmsg", "splice"}
RECV = {"recvfrom", "read", "readv", "recvmsg", "recvmmsg"}
SYSCALL = re.compile(r"__(?:x64|se|do)_sys_(\w+)|^__sys_(\w+)|^ksys_(\w+)|^do_(writev|readv)$")

LEAF_KINDS = [
    ("allocator (malloc/free)", re.compile(r"^(_int_malloc|_int_free|malloc|cfree|free|realloc|_int_realloc|malloc_consolidate|unlink_chunk|__libc_(malloc|free|realloc|calloc)|tcache|calloc|__rust_(alloc|dealloc|realloc))")),
    ("memcpy/memmove/memset", re.compile(r"__mem(move|cpy|set)|^mem(cpy|move|set)")),
    ("SipHash (std HashMap hashing)", re.compile(r"core::hash::sip")),
    ("formatting (core::fmt)", re.compile(r"core::fmt|alloc::fmt")),
]


def samples(lines):
    frames = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if frames:
                yield frames
            frames = []
            continue
        parts = line.strip().split(None, 1)
        if len(parts) < 2:
            continue
        addr, rest = parts
        sym = rest.rsplit(" (", 1)[0]
        frames.append((addr, sym))
    if frames:
        yield frames


def classify(frames):
    leaf_addr = frames[0][0]
    if leaf_addr.startswith("ffffffff") and leaf_addr != "ffffffffffffffff":
        for _, sym in frames:
            m = SYSCALL.search(sym)
            if m:
                name = next(g for g in m.groups() if g)
                if name in SEND:
                    return "kernel: send (writev/sendto, incl. loopback delivery and waking the peer)"
                if name in RECV:
                    return "kernel: receive (recvfrom/read)"
                if name.startswith("epoll"):
                    return "kernel: epoll_wait"
                return f"kernel: other syscall ({name})"
        return "kernel: softirq/interrupt/other (no syscall frame)"
    # Specific parts first (innermost wins), the generic ones (tokio, http) only when no specific
    # part is on the stack: a HeaderMap insert made by hyper's parser is hyper's parsing.
    for parts in (USER_PARTS[:-2], USER_PARTS[-2:]):
        for _, sym in frames:
            for name, pattern in parts:
                if pattern.search(sym):
                    return name
    return "other user space (libc, std, unknown)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--us-per-request", type=float, default=None,
                    help="the process's CPU-µs per request, to express shares in µs")
    args = ap.parse_args()
    owners = Counter()
    kinds = Counter()
    total = 0
    for frames in samples(sys.stdin):
        total += 1
        owners[classify(frames)] += 1
        leaf = frames[0][1]
        for name, pattern in LEAF_KINDS:
            if pattern.search(leaf):
                kinds[name] += 1
                break
    if not total:
        print("no samples")
        return
    us = args.us_per_request
    head = "| where (innermost known frame) | share |" + (" µs/request |" if us else "")
    print(f"{total} samples\n")
    print(head)
    print("|---|---|" + ("---|" if us else ""))
    for name, n in owners.most_common():
        share = n / total
        print(f"| {name} | {share * 100:.1f} % |" + (f" {share * us:.1f} |" if us else ""))
    kernel = sum(n for k, n in owners.items() if k.startswith("kernel"))
    print(f"| **kernel total** | {kernel / total * 100:.1f} % |"
          + (f" {kernel / total * us:.1f} |" if us else ""))
    print(f"| **user total** | {(total - kernel) / total * 100:.1f} % |"
          + (f" {(total - kernel) / total * us:.1f} |" if us else ""))
    print("\n| leaf function kind (across owners) | share |")
    print("|---|---|")
    for name, n in kinds.most_common():
        print(f"| {name} | {n / total * 100:.1f} % |")


if __name__ == "__main__":
    main()
