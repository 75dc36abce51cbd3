"""Waking waiters when the database changes, within one worker and across gunicorn workers.

SQLite has no LISTEN/NOTIFY, so each worker process binds a Unix datagram socket in the run
directory; whoever commits a change sends one byte to every socket there. A worker that
receives it bumps its `generation` and wakes its waiters (SSE streams and task waits). The byte
also says whether the change may have given a waiting node work (a task queued, a node or
breaker changed state); only then is `work_generation` bumped and the dispatcher that hands
queued work to long-polling nodes wakes to plan: a lease taken or a task finished gives no
other node anything to do, and planning on every commit was a fifth of the Commander's time
at full load. A lost datagram costs at most the dispatcher's one-second sweep.

A worker's plan may give a task to a node long-polling in another worker. Their plans share
one database but not one instant (each reuses its fleet ranking for a moment), so the other
worker may have placed the task elsewhere, and neither would claim it. So the planner hands
such a task off: a datagram to the other workers names the node and the tasks, and the worker
where that node waits claims them for it. If both plans differ, both claims are tried and the
database lets one take the task; the other node just keeps waiting.

Under gunicorn's gevent worker `threading` is monkey-patched, so the threads here are greenlets.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

from m3shd import loops

log = logging.getLogger("m3shd.commander")

_MAX_UNIX_PATH = 100  # sockaddr_un holds 104 bytes on macOS, 108 on Linux
# The datagram: a change that may give a waiting node work, any other change, or a hand-off
# (b"h<node id>:<task id>,<task id>…").
_WORK, _CHANGE, _HANDOFF = b"w", b"c", b"h"


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
        self.generation = 0       # bumped by every commit
        self.work_generation = 0  # bumped by the commits that may have given a waiting node work
        self._cond = threading.Condition()
        self._own: Path | None = None
        self.on_handoff = None  # (node id, task ids) -> None: set by this worker's Dispatcher
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)

    def start(self) -> None:
        """Bind this process's socket and listen on it (call once per worker process)."""
        self._own = self.run_dir / f"wake-{os.getpid()}.sock"
        self._own.unlink(missing_ok=True)
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.bind(str(self._own))
        self._own.chmod(0o600)  # only this user's processes may wake or hand work to a worker
        # A datagram that breaks the listener costs a few milliseconds of deafness, never the thread.
        loops.start("wake-listener", functools.partial(self._receive, receiver), logger=log, base=0.01, cap=1.0)

    def stop(self) -> None:
        if self._own:
            self._own.unlink(missing_ok=True)

    def _receive(self, receiver: socket.socket) -> None:
        message = receiver.recv(4096)
        if message[:1] != _HANDOFF:
            self._bump(message == _WORK)
        elif self.on_handoff:
            node_id, _, task_ids = message[1:].decode().partition(":")
            self.on_handoff(int(node_id), [int(task_id) for task_id in task_ids.split(",")])

    def _bump(self, work: bool) -> None:
        with self._cond:
            self.generation += 1
            self.work_generation += work
            self._cond.notify_all()

    def notify(self, work: bool = True) -> None:
        """Something changed: wake this process now and every other worker by datagram.
        `work=False`: the change gave no waiting node anything new to claim."""
        self._bump(work)
        self._send(_WORK if work else _CHANGE)

    def hand_off(self, node_id: int, task_ids: list[int]) -> None:
        """Ask the other workers to claim `task_ids` for `node_id` (the one where it waits will)."""
        self._send(_HANDOFF + f"{node_id}:{','.join(map(str, task_ids))}".encode())

    def _send(self, message: bytes) -> None:
        for path in self.run_dir.glob("wake-*.sock"):
            if path == self._own:
                continue
            try:
                self._sender.sendto(message, str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                path.unlink(missing_ok=True)  # a worker that died without cleaning up
            except BlockingIOError:
                pass  # its queue is full of wake-ups already

    def wait(self, generation: int, timeout: float, work: bool = False) -> int:
        """Block until the generation (`work_generation` if `work`) moves past `generation` or
        `timeout` passes; returns it."""
        def current() -> int:
            return self.work_generation if work else self.generation

        with self._cond:
            self._cond.wait_for(lambda: current() != generation, timeout)
            return current()


class Waiter:
    __slots__ = ("node_id", "token_id", "open_slots", "done", "leases", "gave_up", "superseded")

    def __init__(self, node_id: int, token_id: int, open_slots: int):
        self.node_id, self.token_id, self.open_slots = node_id, token_id, open_slots
        self.done = threading.Event()
        self.leases: list | None = None
        self.gave_up = False  # its wait ran out while a claim for it was under way
        self.superseded = False  # a newer claim of its node took its place


class Dispatcher:
    """Hands queued tasks to the nodes long-polling in this worker that the scheduler picks.

    One thread per worker does the claiming, and only for the nodes the plan gives work, so a
    new task wakes one claim transaction, not every waiting node (no thundering herd). Tasks
    the plan gives nodes waiting elsewhere are handed off to the other workers (see above).
    """

    SWEEP_S = 1.0  # at least this often the dispatcher plans, and releases nodes no longer active

    def __init__(self, notifier: Notifier, claim, choose, waiting_in_vain):
        self._notifier = notifier
        self._claim = claim                      # (node_id, token_id, open_slots, task ids) -> list of leases
        self._choose = choose                    # (waiting node ids) -> planning.Handout
        self._waiting_in_vain = waiting_in_vain  # ({node_id: token_id}) -> ids of nodes that can take no work
        self._waiters: dict[int, Waiter] = {}
        self._lock = threading.Lock()
        notifier.on_handoff = self._take_handoff
        # The planning rounds' own state (see _plan_once).
        self._generation = notifier.work_generation
        self._swept = time.monotonic()
        self._timeout = self.SWEEP_S

    def start(self) -> None:
        # The database may be briefly unavailable: the next round tries again.
        loops.start("dispatcher", self._plan_once, logger=log, base=0.05, cap=self.SWEEP_S)

    def wait_for_work(self, node_id: int, token_id: int, open_slots: int, timeout: float) -> list | None:
        """Leases for `node_id` (claimed with its token `token_id`) as soon as the plan gives it
        work, or [] after `timeout` seconds or once it can take none (see release_inactive);
        None once a newer claim of the node waits in its place (that claim's long-poll is over)."""
        waiter = Waiter(node_id, token_id, open_slots)
        with self._lock:
            previous = self._waiters.pop(node_id, None)
            self._waiters[node_id] = waiter
        if previous:  # a node has one claim at a time; the newer one wins
            previous.superseded = True
            previous.done.set()
        if not waiter.done.wait(timeout):
            with self._lock:
                if self._waiters.get(node_id) is waiter:
                    del self._waiters[node_id]
                    return []
                waiter.gave_up = True
            waiter.done.wait()  # a claim for it is under way: its answer is coming
        return None if waiter.superseded else waiter.leases or []

    def _plan_once(self) -> None:
        """One round: wait for a change that may give work (or the sweep), then plan and claim."""
        self._generation = self._notifier.wait(self._generation, timeout=self._timeout, work=True)
        self._timeout = self.SWEEP_S
        if not self._waiters:
            return
        # Once a second, not on every wake: end the long-polls of nodes that were paused,
        # drained, lost or removed meanwhile, or whose token died (a query over every waiter is
        # too dear per commit; a claim checks its own node and token in any case).
        if time.monotonic() - self._swept >= self.SWEEP_S:
            self._swept = time.monotonic()
            self.release_inactive()
        due = self.dispatch()
        if due is not None:  # a held task becomes anyone's then: plan again at that moment
            self._timeout = min(self._timeout, due + 0.005)

    def release_inactive(self) -> None:
        with self._lock:
            waiting = {w.node_id: w.token_id for w in self._waiters.values()}
        for node_id in self._waiting_in_vain(waiting):
            self._release(self._waiters.get(node_id), [])

    def dispatch(self) -> float | None:
        """Claim for the waiting nodes the plan gives work; returns seconds until the plan changes
        by itself (see planning.who_should_claim)."""
        with self._lock:
            waiting = dict(self._waiters)
        if not waiting:
            return None
        handout = self._choose(list(waiting))
        for node_id, task_ids in handout.elsewhere.items():
            self._notifier.hand_off(node_id, task_ids)
        for node_id, task_ids in handout.here.items():
            self._claim_for(waiting[node_id], task_ids)
        return handout.replan_in

    def _take_handoff(self, node_id: int, task_ids: list[int]) -> None:
        """Another worker's plan gave these tasks to `node_id`: claim them if it waits here (in a
        thread of its own: the wake listener must not wait for the database)."""
        waiter = self._waiters.get(node_id)
        if waiter is not None:
            threading.Thread(target=self._claim_for, args=(waiter, task_ids), daemon=True).start()

    def _claim_for(self, waiter: Waiter, task_ids: list[int]) -> None:
        with self._lock:
            if self._waiters.get(waiter.node_id) is not waiter:
                return  # answered meanwhile, or replaced by a newer claim
            del self._waiters[waiter.node_id]
        leases = []
        try:
            leases = self._claim(waiter.node_id, waiter.token_id, waiter.open_slots, task_ids)
        finally:
            if leases or not self._wait_again(waiter):
                self._deliver(waiter, leases)

    def _wait_again(self, waiter: Waiter) -> bool:
        """Back in line after a claim that got nothing (another node was quicker), unless its wait
        ran out meanwhile or a newer claim of the node took its place."""
        with self._lock:
            if waiter.node_id in self._waiters:
                waiter.superseded = True  # the newer claim came while this one's was tried
                return False
            if waiter.gave_up:
                return False
            self._waiters[waiter.node_id] = waiter
            return True

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
