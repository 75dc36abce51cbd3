"""What every request and background thread of one Commander process shares."""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import peewee as pw

from commander import planning
from commander.batch import GroupCommit
from commander.db import WriteTurns, flock_when_free, write_transaction
from commander.keyring import SecretBox
from commander.settings import CommanderSettings
from commander.signals import Signals
from commander.wake import Dispatcher, Notifier
from m3shd import loops

log = logging.getLogger("m3shd.commander")


@dataclass
class Commander:
    settings: CommanderSettings
    db: pw.Database
    box: SecretBox
    notifier: Notifier
    schema_version: int = 0  # the database's, once migrated at start-up (so /api/health reads no database)
    write_turns: WriteTurns | None = None  # SQLite only: its writers take turns without stalling a worker
    dispatcher: Dispatcher | None = None
    signals: Signals = field(default_factory=Signals)  # connected by each feature's init (app.build_commander)
    agent_files: tuple = (0.0, None)  # (when, what) profile files were last looked at (agents.check_files)
    plugins: object = None  # the plugin manager and its tools (commander/plugins), loaded by its init
    spend_folded: int = 0  # the last ledger row this process saw folded into the roll-ups (spend/ledger.py)
    small_writes: GroupCommit = field(init=False)  # nonces and heartbeats commit in groups (commander/batch.py)
    _cache: dict = field(default_factory=dict)
    _started: bool = False
    _start_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        self.small_writes = GroupCommit(self)

    @contextmanager
    def writing(self, wake: bool = True):
        """A write transaction; waiters everywhere are woken once it has committed. The hot
        paths that usually change nothing anyone follows (heartbeats, empty claims) pass
        wake=False and wake by hand when they did publish. Writers take turns first (WriteTurns),
        so nothing inside should yield to other greenlets (network, sleeps, thread offloads):
        every other writer of every worker waits for the turn meanwhile. So the pooled connection
        is taken before the turn: waiting for one from a busy pool inside it would stall them all."""
        self.db.connect(reuse_if_open=True)
        with self.write_turn(), write_transaction(self.db):
            yield
        if wake:
            self.notifier.notify()

    def write_turn(self):
        """Hold this around a write made outside `writing` (a single autocommit statement)."""
        return self.write_turns.turn() if self.write_turns else nullcontext()

    def cached(self, key: str, ttl: float, load):
        """`load()`, remembered for `ttl` seconds in this worker (for derived views only)."""
        hit = self._cache.get(key)
        if hit is None or time.monotonic() - hit[0] >= ttl:
            hit = self._cache[key] = (time.monotonic(), load())
        return hit[1]

    def ranking(self, including: int | None = None):
        """The fleet's idle ranking (planning.idle_ranking), shared by this worker's plans for
        FLEET_TTL; made afresh when its rows lack node `including` (one that just registered or
        came back)."""
        def load():
            t = time.time()
            rows = planning.fleet(t, self.settings)
            return frozenset(row[0] for row in rows), planning.idle_ranking(t, self.settings, rows)

        node_ids, ranking = self.cached("ranking", planning.FLEET_TTL, load)
        if including is not None and including not in node_ids:
            fresh = load()
            self._cache["ranking"] = (time.monotonic(), fresh)
            node_ids, ranking = fresh
        return ranking

    def run_alone(self, name: str, step, every: float, cap: float) -> None:
        """Call `step()` every `every` seconds, with a database connection, forever (loops.run_forever,
        backing off up to `cap` after failures), in the one worker process that holds the lock
        `<run dir>/<name>.lock`: the OS releases it if that worker dies, and another takes over."""
        lock = os.open(self.notifier.run_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        flock_when_free(lock, every, every)

        def once() -> None:
            time.sleep(every)
            with self.db.connection_context():
                step()

        loops.run_forever(name, once, logger=log, base=every, cap=cap)

    def ensure_started(self, start) -> None:
        """Start this process's background threads once, on first use (after gunicorn forks)."""
        if self._started:
            return
        with self._start_lock:
            if not self._started:
                start(self)
                self._started = True
