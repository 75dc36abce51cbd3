"""Open the Commander's database from its URL and bring its schema up to date."""

from __future__ import annotations

import fcntl
import functools
import inspect
import operator
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
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


def open_database(url: str, pool_size: int = 64, pool_wait: float = 5.0) -> pw.Database:
    """Bind the models to the database named by `url` (sqlite:///path or a peewee db_url).

    SQLite connections come from a pool of `pool_size` per process; a request that finds none
    free within `pool_wait` seconds gets MaxConnectionsExceeded (answered 503, errors.py). A
    connection is taken at the first query (autoconnect), not when a request starts."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = Path(parsed.path)
        make_private(path)
        # check_same_thread off: the pool hands a connection to one thread at a time, not always the same one.
        # A wait of None is one look; peewee would read 0 as "wait forever".
        database = PooledSqliteDatabase(
            str(path), pragmas=SQLITE_PRAGMAS, max_connections=pool_size, stale_timeout=600,
            timeout=pool_wait or None, check_same_thread=False,
        )
    else:
        database = connect_url(url)
    database_proxy.initialize(database)
    return database


def make_private(path: Path) -> None:
    """The database file, and its WAL and shared-memory files, readable by this user only: they
    hold every token hash, prompt and output. SQLite gives the -wal and -shm files the database
    file's mode when it creates them, so the file is made 0600 before SQLite first opens it;
    files an older version left readable to others are made 0600 too."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if name.exists():
            name.chmod(0o600)


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


class Param(pw.ColumnBase):
    """A named placeholder in a compiled query: `Task.id == Param("task_id")`. It adds itself to
    the statement's parameters as a marker, so the compiled text knows which name sits where."""

    def __init__(self, name: str | tuple[str, int]):
        super().__init__()
        self.name = name

    def __sql__(self, ctx):
        # converter=False: the marker must reach the parameter list untouched by the field's
        # db_value (a value is bound as given; see Compiled).
        return ctx.value(_Slot(self.name), converter=False)


class ParamList(pw.ColumnBase):
    """`(?, ?, …)` for a list bound by name, as many markers as the list has items."""

    def __init__(self, name: str, count: int):
        super().__init__()
        self.name, self.count = name, count

    def __sql__(self, ctx):
        return ctx.sql(pw.EnclosedNodeList([Param((self.name, i)) for i in range(self.count)]))


@dataclass(frozen=True)
class _Slot:
    name: str | tuple[str, int]


@dataclass(frozen=True)
class _Text:
    sql: str
    order: tuple          # per parameter position: a name, a (list name, index), or the position of a constant
    constants: dict       # position → value peewee put there (a constant written into the query)
    names: frozenset[str]


