"""Fixtures for the real-client interop tests.

Pieces:
  * two in-process gRPC servers (raw bytes, no .proto) answering b"v1" / b"v2";
  * a config dir with a ServiceEntry, a DestinationRule and a VirtualService
    that route echo.graymesh.test to those servers;
  * `graymesh pilot` started as a subprocess on free loopback ports;
  * an xDS bootstrap file pointing at that pilot;
  * helpers that run tests/interop/xds_client.py as a subprocess (grpc C-core
    reads GRPC_XDS_BOOTSTRAP once per process, so each client is a process).

Everything talks to 127.0.0.1 only, and every wait is bounded.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent import futures
from pathlib import Path

import grpc
import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
CLIENT_SCRIPT = HERE / "xds_client.py"

HOST = "echo.graymesh.test"
SERVICE_PORT = 50051
XDS_TARGET = f"xds:///{HOST}:{SERVICE_PORT}"
NODE_ID = "interop-client-1"

READY_TIMEOUT_S = 30.0
# Environment variables that would send loopback traffic through a proxy or
# hand the client a different bootstrap than ours.
_STRIP_ENV = (
    "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "grpc_proxy",
    "all_proxy", "ALL_PROXY", "GRPC_XDS_BOOTSTRAP", "GRPC_XDS_BOOTSTRAP_CONFIG",
)


# --------------------------------------------------------------------------
# failure reports: attach pilot / client logs to a failing test's report
# --------------------------------------------------------------------------

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    # (setup failures of the pilot fixture already carry the pilot's output)
    if rep.failed and rep.when != "setup":
        for title, path in getattr(item, "_interop_logs", []):
            try:
                text = Path(path).read_text(errors="replace")
            except OSError as err:
                text = f"<could not read {path}: {err}>"
            if len(text) > 20000:
                text = "...(truncated)...\n" + text[-20000:]
            rep.sections.append((f"{title} ({path})", text or "<empty>"))


def _register_log(request, title, path):
    node = request.node
    if not hasattr(node, "_interop_logs"):
        node._interop_logs = []
    node._interop_logs.append((title, str(path)))


# --------------------------------------------------------------------------
# ports and the echo backends
# --------------------------------------------------------------------------

def pick_free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port():
    return pick_free_port


def _start_echo_server(version):
    answer = version.encode()

    def handle(_request, _context):
        return answer

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler(
            "graymesh.test.Echo",
            {"Version": grpc.unary_unary_rpc_method_handler(handle)},
        ),
    ))
    port = server.add_insecure_port("127.0.0.1:0")
    if not port:
        raise RuntimeError(f"echo server {version}: could not bind 127.0.0.1")
    server.start()
    return server, port


@pytest.fixture(scope="session")
def echo_servers():
    """{"v1": port, "v2": port}: gRPC servers on 127.0.0.1 answering their version."""
    started = []
    try:
        ports = {}
        for version in ("v1", "v2"):
            server, port = _start_echo_server(version)
            started.append(server)
            ports[version] = port
        yield ports
    finally:
        for server in started:
            server.stop(grace=None)


# --------------------------------------------------------------------------
# the config dir
# --------------------------------------------------------------------------

def service_entry_yaml(ports):
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: echo
  namespace: default
spec:
  hosts:
  - {HOST}
  ports:
  - number: {SERVICE_PORT}
    name: grpc
    protocol: GRPC
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    ports:
      grpc: {ports["v1"]}
    labels:
      version: v1
  - address: 127.0.0.1
    ports:
      grpc: {ports["v2"]}
    labels:
      version: v2
"""


DESTINATION_RULE_YAML = f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: echo
  namespace: default
