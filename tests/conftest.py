"""Real parts for tests: the Commander under gunicorn on loopback, N0D3 processes, fake `claude`.

Timings are shortened (heartbeat 0.3 s, leases and lost-after 2 s) so faults play out in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from m3shd.client import ApiClient, CommanderUnreachable

FAKES = Path(__file__).parent / "fakes"
ARTIFACTS = Path(os.environ.get("M3SHD_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts"))

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
    env = {k: v for k, v in os.environ.items() if not k.startswith(("M3SHD_", "ANTHROPIC_"))}
    env.update(M3SHD_DATA_DIR=str(home / "data"), M3SHD_CONFIG_DIR=str(home / "conf"),
               PATH=f"{FAKES}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1")
    return env


def m3shd(*args, env: dict, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "m3shd", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"m3shd {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done


class Process:
    """A child process whose output goes to a log file we can read while it runs."""

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
    def __init__(self, home: Path, extra_env: dict | None = None):
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = base_env(home) | FAST | {"M3SHD_COMMANDER_BIND": f"127.0.0.1:{self.port}"} | (extra_env or {})
        self.process: Process | None = None
        self.start()
        self.admin_token = self.token("admin", role="admin")
        self.api = ApiClient(self.url, self.admin_token)
        self.join_token = self.token("join", kind="join")

    def start(self) -> None:
        self.process = Process([sys.executable, "-m", "m3shd", "commander", "serve"], self.env,
                               self.home / "commander.log")
        client = ApiClient(self.url, "none", timeout=1)

        def healthy():
            if not self.process.alive():
                raise AssertionError(f"the Commander exited:\n{self.process.text()}")
            try:
                return client.health()
            except CommanderUnreachable:
                return None

        wait_until(healthy, 20, what="the Commander to answer")

    def token(self, name: str, kind: str = "api", role: str | None = None, permissions: str | None = None) -> str:
        args = ["token", "create", name, "--local", "--json", "--kind", kind]
        args += ["--role", role] if role else []
        args += ["--permissions", permissions] if permissions else []
        return json.loads(m3shd(*args, env=self.env).stdout)["token"]

    def stop(self) -> None:
        """gunicorn's quick shutdown (SIGINT): tests need not wait out idle keep-alive connections."""
        if self.process:
            self.process.stop(sig=signal.SIGINT)

    def nodes(self) -> list[dict]:
        return self.api.list_nodes()

    def wait_task(self, task_id: int, timeout: float = 20, states=("succeeded", "failed", "cancelled")) -> dict:
        return wait_until(lambda: (t := self.api.get_task(task_id, wait=1)) and t["state"] in states and t,
                          timeout, what=f"task {task_id} to reach {states}")


class N0D3:
    def __init__(self, commander: Commander, name: str, slots: int = 1, env: dict | None = None):
        self.name = name
        self.state_dir = commander.home / f"n0d3-{name}"
        self.env = base_env(commander.home) | {
            "M3SHD_N0D3_URL": commander.url, "M3SHD_N0D3_JOIN_TOKEN": commander.join_token,
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


@pytest.fixture(scope="session")
def m3shd_wheel(tmp_path_factory) -> Path:
    """This checkout as a wheel, built once per run (the image tiers ship it)."""
    dest = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dest),
                    str(Path(__file__).parent.parent)], check=True, capture_output=True)
    return next(dest.glob("m3shd-*.whl"))


@pytest.fixture
def commander(tmp_path):
    started = Commander(tmp_path)
    yield started
    started.stop()


@pytest.fixture
def spawn_n0d3(commander):
    started: list[N0D3] = []

    def spawn(name: str = "alpha", slots: int = 1, env: dict | None = None, wait: bool = True) -> N0D3:
        node = N0D3(commander, name, slots, env)
        started.append(node)
        if wait:
            node.wait_registered()
        return node

    yield spawn
    for node in started:
        node.process.stop()
