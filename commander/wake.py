"""Waking waiters when the database changes, within one worker and across gunicorn workers.

SQLite has no LISTEN/NOTIFY, so each worker process binds a Unix datagram socket in the run
directory; whoever commits a change sends one byte to every socket there. A worker that
receives it bumps its `generation` and wakes its waiters (SSE streams, task waits, and the
dispatcher that hands queued work to long-polling nodes). A lost datagram costs at most the
dispatcher's one-second sweep.

Under gunicorn's gevent worker `threading` is monkey-patched, so the threads here are greenlets.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger("m3shd.commander")

_MAX_UNIX_PATH = 100  # sockaddr_un holds 104 bytes on macOS, 108 on Linux


def run_dir_for(data_dir: str) -> Path:
    """A short directory for the wake sockets: under the data dir unless that path is too long."""
    candidate = Path(data_dir) / "run"
    if len(str(candidate / "wake-4194304.sock")) > _MAX_UNIX_PATH:
        digest = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:12]
        candidate = Path(tempfile.gettempdir()) / f"m3shd-{digest}"
    candidate.mkdir(parents=True, exist_ok=True, mode=0o700)
    return candidate


class Notifier:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.generation = 0
        self._cond = threading.Condition()
        self._own: Path | None = None
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)

    def start(self) -> None:
        """Bind this process's socket and listen on it (call once per worker process)."""
        self._own = self.run_dir / f"wake-{os.getpid()}.sock"
        self._own.unlink(missing_ok=True)
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.bind(str(self._own))
        threading.Thread(target=self._listen, args=(receiver,), name="wake-listener", daemon=True).start()

    def stop(self) -> None:
        if self._own:
            self._own.unlink(missing_ok=True)

    def _listen(self, receiver: socket.socket) -> None:
        while True:
            receiver.recv(16)
            self._bump()

    def _bump(self) -> None:
        with self._cond:
            self.generation += 1
            self._cond.notify_all()

    def notify(self) -> None:
        """Something changed: wake this process now and every other worker by datagram."""
        self._bump()
        for path in self.run_dir.glob("wake-*.sock"):
            if path == self._own:
                continue
            try:
                self._sender.sendto(b"!", str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                path.unlink(missing_ok=True)  # a worker that died without cleaning up
            except BlockingIOError:
                pass  # its queue is full of wake-ups already

    def wait(self, generation: int, timeout: float) -> int:
        """Block until the generation moves past `generation` or `timeout` passes."""
        with self._cond:
            self._cond.wait_for(lambda: self.generation != generation, timeout)
            return self.generation


class Waiter:
    __slots__ = ("node_id", "capabilities", "open_slots", "done", "leases")

    def __init__(self, node_id: int, capabilities: set[str], open_slots: int):
        self.node_id, self.capabilities, self.open_slots = node_id, capabilities, open_slots
        self.done = threading.Event()
        self.leases: list | None = None


class Dispatcher:
    """Hands queued tasks to the nodes long-polling in this worker that the scheduler picks.

    One thread per worker does the claiming, and only for the nodes the plan gives work, so a
    new task wakes one claim transaction, not every waiting node (no thundering herd).
    """

    def __init__(self, notifier: Notifier, claim, choose, inactive_nodes):
        self._notifier = notifier
        self._claim = claim                    # (node_id, open_slots, task ids) -> list of leases
        self._choose = choose                  # ({node_id: capabilities}) -> {node_id: task ids it gets}
        self._inactive_nodes = inactive_nodes  # (node_ids) -> ids no longer active
        self._waiters: dict[int, Waiter] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._run, name="dispatcher", daemon=True).start()

    def wait_for_work(self, node_id: int, capabilities: set[str], open_slots: int, timeout: float) -> list:
        waiter = Waiter(node_id, capabilities, open_slots)
        with self._lock:
            previous = self._waiters.pop(node_id, None)
            self._waiters[node_id] = waiter
        if previous:
            previous.done.set()  # a node has one claim at a time; the newer one wins
        if not waiter.done.wait(timeout):
            with self._lock:
                if self._waiters.get(node_id) is waiter:
                    del self._waiters[node_id]
                    return []
            waiter.done.wait()  # the dispatcher took it mid-claim: its answer is coming
        return waiter.leases or []

    def _run(self) -> None:
        generation = self._notifier.generation
        swept = time.monotonic()
        while True:
            generation = self._notifier.wait(generation, timeout=1.0)
            if not self._waiters:
                continue
            try:
                # Once a second, not on every wake: end the long-polls of nodes that were paused,
                # drained or lost meanwhile (a query over every waiter is too dear per commit).
                if time.monotonic() - swept >= 1.0:
                    swept = time.monotonic()
                    self.release_inactive()
                self.dispatch()
            except Exception:  # the database may be briefly unavailable; try again next round
                log.exception("dispatch failed")

    def release_inactive(self) -> None:
        with self._lock:
            waiting = [w.node_id for w in self._waiters.values()]
        for node_id in self._inactive_nodes(waiting):
            self._release(self._waiters.get(node_id), [])

    def dispatch(self) -> None:
        with self._lock:
            waiting = dict(self._waiters)
        if not waiting:
            return
        for node_id, task_ids in self._choose({n: w.capabilities for n, w in waiting.items()}).items():
            waiter = waiting[node_id]
            with self._lock:
                if self._waiters.get(node_id) is not waiter:
                    continue
                del self._waiters[node_id]
            leases = []
            try:
                leases = self._claim(node_id, waiter.open_slots, task_ids)
            finally:
                self._deliver(waiter, leases)  # empty if another worker was quicker: it waits again

    def _release(self, waiter: Waiter | None, leases: list) -> None:
        if waiter is None:
            return
        with self._lock:
            if self._waiters.get(waiter.node_id) is waiter:
                del self._waiters[waiter.node_id]
        self._deliver(waiter, leases)

    @staticmethod
    def _deliver(waiter: Waiter, leases: list) -> None:
        waiter.leases = leases
        waiter.done.set()