spec:
  host: {HOST}
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
"""


def virtual_service_yaml(v1_weight=80, v2_weight=20):
    """The VirtualService: x-canary: "true" -> v2; otherwise v1/v2 by weight.

    The weights are inserted verbatim, so a test can pass '"abc"' to break it.
    """
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: echo
  namespace: default
spec:
  hosts:
  - {HOST}
  http:
  - name: canary
    match:
    - headers:
        x-canary:
          exact: "true"
    route:
    - destination:
        host: {HOST}
        subset: v2
        port:
          number: {SERVICE_PORT}
  - name: split
    route:
    - destination:
        host: {HOST}
        subset: v1
        port:
          number: {SERVICE_PORT}
      weight: {v1_weight}
    - destination:
        host: {HOST}
        subset: v2
        port:
          number: {SERVICE_PORT}
      weight: {v2_weight}
"""


class MeshConfig:
    """The pilot's --config-dir, with atomic writers for the tests' edits."""

    SERVICE_ENTRY = "serviceentry.yaml"
    DESTINATION_RULE = "destinationrule.yaml"
    VIRTUAL_SERVICE = "virtualservice.yaml"

    def __init__(self, path, ports):
        self.path = Path(path)
        self.ports = ports

    def write(self, name, text):
        """Replace file `name` atomically (write a hidden temp file, rename).

        Returns the time.time() of the rename, i.e. when the edit became visible.
        """
        target = self.path / name
        tmp = self.path / f".{name}.tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        return time.time()

    def write_virtual_service(self, v1_weight, v2_weight):
        return self.write(self.VIRTUAL_SERVICE, virtual_service_yaml(v1_weight, v2_weight))


@pytest.fixture
def mesh_config(tmp_path, echo_servers):
    """A fresh config dir: ServiceEntry + DestinationRule + 80/20 VirtualService."""
    cfg = MeshConfig(tmp_path / "config", echo_servers)
    cfg.path.mkdir()
    cfg.write(MeshConfig.SERVICE_ENTRY, service_entry_yaml(echo_servers))
    cfg.write(MeshConfig.DESTINATION_RULE, DESTINATION_RULE_YAML)
    cfg.write_virtual_service(80, 20)
    return cfg


