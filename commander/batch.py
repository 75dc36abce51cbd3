"""Group commit: many small, frequent writes share one write turn and one transaction.

Writers take turns at SQLite's write lock (db.WriteTurns), and each turn costs more than the
write it guards: a hand-over between greenlets, a look at the lock file, a commit. At 1,000 nodes
one turn per write was the bottleneck: measured, 50–80 requests per worker queued for the turn
(p90 1 s) while the CPU idled, each holding a pooled connection, until the pool ran out (503s).

Every signed node request writes its nonce (replay protection) and every heartbeat updates its
node: at 1,000 nodes about 250 writes a second (a heartbeat's nonce goes into its own update,
see auth.check_node_request). So these join a batch. The first to arrive leads: it takes the
turn and runs every write queued by then, each in a savepoint (one that raises rolls back alone
and is raised to its own caller), in one transaction; the others wait without a connection.
Writes that arrive meanwhile form the next batch, led by the first of them. Alone, a write is a
batch of one: nothing waits for company.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class _Write:
    __slots__ = ("work", "done", "leads", "value", "error")

    def __init__(self, work: Callable[[], Any]):
        self.work = work
        self.done = threading.Event()
        self.leads = False
        self.value: Any = None
        self.error: BaseException | None = None


class GroupCommit:
    def __init__(self, cmdr):
        self._cmdr = cmdr
        self._lock = threading.Lock()
        self._queue: list[_Write] = []
        self._leading = False

    def run(self, work: Callable[[], Any]) -> Any:
        """`work()` inside a write transaction shared with the other writes queued with it;
        returns what it returned, or raises what it raised (its own writes rolled back)."""
        write = _Write(work)
        with self._lock:
            self._queue.append(write)
            write.leads = not self._leading
            self._leading = True
        if not write.leads:
            self._cmdr.db.close()  # wait holding no pooled connection
            write.done.wait()
        if write.leads:
            self._lead()
        if write.error is not None:
            raise write.error
        return write.value

    def _lead(self) -> None:
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            self._apply(batch)
        finally:
            with self._lock:
                if self._queue:
                    self._queue[0].leads = True  # it leads the next batch
                    self._queue[0].done.set()
                else:
                    self._leading = False
            for write in batch:
                write.done.set()

    def _apply(self, batch: list[_Write]) -> None:
        db = self._cmdr.db
        try:
            with self._cmdr.writing(wake=False):
                for write in batch:
                    try:
                        with db.atomic():  # a savepoint: one failing write rolls back alone
                            write.value = write.work()
                    except Exception as exc:  # noqa: BLE001 - handed to its own caller
                        write.error = exc
        except Exception as exc:  # the commit failed: nothing in the batch was written
            for write in batch:
                write.value, write.error = None, exc