class Compiled:
    """A fixed-shape query turned into SQL text once, then run with fresh parameters, by name.

    On SQLite, building a query's SQL with peewee costs more than running it; the queries the
    hot paths run (node requests, claims, plans, submits, events) are compiled here (the log of
    c07cdd1 measured submit→claim p50 6.2 → 4.6 ms). `build` returns the query with a `Param`
    wherever a value goes (`Node.id == Param("node_id")`); calls bind them by name
    (`rows(node_id=7)`) and a missing or unexpected name raises TypeError. A name may appear
    more than once. Constants written into the query (`Task.state == QUEUED`) are bound as
    peewee converted them. Values are bound as given: pass what the column stores (a JSONField's
    `db_value`), as `execute_sql` takes them.

    An `IN` list is the one varying shape: each parameter of `build` names a list, `build` gets
    a `ParamList` for it (`Task.id.in_(ids)`), and one text is kept per list length. Still
    parameterized SQL, made by peewee for whichever database is bound.
    """

    CHUNK = 100  # items per query of `tuples_among`

    def __init__(self, model: type[pw.Model], build):
        self.model, self.build, self._text = model, build, {}
        self.lists = tuple(inspect.signature(build).parameters)

    def _compile(self, shape: tuple[int, ...]) -> _Text:
        sql, params = self.build(*(ParamList(name, count) for name, count in zip(self.lists, shape))).sql()
        order, constants = [], {}
        for position, param in enumerate(params):
            if isinstance(param, _Slot):
                order.append(param.name)
            else:
                constants[position] = param
                order.append(position)
        names = frozenset(name for name in order if isinstance(name, str)) | frozenset(self.lists)
        return _Text(sql, tuple(order), constants, names)

    def _bind(self, values: dict) -> tuple[str, list]:
        try:
            shape = tuple(len(values[name]) for name in self.lists)
        except KeyError:
            raise TypeError(f"{self.model.__name__} query: the lists {sorted(self.lists)} are all needed, "
                            f"got {sorted(values)}") from None
        key = (self.model._meta.database.obj, shape)  # the proxy's current database
        text = self._text.get(key)
        if text is None:
            text = self._text[key] = self._compile(shape)
        if values.keys() != text.names:
            missing, unexpected = sorted(text.names - values.keys()), sorted(values.keys() - text.names)
            raise TypeError(f"{self.model.__name__} query takes {sorted(text.names)}: "
                            f"missing {missing}, unexpected {unexpected}")
        lookup = {**text.constants, **values}
        for name in self.lists:
            lookup.update(((name, i), value) for i, value in enumerate(values[name]))
        return text.sql, [lookup[name] for name in text.order]

    def _run(self, values: dict):
        return self.model._meta.database.execute_sql(*self._bind(values))

    def rows(self, **values) -> list:
        """Model instances, each field converted as peewee would."""
        sql, params = self._bind(values)
        return list(self.model.raw(sql, *params))

    def tuples(self, **values) -> list[tuple]:
        """Raw column values, unconverted: for rows read by the hundred, or what a write RETURNs
        (fetched whole, so the statement finishes)."""
        return self._run(values).fetchall()

    def tuples_among(self, name: str, items: list, **values) -> list[tuple]:
        """`tuples` for the IN list `name` of any length: asked CHUNK items at a time, each chunk
        padded to CHUNK with its own last item (an IN list ignores repeats), so one text serves
        every length where `tuples` keeps one per length (a sweep over every waiting node)."""
        found = []
        for start in range(0, len(items), self.CHUNK):
            chunk = items[start:start + self.CHUNK]
            found += self.tuples(**values, **{name: chunk + chunk[-1:] * (self.CHUNK - len(chunk))})
        return found

    def execute(self, **values) -> int:
        """Run a write; returns the number of rows it changed."""
        return self._run(values).rowcount

    def inserted(self, **values) -> int:
        """Run an INSERT of one row; returns its id."""
        return self._run(values).lastrowid


class CompiledInsert:
    """`Model.create(**values)` for a hot path: the INSERT of every column, compiled once.

    The row is built as a model instance first, so defaults and field conversions are exactly
    peewee's; returns that instance with its new id, as `create` does."""

    def __init__(self, model: type[pw.Model]):
        primary_key = model._meta.primary_key
        self.fields = [f for f in model._meta.sorted_fields if f is not primary_key]
        self.model = model
        self.statement = Compiled(model, lambda: model.insert({f: Param(f.name) for f in self.fields})
                                  .returning(primary_key))

    def create(self, **values) -> pw.Model:
        row = self.model(**values)
        # tuples() fetches all: a RETURNING statement left unfinished would keep its write pending.
        row._pk = self.statement.tuples(**{f.name: f.db_value(row.__data__.get(f.name)) for f in self.fields})[0][0]
        row._dirty.clear()
        return row


class CompiledUpdate:
    """`UPDATE model SET fields WHERE each match field equals`, compiled once, called by name:
    `execute({"id": 7, "state": "queued"}, state="leased", ...)`; each value goes through its
    field's `db_value`. Returns the rows changed; a missing or unexpected name raises TypeError."""

    def __init__(self, model: type[pw.Model], fields: tuple[str, ...], match: tuple[str, ...]):
        self.fields = [model._meta.fields[name] for name in dict.fromkeys(fields)]
        self.match = [model._meta.fields[name] for name in match]
        self.names = frozenset(f.name for f in self.fields), frozenset(f.name for f in self.match)
        # Match parameters are named apart: a field may be both matched and set (a state change).
        where = functools.reduce(operator.and_, [f == Param(f"match:{f.name}") for f in self.match])
        self.statement = Compiled(model, lambda: model.update({f: Param(f.name) for f in self.fields}).where(where))

    def execute(self, match: dict, **values) -> int:
        if (values.keys(), match.keys()) != self.names:
            raise TypeError(f"{self.statement.model.__name__} update sets exactly {sorted(self.names[0])} "
                            f"where {sorted(self.names[1])}; got {sorted(values)} where {sorted(match)}")
        params = {f.name: f.db_value(values[f.name]) for f in self.fields}
        params.update((f"match:{f.name}", f.db_value(match[f.name])) for f in self.match)
        return self.statement.execute(**params)
