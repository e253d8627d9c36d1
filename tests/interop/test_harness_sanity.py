"""Checks of the harness itself: no pilot involved.

If these fail, the xDS tests' results mean nothing: the echo backends, the
client helper and grpcio's xds resolver are what they stand on.
"""

import subprocess
import sys

import grpc

from conftest import XDS_TARGET, client_env, pick_free_port

CHANNEL_OPTS = [("grpc.enable_http_proxy", 0)]


def test_echo_servers_answer_direct_calls(echo_servers):
    for version, port in echo_servers.items():
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTS) as ch:
            reply = ch.unary_unary("/graymesh.test.Echo/Version")(b"", timeout=5)
        assert reply == version.encode()


def test_client_helper_count_mode_direct(echo_servers, direct_clients):
    r = direct_clients.count(f"127.0.0.1:{echo_servers['v1']}", 50,
                             metadata={"x-canary": "true"})
    assert r["returncode"] == 0, r
    assert r["calls"] == 50, r
    assert r["failures"] == 0, r
    assert r["counts"] == {"v1": 50}, r


def test_client_helper_loop_mode_direct(echo_servers, direct_clients):
    lc = direct_clients.loop(f"127.0.0.1:{echo_servers['v2']}", seconds=0.5)
    ready = lc.wait_ready(timeout=20)
    assert ready["version"] == "v2"
    results = lc.finish()
    assert len(results) >= 5, results
    assert all(r["ok"] and r["version"] == "v2" for r in results), results
    assert all(r["start"] <= r["end"] for r in results)


def test_client_helper_reports_failures(direct_clients):
    """A dead target must come back as a failure, never as silence."""
    r = direct_clients.count(f"127.0.0.1:{pick_free_port()}", 10, ready_timeout=1)
    assert r["returncode"] == 2, r
    assert r["failures"] == 1 and r["counts"] == {}, r
    assert r["errors"], r
    assert any(code in r["errors"][0] for code in ("DEADLINE_EXCEEDED", "UNAVAILABLE")), r


XDS_PROBE = """
import grpc, sys
ch = grpc.insecure_channel(sys.argv[1])
try:
    ch.unary_unary("/graymesh.test.Echo/Version")(b"", timeout=3)
    print("UNEXPECTED SUCCESS")
except grpc.RpcError as e:
    print(e.code(), e.details())
"""


def test_grpcio_has_xds_resolver(tmp_path):
    """grpcio resolves xds:/// targets through an xDS client built from the bootstrap.

    The bootstrap points at a closed port, so the call fails -- but the error
    must come from the xDS client (LDS / xDS channel), not from a missing
    resolver (which would fall back to DNS: "errors resolving xds:///...").
    """
    dead = pick_free_port()
    bootstrap = tmp_path / "bootstrap.json"
    bootstrap.write_text(
        '{"xds_servers":[{"server_uri":"127.0.0.1:%d","channel_creds":[{"type":"insecure"}],'
        '"server_features":["xds_v3"]}],"node":{"id":"probe","locality":{"zone":"z1"}}}' % dead)
    proc = subprocess.run(
        [sys.executable, "-c", XDS_PROBE, XDS_TARGET],
        env=client_env(bootstrap), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=30,
    )
    out = proc.stdout.strip()
    assert "UNEXPECTED SUCCESS" not in out
    assert "errors resolving" not in out, out
    assert "LDS resource" in out or "xDS" in out, (out, proc.stderr[-2000:])
