"""Real parts, started for real: the Commander under gunicorn on a free loopback port, N0D3
processes with the fake `claude` on PATH, simulated nodes that speak the signed node protocol.

One harness for the end-to-end tests (tests/e2e/) and the benchmarks (bench/): it lives here
because pytest already has tests/ on sys.path, and bench/_common.py puts it there for the
benchmarks, which are run as scripts (`python bench/x.py`). Tests pass FAST timings so faults
play out in seconds; benchmarks pass none and measure the product's defaults.
"""

from __future__ import annotations

import atexit
import base64
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

from commander.settings import CommanderSettings
from m3shd import wire
from m3shd.client import ApiClient, CommanderUnreachable, NodeClient
from m3shd.trust import file_hash

ROOT = Path(__file__).resolve().parent.parent
FAKES = ROOT / "tests" / "fakes"
ARTIFACTS = Path(os.environ.get("M3SHD_TEST_ARTIFACTS", ROOT / "test-artifacts"))

# Heartbeat 0.3 s, leases and lost-after 2 s: a dead node is noticed and its work retried in seconds.
FAST = {
    "M3SHD_COMMANDER_HEARTBEAT_INTERVAL": "0.3",
    "M3SHD_COMMANDER_LEASE_TTL": "2",
    "M3SHD_COMMANDER_LOST_AFTER": "2",
    "M3SHD_COMMANDER_WORKERS": "2",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 10.0, every: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def base_env(home: Path) -> dict:
    """The environment of every m3shd process we start: nothing inherited from M3SHD_* or
    ANTHROPIC_*, nor the REQUESTS_CA_BUNDLE shared_ca() may have set here (each client pins its
    Commander's CA itself), its config and data under `home`, the fakes first on PATH; when the
    Commander under `home` serves HTTPS, its CA as the clients' pinned one ([client] ca_file)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("M3SHD_", "ANTHROPIC_")) and k != "REQUESTS_CA_BUNDLE"}
    env.update(M3SHD_DATA_DIR=str(home / "data"), M3SHD_CONFIG_DIR=str(home / "conf"),
               PATH=f"{FAKES}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1")
    if ca_file_under(home).exists():
        env["M3SHD_CLIENT_CA_FILE"] = str(ca_file_under(home))
    return env


# --- TLS ---------------------------------------------------------------------------------------

def tls_by_default() -> bool:
    """`pytest --tls` (tests/conftest.py) sets M3SHD_TEST_TLS=1: every Commander then serves HTTPS
    from a mesh CA, every N0D3 joins with the join string that pins it, every CLI, MCP server and
    bridge verifies against it."""
    return os.environ.get("M3SHD_TEST_TLS") == "1"


def ca_file_under(home: Path) -> Path:
    """Where the Commander whose home is `home` keeps its mesh CA certificate (commander/pki.py)."""
    return home / "data" / "commander" / "tls" / "ca.pem"


_shared_ca: list[Path] = []


def shared_ca() -> Path:
    """The CA that every TLS Commander of this process starts with unless it makes its own
    (Commander(own_ca=True)): made once by the real `m3shd commander ca`, removed at exit. One CA
    lets this process's own requests trust every Commander (REQUESTS_CA_BUNDLE, set here; the
    processes we start get none, see base_env) and one browser trust them all (its SPKI flag)."""
    if not _shared_ca:
        home = Path(tempfile.mkdtemp(prefix="m3shd-test-ca-"))
        atexit.register(shutil.rmtree, home, ignore_errors=True)
        m3shd("commander", "ca", env=base_env(home) | {"M3SHD_COMMANDER_TLS": "on"})
        _shared_ca.append(ca_file_under(home))
        os.environ["REQUESTS_CA_BUNDLE"] = str(ca_file_under(home))
    return _shared_ca[0]


def spki_base64(ca_file: Path) -> str:
    """The CA's key hash as Chromium's --ignore-certificate-errors-spki-list takes it (base64)."""
    return base64.b64encode(bytes.fromhex(file_hash(ca_file).removeprefix("sha256:"))).decode()


def m3shd(*args, env: dict, timeout: float = 60, check: bool = True,
          input: str | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "m3shd", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, input=input)
    if check and done.returncode != 0:
        raise AssertionError(f"m3shd {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done


class Process:
    """A child process in a session of its own, whose output goes to a log file we can read while it runs."""

    def __init__(self, argv: list[str], env: dict, log: Path):
        self.log = log
        self._out = open(log, "ab")
        self.proc = subprocess.Popen(argv, env=env, stdout=self._out, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def kill9(self) -> None:
        """kill -9 the whole group: no clean-up of any kind (children included)."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 20, sig: int = signal.SIGTERM) -> int:
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._out.close()
        return self.proc.returncode