# --------------------------------------------------------------------------
# the pilot
# --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def graymesh_bin():
    """Path of the graymesh binary: $GRAYMESH_BIN, else target/debug/graymesh.

    Missing binary is a FAILURE, not a skip: these tests are the point.
    """
    env = os.environ.get("GRAYMESH_BIN")
    if env:
        path = Path(env)
    else:
        target_dir = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))
        path = target_dir / "debug" / "graymesh"
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"graymesh binary not found or not executable at {path} "
            f"(GRAYMESH_BIN={env!r}); build it with `cargo build -p graymesh` "
            f"or run scripts/test",
            pytrace=False,
        )
    return path


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url, timeout=2.0):
    """(status, body text); status is None if the connection failed."""
    try:
        with _NO_PROXY_OPENER.open(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as err:
        return None, str(err)


class Pilot:
    def __init__(self, proc, xds_port, http_port, log_path, config):
        self.proc = proc
        self.xds_port = xds_port
        self.http_port = http_port
        self.log_path = Path(log_path)
        self.config = config

    @property
    def xds_addr(self):
        return f"127.0.0.1:{self.xds_port}"

    def url(self, path):
        return f"http://127.0.0.1:{self.http_port}{path}"

    def get(self, path, timeout=2.0):
        return http_get(self.url(path), timeout)

    def get_json(self, path):
        status, body = self.get(path)
        assert status == 200, f"GET {path} -> {status}: {body[:2000]}"
        try:
            return json.loads(body)
        except ValueError as err:
            raise AssertionError(f"GET {path}: not JSON ({err}): {body[:2000]}") from None

    def configz(self):
        return self.get_json("/debug/configz")

    def syncz(self):
        """The connected xDS clients (/debug/syncz is {"version": N, "clients": [...]})."""
        body = self.get_json("/debug/syncz")
        assert isinstance(body, dict) and isinstance(body.get("clients"), list), \
            f"/debug/syncz: expected {{version, clients: [...]}}, got {body}"
        return body["clients"]

    def log_tail(self, chars=4000):
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def assert_alive(self):
        rc = self.proc.poll()
        assert rc is None, f"pilot exited with {rc}; log tail:\n{self.log_tail()}"

    def wait_for(self, predicate, timeout, what, interval=0.05):
        """Poll predicate() -> truthy value until timeout; fail with `what`."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            self.assert_alive()
            last = predicate()
            if last:
                return last
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(interval)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _start_pilot(graymesh_bin, config, log_path):
    """Start the pilot on free ports and wait (bounded) for /ready == 200.

    Retries on a lost port race (the picked port taken before the pilot bound it).
    """
    attempts = 3
    for attempt in range(1, attempts + 1):
        xds_port, http_port = pick_free_port(), pick_free_port()
        while http_port == xds_port:
            http_port = pick_free_port()
        cmd = [
            str(graymesh_bin), "pilot",
            "--config-dir", str(config.path),
            "--xds-addr", f"127.0.0.1:{xds_port}",
            "--http-addr", f"127.0.0.1:{http_port}",
        ]
        log = open(log_path, "a")
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        env = {k: v for k, v in os.environ.items() if k not in _STRIP_ENV}
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=env, cwd=str(config.path.parent),
        )
        log.close()
        pilot = Pilot(proc, xds_port, http_port, log_path, config)
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = None
        while time.monotonic() < deadline:
            rc = proc.poll()
            if rc is not None:
                tail = pilot.log_tail()
                if attempt < attempts and "in use" in tail.lower():
                    break  # port race: try again with new ports
                pytest.fail(
                    f"graymesh pilot exited with status {rc} before /ready.\n"
                    f"command: {' '.join(cmd)}\n--- pilot output ---\n{tail}",
                    pytrace=False,
                )
            status, body = pilot.get("/ready", timeout=1.0)
            if status == 200:
                return pilot
            last = (status, body[:300])
            time.sleep(0.1)
        else:
            pilot.stop()
            pytest.fail(
                f"graymesh pilot not ready within {READY_TIMEOUT_S}s "
                f"(last GET /ready: {last}).\ncommand: {' '.join(cmd)}\n"
                f"--- pilot output ---\n{pilot.log_tail()}",
                pytrace=False,
            )
    pytest.fail("graymesh pilot: could not get free ports after retries", pytrace=False)


@pytest.fixture
def pilot(request, graymesh_bin, mesh_config, tmp_path):
    """A running `graymesh pilot` serving mesh_config; killed at teardown."""
    log_path = tmp_path / "pilot.log"
    _register_log(request, "pilot output", log_path)
    p = _start_pilot(graymesh_bin, mesh_config, log_path)
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def bootstrap(pilot, tmp_path):
    """Path of an xDS bootstrap file pointing at the pilot."""
    doc = {
        "xds_servers": [{
            "server_uri": pilot.xds_addr,
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }],
        "node": {"id": NODE_ID, "locality": {"zone": "z1"}},
    }
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


# --------------------------------------------------------------------------
# the client subprocess
# --------------------------------------------------------------------------

def client_env(bootstrap_path=None):
    env = {k: v for k, v in os.environ.items() if k not in _STRIP_ENV}
    if bootstrap_path is not None:
        env["GRPC_XDS_BOOTSTRAP"] = str(bootstrap_path)
    env.setdefault("GRPC_VERBOSITY", "ERROR")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _client_cmd(target, metadata=None, extra=()):
    cmd = [sys.executable, str(CLIENT_SCRIPT), target]
    for key, value in (metadata or {}).items():
        cmd += ["--metadata", f"{key}={value}"]
    return cmd + [str(x) for x in extra]


class ClientRunner:
    """Runs xds_client.py subprocesses; logs go into the test's report on failure."""

    def __init__(self, request, tmp_path, bootstrap_path=None):
        self.request = request
        self.tmp_path = Path(tmp_path)
        self.bootstrap_path = bootstrap_path
        self.n = 0
        self.loops = []

    def close(self):
        """Kill any loop client still running (teardown)."""
        for lc in self.loops:
            lc.kill()

    def _log_path(self, kind):
        self.n += 1
        path = self.tmp_path / f"client-{self.n}-{kind}.stderr"
        _register_log(self.request, f"client {self.n} ({kind}) stderr", path)
        return path

    def count(self, target, count, metadata=None, timeout=90.0, **opts):
        """Count mode: returns the summary dict printed by xds_client.py."""
        extra = ["--count", count]
        for key, value in opts.items():
            extra += [f"--{key.replace('_', '-')}", value]
        cmd = _client_cmd(target, metadata, extra)
        err_path = self._log_path("count")
        with open(err_path, "w") as err:
            try:
                proc = subprocess.run(
                    cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=err, env=client_env(self.bootstrap_path),
                    timeout=timeout, text=True,
                )
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"client timed out after {timeout}s: {' '.join(cmd)}\n"
                    f"stderr tail:\n{_tail(err_path)}") from None
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        assert lines, (f"client printed nothing (exit {proc.returncode}): {' '.join(cmd)}\n"
                       f"stderr tail:\n{_tail(err_path)}")
        result = json.loads(lines[-1])
        result["returncode"] = proc.returncode
        result["stderr_tail"] = _tail(err_path, 3000)
        return result

    def loop(self, target, seconds, metadata=None, interval=0.01):
        """Start loop mode; returns a LoopClient (already running)."""
        cmd = _client_cmd(target, metadata,
                          ["--loop", seconds, "--interval", interval])
        lc = LoopClient(cmd, client_env(self.bootstrap_path),
                        self._log_path("loop"), seconds)
        self.loops.append(lc)
        return lc


