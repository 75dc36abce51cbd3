"""Open the Commander's database from its URL and bring its schema up to date."""

from __future__ import annotations

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


class Compiled:
    """A fixed-shape query turned into SQL text once, then run with fresh parameters.

    On SQLite, building a query's SQL with peewee costs more than running it; the few queries
    every node request runs (token, node, nonce, heartbeat) are compiled here. `build` returns
    the query with placeholder values; calls pass the parameters in the order its `.sql()` lists
    them. Still parameterized SQL, made by peewee for whichever database is bound.
    """

    def __init__(self, model: type[pw.Model], build):
        self.model, self.build, self._text = model, build, {}

    def _sql(self) -> tuple[str, int]:
        database = self.model._meta.database.obj  # the proxy's current database
        if database not in self._text:
            sql, params = self.build().sql()
            self._text[database] = (sql, len(params))
        return self._text[database]

    def rows(self, *params) -> list:
        sql, count = self._sql()
        assert len(params) == count, f"{count} parameters expected"
        return list(self.model.raw(sql, *params))

    def execute(self, *params) -> int:
        """Run a write; returns the number of rows it changed."""
        sql, count = self._sql()
        assert len(params) == count, f"{count} parameters expected"
        return self.model._meta.database.execute_sql(sql, params).rowcount