class Commander:
    """`python -m m3shd commander serve`, its config and data under `home`, with an admin token
    (`api`) and a join token (`join_string`: the token and the CA hash it pins, under TLS).
    `timings` go into its environment before `extra_env`.

    `tls` (default: `pytest --tls`): HTTPS from a mesh CA, the shared one unless `own_ca`, in
    which case the Commander makes its own at first start, as a new install does. `port`: a
    given one (another Commander's, once that one has stopped) instead of a free one."""

    wake_dir: Path | None = None  # where its workers bind their wake sockets: if set, start() waits for all

    def __init__(self, home: Path, extra_env: dict | None = None, timings: dict = FAST, tls: bool | None = None,
                 own_ca: bool = False, port: int | None = None):
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls = tls_by_default() if tls is None else tls
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
        self.ca_file = ca_file_under(home) if self.tls else None
        if self.tls and not own_ca:
            self.ca_file.parent.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # as the Commander makes it
            self.ca_file.parent.mkdir(mode=0o700)
            for name in ("ca.pem", "ca.key"):
                shutil.copy(shared_ca().parent / name, self.ca_file.parent / name)
        tls_env = {"M3SHD_COMMANDER_TLS": "on", "M3SHD_CLIENT_CA_FILE": str(self.ca_file)} if self.tls else {}
        self.env = base_env(home) | timings | {"M3SHD_COMMANDER_BIND": f"127.0.0.1:{self.port}"} | tls_env \
            | (extra_env or {})
        self.workers = int(self.env.get("M3SHD_COMMANDER_WORKERS", CommanderSettings().workers))
        self.process: Process | None = None
        self.start()
        try:
            self.admin_token = self.token("admin", role="admin")
            joining = self.created("join", kind="join")
            self.join_token, self.join_string = joining["token"], joining["join"]
        except BaseException:
            self.stop()
            raise
        self.api = ApiClient(self.url, self.admin_token, ca_file=self.ca_file)

    def start(self) -> None:
        """Start it and wait until it answers; with a `wake_dir`, until every worker has started
        its background threads (its wake socket exists): one request at a time, each on a new
        connection, so that each worker serves one."""
        self.process = Process([sys.executable, "-m", "m3shd", "commander", "serve"], self.env,
                               self.home / "commander.log")

        def ready():
            if not self.process.alive():
                raise AssertionError(f"the Commander exited:\n{self.process.text()}")
            if self.ca_file and not self.ca_file.exists():
                return False  # its own CA, not made yet
            fresh = ApiClient(self.url, "none", timeout=1, ca_file=self.ca_file)
            try:
                fresh.health()
            except CommanderUnreachable:
                return False
            finally:
                fresh.session.close()
            return self.wake_dir is None or len(list(self.wake_dir.glob("wake-*.sock"))) >= self.workers

        try:
            wait_until(ready, 30, every=0.02, what="the Commander to answer")
        except AssertionError:
            self.stop()
            raise

    def token(self, name: str, kind: str = "api", role: str | None = None, permissions: str | None = None,
              agent: str | None = None) -> str:
        return self.created(name, kind, role, permissions, agent)["token"]

    def created(self, name: str, kind: str = "api", role: str | None = None, permissions: str | None = None,
                agent: str | None = None) -> dict:
        """`m3shd token create --local --json`: the new token's document."""
        args = ["token", "create", name, "--local", "--json", "--kind", kind]
        args += ["--role", role] if role else []
        args += ["--permissions", permissions] if permissions else []
        args += ["--agent", agent] if agent else []
        return json.loads(m3shd(*args, env=self.env).stdout)

    def stop(self) -> None:
        """gunicorn's quick shutdown (SIGINT): nobody waits out idle keep-alive connections."""
        if self.process:
            self.process.stop(sig=signal.SIGINT)

    def open_socket(self, timeout: float) -> socket.socket:
        """A raw connection to it, for requests no HTTP client would send: over TLS (verified
        against its CA) when it serves HTTPS."""
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return ssl.create_default_context(cafile=self.ca_file).wrap_socket(raw, server_hostname="127.0.0.1") \
            if self.tls else raw

    def http_connection(self, timeout: float) -> http.client.HTTPConnection:
        """http.client's connection to it (it sends a path byte for byte), HTTPS when it serves that."""
        if self.tls:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                               context=ssl.create_default_context(cafile=self.ca_file))
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def nodes(self) -> list[dict]:
        return self.api.list_nodes()

    def wait_task(self, task_id: int, timeout: float = 20, states=("succeeded", "failed", "cancelled")) -> dict:
        return wait_until(lambda: (t := self.api.get_task(task_id, wait=1)) and t["state"] in states and t,
                          timeout, what=f"task {task_id} to reach {states}")


