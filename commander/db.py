"""Open the Commander's database from its URL and bring its schema up to date."""

from __future__ import annotations

import fcntl
import functools
import operator
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import peewee as pw
from playhouse.db_url import connect as connect_url
from playhouse.pool import PooledSqliteDatabase

from commander.models import database_proxy

# WAL lets readers run beside the one writer; NORMAL is durable across process crashes
# (only a power cut can lose the last commits); the busy timeout rides out writer turns.
SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",
    "busy_timeout": 10_000,
    "foreign_keys": 1,
    "cache_size": -16_000,
}


def open_database(url: str) -> pw.Database:
    """Bind the models to the database named by `url` (sqlite:///path or a peewee db_url)."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = Path(parsed.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread off: the pool hands a connection to one thread at a time, not always the same one.
        database = PooledSqliteDatabase(
            str(path), pragmas=SQLITE_PRAGMAS, max_connections=64, stale_timeout=600, timeout=30,
            check_same_thread=False,
        )
    else:
        database = connect_url(url)
    database_proxy.initialize(database)
    return database


def is_sqlite(database: pw.Database) -> bool:
    return isinstance(database, pw.SqliteDatabase)


def write_transaction(database: pw.Database):
    """A write transaction that takes SQLite's write lock up front, so it never deadlocks
    upgrading a read lock; other databases use their default isolation."""
    if is_sqlite(database):
        return database.atomic("IMMEDIATE")
    return database.atomic()


def flock_when_free(fd: int, first_wait: float, longest_wait: float) -> None:
    """Take an exclusive flock, looking again after a sleep (doubling up to `longest_wait`) while
    another process holds it; under gevent each sleep lets the worker serve others."""
    wait = first_wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            time.sleep(wait)
            wait = min(2 * wait, longest_wait)


class WriteTurns:
    """Takes turns at SQLite's one write lock across this Commander's workers, without stalling one.

    SQLite's own busy wait sleeps inside the C library; under gevent that stops every request of
    the waiting worker, not just the writer (measured at 1,000 nodes: 2 s of stalls in 15 s, and
    the tail latencies with them). Here writers queue on a lock file instead and wait with
    `time.sleep`, which gevent turns into a yield, so the worker serves others meanwhile. Only the
    Commander's writes take turns; another writer (a CLI command) still meets the busy timeout.
    """

    FIRST_WAIT, LONGEST_WAIT = 0.0002, 0.002  # seconds between looks at a lock another worker holds

    def __init__(self, path: Path):
        self.path = path
        self._in_process = threading.Lock()  # greenlets of one worker queue here (flock is per process)
        self._file: tuple[int, int] | None = None  # (pid, fd): opened after gunicorn forks, once per process

    def _fd(self) -> int:
        if self._file is None or self._file[0] != os.getpid():
            self._file = (os.getpid(), os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        return self._file[1]

    @contextmanager
    def turn(self):
        with self._in_process:
            fd = self._fd()
            flock_when_free(fd, self.FIRST_WAIT, self.LONGEST_WAIT)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)


class Compiled:
    """A fixed-shape query turned into SQL text once, then run with fresh parameters.

    On SQLite, building a query's SQL with peewee costs more than running it; the queries the
    hot paths run (node requests, claims, plans, submits, events) are compiled here. `build`
    returns the query with placeholder values; calls pass the parameters in the order its
    `.sql()` lists them. A query whose shape varies (an `IN` list) takes `shape`, passed to
    `build`, and keeps one text per shape. Still parameterized SQL, made by peewee for whichever
    database is bound.
    """

    def __init__(self, model: type[pw.Model], build):
        self.model, self.build, self._text = model, build, {}

    def _sql(self, shape: tuple) -> tuple[str, int]:
        key = (self.model._meta.database.obj, shape)  # the proxy's current database
        if key not in self._text:
            sql, params = self.build(*shape).sql()
            self._text[key] = (sql, len(params))
        return self._text[key]

    def _checked(self, params: tuple, shape: tuple) -> str:
        sql, count = self._sql(shape)
        assert len(params) == count, f"{count} parameters expected"
        return sql

    def _run(self, params: tuple, shape: tuple):
        return self.model._meta.database.execute_sql(self._checked(params, shape), params)

    def rows(self, *params, shape: tuple = ()) -> list:
        """Model instances, each field converted as peewee would."""
        return list(self.model.raw(self._checked(params, shape), *params))

    def tuples(self, *params, shape: tuple = ()) -> list[tuple]:
        """Raw column values, unconverted: for rows read by the hundred, or what a write RETURNs
        (fetched whole, so the statement finishes)."""
        return self._run(params, shape).fetchall()

    def execute(self, *params, shape: tuple = ()) -> int:
        """Run a write; returns the number of rows it changed."""
        return self._run(params, shape).rowcount


class CompiledInsert:
    """`Model.create(**values)` for a hot path: the INSERT of every column, compiled once.

    The row is built as a model instance first, so defaults and field conversions are exactly
    peewee's; returns that instance with its new id, as `create` does."""

    def __init__(self, model: type[pw.Model]):
        primary_key = model._meta.primary_key
        self.fields = [f for f in model._meta.sorted_fields if f is not primary_key]
        self.model = model
        self.statement = Compiled(model, lambda: model.insert({f: None for f in self.fields}).returning(primary_key))

    def create(self, **values) -> pw.Model:
        row = self.model(**values)
        params = tuple(f.db_value(row.__data__.get(f.name)) for f in self.fields)
        # fetchall: a RETURNING statement left unfinished would keep its write pending.
        row._pk = self.statement._run(params, ()).fetchall()[0][0]
        row._dirty.clear()
        return row


class CompiledUpdate:
    """`UPDATE model SET fields WHERE each match field equals`, compiled once, called by name:
    `execute({"id": 7, "state": "queued"}, state="leased", ...)`; returns the rows changed."""

    def __init__(self, model: type[pw.Model], fields: tuple[str, ...], match: tuple[str, ...]):
        order = {f.name: i for i, f in enumerate(model._meta.sorted_fields)}
        # In field order, which is also the order peewee writes SET in.
        self.fields = [model._meta.fields[name] for name in sorted(set(fields), key=order.__getitem__)]
        self.match = [model._meta.fields[name] for name in match]
        where = functools.reduce(operator.and_, [f == 0 for f in self.match])
        self.statement = Compiled(model, lambda: model.update({f: 0 for f in self.fields}).where(where))

    def execute(self, match: dict, **values) -> int:
        if values.keys() != {f.name for f in self.fields}:
            raise TypeError(f"set exactly {sorted(f.name for f in self.fields)}")
        params = [f.db_value(values[f.name]) for f in self.fields] + [f.db_value(match[f.name]) for f in self.match]
        return self.statement._run(tuple(params), ()).rowcount