def _tail(path, chars=4000):
    try:
        return Path(path).read_text(errors="replace")[-chars:]
    except OSError:
        return ""


class LoopClient:
    """A loop-mode xds_client.py whose per-call JSON lines are read by a thread."""

    def __init__(self, cmd, env, err_path, seconds):
        self.cmd = cmd
        self.err_path = err_path
        self.seconds = seconds
        self.lines = []
        self.ready = None
        self.done = None
        self._ready_evt = threading.Event()
        self._err = open(err_path, "w")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self._err, env=env, text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            raw = raw.strip()
            if not raw:
                continue
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if obj.get("event") == "ready":
                self.ready = obj
                self._ready_evt.set()
            elif obj.get("event") == "done":
                self.done = obj
            else:
                self.lines.append(obj)
        self._ready_evt.set()  # EOF: wake a waiter

    def wait_ready(self, timeout=30.0):
        """Block until the first call returned; fail unless it succeeded."""
        self._ready_evt.wait(timeout)
        assert self.ready is not None, (
            f"loop client not ready within {timeout}s (exit {self.proc.poll()}); "
            f"stderr tail:\n{_tail(self.err_path)}")
        assert self.ready["ok"], (
            f"loop client's first call failed: {self.ready['error']}\n"
            f"stderr tail:\n{_tail(self.err_path)}")
        return self.ready

    def finish(self, timeout=None):
        """Wait for the loop to end (bounded); returns the per-call results."""
        if timeout is None:
            timeout = self.seconds + 15.0
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"loop client did not finish within {timeout}s") from None
        self._reader.join(timeout=5)
        self._err.close()
        assert self.done is not None, (
            f"loop client ended without its 'done' line (exit {self.proc.returncode}); "
            f"stderr tail:\n{_tail(self.err_path)}")
        return list(self.lines)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if not self._err.closed:
            self._err.close()


@pytest.fixture
def clients(request, tmp_path, bootstrap):
    """ClientRunner whose subprocesses get GRPC_XDS_BOOTSTRAP=bootstrap."""
    runner = ClientRunner(request, tmp_path, bootstrap)
    yield runner
    runner.close()


@pytest.fixture
def direct_clients(request, tmp_path):
    """ClientRunner without an xDS bootstrap (for direct 127.0.0.1:PORT targets)."""
    runner = ClientRunner(request, tmp_path, None)
    yield runner
    runner.close()
