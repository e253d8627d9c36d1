"""A real proxyless gRPC client (grpcio's xds:/// resolver) follows graymesh pilot.

Each test gets its own pilot and config dir (fixtures in conftest.py) that
start with: ServiceEntry echo.graymesh.test -> two backends (v1, v2),
DestinationRule subsets v1/v2 by label `version`, and a VirtualService
routing `x-canary: "true"` to v2 and everything else v1 80 / v2 20.

The gRPC client runs in a subprocess (xds_client.py) because grpc C-core reads
GRPC_XDS_BOOTSTRAP once per process.
"""

import json
import os
import subprocess
import time

from conftest import (
    NODE_ID,
    XDS_TARGET,
    MeshConfig,
    virtual_service_yaml,
)

LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
TYPE_URLS = (LDS, RDS, CDS, EDS)

SPLIT_CALLS = 2000
TOLERANCE = 0.05


def _summary(result):
    keep = {k: v for k, v in result.items() if k != "stderr_tail"}
    return f"{json.dumps(keep)}\nclient stderr tail:\n{result.get('stderr_tail', '')}"


def _failures(results):
    return [r for r in results if not r["ok"]]


def _wait_for_good_apply(pilot, after_version, timeout=5.0):
    """Wait until /debug/configz shows a version > after_version and no errors."""
    last = {}

    def check():
        cz = pilot.configz()
        last["cz"] = cz
        return cz if cz["version"] > after_version and not cz["errors"] else None

    try:
        cz = pilot.wait_for(check, timeout, f"configz version > {after_version}")
    except AssertionError as err:
        raise AssertionError(f"{err}; last /debug/configz: {last.get('cz')}") from None
    # One edit may be applied more than once (several file events); let the
    # version settle so callers can compare against it later.
    settle_until = time.monotonic() + 2.0
    stable_since = time.monotonic()
    while time.monotonic() < settle_until and time.monotonic() - stable_since < 0.4:
        time.sleep(0.05)
        now = pilot.configz()
        if now["version"] != cz["version"]:
            cz, stable_since = now, time.monotonic()
    return cz


def test_weighted_split_80_20(pilot, clients):
    """(a) Without metadata, calls split v1 80 % / v2 20 % (±5 points), none fail."""
    r = clients.count(XDS_TARGET, SPLIT_CALLS)
    assert r["failures"] == 0, _summary(r)
    assert r["calls"] == SPLIT_CALLS, _summary(r)
    counts = r["counts"]
    assert set(counts) <= {"v1", "v2"}, _summary(r)
    v1 = counts.get("v1", 0) / SPLIT_CALLS
    v2 = counts.get("v2", 0) / SPLIT_CALLS
    assert abs(v1 - 0.80) <= TOLERANCE, f"v1 share {v1:.3f}, want 0.80±{TOLERANCE}: {_summary(r)}"
    assert abs(v2 - 0.20) <= TOLERANCE, f"v2 share {v2:.3f}, want 0.20±{TOLERANCE}: {_summary(r)}"
    pilot.assert_alive()


def test_header_match_routes_canary_to_v2(pilot, clients):
    """(b) `x-canary: true` goes to v2 every time; `x-canary: false` does not match."""
    r = clients.count(XDS_TARGET, 300, metadata={"x-canary": "true"})
    assert r["failures"] == 0, _summary(r)
    assert r["counts"] == {"v2": 300}, _summary(r)

    # exact match: "false" falls through to the 80/20 split (P(no v1 in 300) ~ 0)
    r = clients.count(XDS_TARGET, 300, metadata={"x-canary": "false"})
    assert r["failures"] == 0, _summary(r)
    assert r["counts"].get("v1", 0) > 0, _summary(r)
    pilot.assert_alive()


def test_weight_shift_is_followed_live(pilot, mesh_config, clients):
    """(c) Rewriting the VirtualService to 0/100 while a client loops: every call
    started more than 1 s after the write returns v2, and no call fails."""
    lc = clients.loop(XDS_TARGET, seconds=6.0)
    lc.wait_ready(timeout=30)
    time.sleep(1.0)  # some calls under 80/20 first

    v0 = pilot.configz()["version"]
    t_write = mesh_config.write_virtual_service(0, 100)
    _wait_for_good_apply(pilot, v0, timeout=2.0)

    results = lc.finish()
    failed = _failures(results)
    assert not failed, f"{len(failed)} of {len(results)} calls failed, first: {failed[:5]}"

    before = [r for r in results if r["end"] < t_write]
    after = [r for r in results if r["start"] > t_write + 1.0]
    assert len(before) >= 20, f"only {len(before)} calls before the write"
    assert any(r["version"] == "v1" for r in before), "no v1 calls before the shift (split not active?)"
    assert len(after) >= 50, f"only {len(after)} calls more than 1 s after the write"
    stale = [r for r in after if r["version"] != "v2"]
    assert not stale, (
        f"{len(stale)} of {len(after)} calls started >1 s after the write did not reach v2; "
        f"first: {stale[:5]}")
    pilot.assert_alive()


BROKEN_EDITS = {
    # weight must be an integer
    "bad-weight-type": ("weight", virtual_service_yaml('"abc"', 100)),
    # Istio rejects fields it does not know
    "unknown-field": ("bogusField", virtual_service_yaml(0, 100).replace(
        "  - name: split\n", "  - name: split\n    bogusField: 1\n")),
}


