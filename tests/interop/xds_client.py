#!/usr/bin/env python3
"""A real gRPC client for the interop tests, run as a subprocess.

grpc C-core reads GRPC_XDS_BOOTSTRAP once per process, so every client that
talks to a different pilot must be its own process. The tests start this
script with GRPC_XDS_BOOTSTRAP in its environment and read its stdout.

It calls the raw-bytes method /graymesh.test.Echo/Version (no .proto needed):
each backend answers with its version as bytes (b"v1", b"v2").

Modes (both print JSON on stdout, one object per line):

count mode (default): make --count calls, then print one summary object
    {"mode": "count", "calls": N, "counts": {"v1": n, ...}, "failures": n,
     "errors": [first few error strings], "elapsed": seconds}

loop mode (--loop SECONDS): first print
    {"event": "ready", "t": <unix time>, "ok": bool, "version"|"error": ...}
  after the first call (made with wait_for_ready=True), then one line per call
    {"start": t0, "end": t1, "ok": bool, "version": "v2" | null, "error": null | "..."}
  for SECONDS (bounded also by --max-calls), then
    {"event": "done", "calls": N}

Every call has a deadline (--deadline, 2 s by default); only the first call
waits for the channel to become ready (xDS resolution + connect), with its own
longer deadline (--ready-timeout).

Exit status: 0 if it ran to the end (the caller judges the results), 2 if the
very first call failed.
"""

import argparse
import json
import sys
import time

import grpc

METHOD = "/graymesh.test.Echo/Version"
MAX_ERRORS_KEPT = 10


def parse_metadata(items):
    md = []
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--metadata wants KEY=VALUE, got {item!r}")
        md.append((key.lower(), value))
    return tuple(md)


def one_call(stub, metadata, timeout, wait_for_ready):
    """Returns (version or None, error string or None)."""
    try:
        reply = stub(
            b"",
            timeout=timeout,
            metadata=metadata or None,
            wait_for_ready=wait_for_ready,
        )
        return reply.decode("utf-8", "replace"), None
    except grpc.RpcError as err:  # pragma: no cover - exercised on failures
        code = err.code() if hasattr(err, "code") else None
        details = err.details() if hasattr(err, "details") else str(err)
        return None, f"{code}: {details}"


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("target", help="e.g. xds:///echo.graymesh.test:50051 or 127.0.0.1:PORT")
    ap.add_argument("--count", type=int, default=100, help="calls in count mode")
    ap.add_argument("--metadata", action="append", metavar="KEY=VALUE",
                    help="request metadata (repeatable)")
    ap.add_argument("--deadline", type=float, default=2.0, help="per-call deadline, seconds")
    ap.add_argument("--ready-timeout", type=float, default=20.0,
                    help="deadline of the first (wait_for_ready) call, seconds")
    ap.add_argument("--loop", type=float, metavar="SECONDS",
                    help="loop mode: call for this many seconds, one JSON line per call")
    ap.add_argument("--interval", type=float, default=0.01,
                    help="pause between calls in loop mode, seconds")
    ap.add_argument("--max-calls", type=int, default=20000,
                    help="hard cap on calls in loop mode")
    ap.add_argument("--max-seconds", type=float, default=60.0,
                    help="hard cap on the wall time of count mode")
    args = ap.parse_args(argv)

    metadata = parse_metadata(args.metadata)
    with grpc.insecure_channel(args.target) as channel:
        stub = channel.unary_unary(METHOD)  # no (de)serializers: raw bytes

        # First call: wait for the channel (xDS resolution, CDS/EDS, connect).
        t0 = time.time()
        version, error = one_call(stub, metadata, args.ready_timeout, True)
        t1 = time.time()

        if args.loop is not None:
            emit({"event": "ready", "t": t1, "ok": error is None,
                  "version": version, "error": error})
            if error is not None:
                return 2
            calls = 0
            stop_at = time.monotonic() + args.loop
            while time.monotonic() < stop_at and calls < args.max_calls:
                s = time.time()
                version, error = one_call(stub, metadata, args.deadline, False)
                e = time.time()
                calls += 1
                emit({"start": s, "end": e, "ok": error is None,
                      "version": version, "error": error})
                if args.interval > 0:
                    time.sleep(args.interval)
            emit({"event": "done", "calls": calls})
            return 0

        counts = {}
        failures = 0
        errors = []

        def record(version, error):
            nonlocal failures
            if error is None:
                counts[version] = counts.get(version, 0) + 1
            else:
                failures += 1
                if len(errors) < MAX_ERRORS_KEPT:
                    errors.append(error)

        record(version, error)
        calls = 1
        if error is not None:
            emit({"mode": "count", "calls": calls, "counts": counts,
                  "failures": failures, "errors": errors,
                  "elapsed": time.time() - t0})
            return 2
        give_up_at = time.monotonic() + args.max_seconds
        while calls < args.count and time.monotonic() < give_up_at:
            record(*one_call(stub, metadata, args.deadline, False))
            calls += 1
        emit({"mode": "count", "calls": calls, "counts": counts,
              "failures": failures, "errors": errors,
              "elapsed": time.time() - t0})
        return 0


if __name__ == "__main__":
    sys.exit(main())