class N0D3:
    """`python -m m3shd n0d3 run` joined to `commander` with its join token; state under the
    Commander's home. `env` overrides (e.g. M3SHD_N0D3_CLAIM_WAIT, M3SHD_N0D3_CAPABILITIES)."""

    def __init__(self, commander: Commander, name: str, slots: int = 1, env: dict | None = None):
        self.name = name
        self.state_dir = commander.home / f"n0d3-{name}"
        self.env = base_env(commander.home) | {
            "M3SHD_N0D3_URL": commander.url, "M3SHD_N0D3_JOIN_TOKEN": commander.join_string,
            "M3SHD_N0D3_STATE_DIR": str(self.state_dir), "M3SHD_N0D3_NAME": name,
            "M3SHD_N0D3_SLOTS": str(slots), "M3SHD_N0D3_CLAIM_WAIT": "5", "M3SHD_N0D3_CANCEL_GRACE": "1",
        } | (env or {})
        self.commander = commander
        self.start()

    def start(self) -> None:
        self.process = Process([sys.executable, "-m", "m3shd", "n0d3", "run"], self.env,
                               self.commander.home / f"n0d3-{self.name}.log")

    def node(self) -> dict | None:
        return next((n for n in self.commander.nodes() if n["name"] == self.name), None)

    def wait_registered(self, timeout: float = 15) -> dict:
        return wait_until(lambda: (n := self.node()) and n["state"] == "active" and n, timeout,
                          what=f"N0D3 {self.name} to register")

    def held_results(self) -> list[Path]:
        return sorted((self.state_dir / "outbox").glob("*.json"))


def register_node(url: str, join_token: str, name: str, slots: int = 1, capabilities: list[str] | None = None,
                  runner: str = "simulated", join_client: ApiClient | None = None,
                  heartbeat_every: float | None = 5.0, ca_file: Path | None = None) -> NodeClient:
    """A simulated node, driven by its caller: registered with the join token, it returns its
    signing NodeClient. Like the real agent it heartbeats on a thread of its own (a node that
    only claims would be lost); `heartbeat_every=None` makes one that can play dead. `ca_file`:
    the Commander's CA, which its connections verify against."""
    joiner = join_client or ApiClient(url, join_token, ca_file=ca_file)
    reply = joiner.register(machine_id=f"{name}-{uuid.uuid4().hex[:12]}", name=name, slots=slots,
                            capabilities=capabilities or [], runner=runner, version="simulated")
    node = NodeClient(url, reply["node_id"], reply["node_token"], reply["signing_key"], ca_file=ca_file)
    if heartbeat_every:
        beating = NodeClient(url, reply["node_id"], reply["node_token"], reply["signing_key"], ca_file=ca_file)

        def beat():
            while True:
                time.sleep(heartbeat_every)
                try:
                    beating.heartbeat(open_slots=slots, running=[], runner=runner, problem=None)
                except Exception:  # noqa: BLE001 - the Commander is gone at the end of a run
                    return

        threading.Thread(target=beat, name=f"heartbeat-{name}", daemon=True).start()
    return node


def result_for(lease: dict, output: str = "ok", runner: str = "simulated") -> dict:
    """A succeeded result for a lease, as a N0D3 would post it (NodeClient signs it); the same
    lease and output give the same result, so sending it again is a duplicate."""
    return dict(task_id=lease["task_id"], attempt=lease["attempt"], lease_token=lease["lease_token"],
                status="succeeded", output=output, runner=runner, duration_ms=0,
                usage=dict(input_tokens=1, output_tokens=1, cache_read_tokens=0, cache_write_tokens=0),
                **wire.binding(lease))


def sse_events(commander: Commander, after: int = 0, until: str | None = None, idle: float = 1.0) -> list[dict]:
    """Read the event stream from `after` until an event of kind `until`, or until it is idle."""
    seen = []
    try:
        with requests.get(f"{commander.url}/api/events", params={"after": after}, stream=True, timeout=(5, idle),
                          headers={"Authorization": f"Bearer {commander.admin_token}"}) as response:
            assert response.status_code == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            for line in response.iter_lines(decode_unicode=True):
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                    if seen[-1]["kind"] == until:
                        break
    except requests.exceptions.ConnectionError:  # the read timed out: the stream is idle
        if until is not None:
            raise AssertionError(f"no {until} event; saw {[e['kind'] for e in seen]}") from None
    return seen