def _check_last_good_config_kept(pilot, mesh_config, clients, broken_case):
    field, broken_yaml = BROKEN_EDITS[broken_case]
    assert field in broken_yaml

    # A good edit first (0/100), so "last good" differs from the initial 80/20
    # and from "no VirtualService" (which would spread calls over v1 and v2).
    v0 = pilot.configz()["version"]
    mesh_config.write_virtual_service(0, 100)
    good = _wait_for_good_apply(pilot, v0, timeout=5.0)

    lc = clients.loop(XDS_TARGET, seconds=5.0)
    ready = lc.wait_ready(timeout=30)
    assert ready["version"] == "v2", ready
    time.sleep(0.5)

    t_broken = mesh_config.write(MeshConfig.VIRTUAL_SERVICE, broken_yaml)
    last = {}

    def has_errors():
        cz = pilot.configz()
        last["cz"] = cz
        return cz if cz["errors"] else None

    try:
        cz = pilot.wait_for(has_errors, 2.0, "/debug/configz to report the broken file")
    except AssertionError as err:
        raise AssertionError(f"{err}; last /debug/configz: {last.get('cz')}") from None
    assert time.time() - t_broken <= 2.5
    errors = "\n".join(str(e) for e in cz["errors"])
    assert MeshConfig.VIRTUAL_SERVICE in errors, f"errors do not name the file: {cz['errors']}"
    assert field in errors, f"errors do not name the field {field!r}: {cz['errors']}"
    assert cz["version"] == good["version"], f"version moved on a failed load: {good} -> {cz}"

    for path in ("/ready", "/healthz"):
        status, body = pilot.get(path)
        assert status == 200, f"GET {path} -> {status} while config is broken: {body[:500]}"

    results = lc.finish()
    failed = _failures(results)
    assert not failed, f"{len(failed)} of {len(results)} calls failed, first: {failed[:5]}"
    not_v2 = [r for r in results if r["version"] != "v2"]
    assert not not_v2, f"{len(not_v2)} calls left the last good config (0/100): {not_v2[:5]}"
    after = [r for r in results if r["start"] > t_broken + 1.0]
    assert len(after) >= 30, f"only {len(after)} calls more than 1 s after the broken write"

    # A client that connects only now gets the last good config too.
    r = clients.count(XDS_TARGET, 200)
    assert r["failures"] == 0, _summary(r)
    assert r["counts"] == {"v2": 200}, _summary(r)

    cz = pilot.configz()
    assert cz["errors"], f"errors cleared although the broken file is still there: {cz}"
    assert cz["version"] == good["version"], cz
    pilot.assert_alive()


def test_broken_edit_keeps_last_good_config_bad_weight(pilot, mesh_config, clients):
    """(d) weight: "abc" -> configz names file and field within 2 s; calls still
    follow the last good config (0/100), none fail."""
    _check_last_good_config_kept(pilot, mesh_config, clients, "bad-weight-type")


def test_broken_edit_keeps_last_good_config_unknown_field(pilot, mesh_config, clients):
    """(d') same with an unknown field in the VirtualService."""
    _check_last_good_config_kept(pilot, mesh_config, clients, "unknown-field")


def test_syncz_lists_client_with_acks(pilot, clients):
    """(e) /debug/syncz lists node interop-client-1 with ACKs for LDS, RDS, CDS, EDS,
    and drops it once the client is gone."""
    lc = clients.loop(XDS_TARGET, seconds=15.0, interval=0.05)
    lc.wait_ready(timeout=30)
    last = {}

    def acked():
        syncz = pilot.syncz()
        last["syncz"] = syncz
        assert isinstance(syncz, list), f"/debug/syncz is not a JSON list: {syncz}"
        for entry in syncz:
            if entry.get("node_id") != NODE_ID:
                continue
            types = entry.get("types") or {}
            if all((types.get(t) or {}).get("acked_version") and
                   (types.get(t) or {}).get("nack") is None for t in TYPE_URLS):
                return entry
        return None

    try:
        entry = pilot.wait_for(acked, 5.0, f"{NODE_ID} to ACK {', '.join(TYPE_URLS)}")
    except AssertionError as err:
        raise AssertionError(
            f"{err}; last /debug/syncz: {json.dumps(last.get('syncz'), indent=1)}") from None
    for t in TYPE_URLS:
        assert isinstance(entry["types"][t]["acked_version"], str), entry

    status, body = pilot.get("/metrics")
    assert status == 200 and body.strip(), f"GET /metrics -> {status}: {body[:500]}"
    assert "graymesh_xds_connected_clients 1" in body, body[:2000]

    # The operator's view: `graymesh proxy-status` shows the client SYNCED on all four types.
    out = subprocess.run(
        [os.environ["GRAYMESH_BIN"], "proxy-status", "--server", f"http://127.0.0.1:{pilot.http_port}"],
        capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    row = next((line for line in out.stdout.splitlines() if line.startswith(NODE_ID)), None)
    assert row is not None, out.stdout
    assert row.split()[1:7] == ["proxyless_grpc", "sotw", "SYNCED", "SYNCED", "SYNCED", "SYNCED"], out.stdout

    lc.kill()

    def gone():
        return all(e.get("node_id") != NODE_ID for e in pilot.syncz())

    pilot.wait_for(gone, 5.0, f"{NODE_ID} to leave /debug/syncz after the client exited")
    pilot.assert_alive()
