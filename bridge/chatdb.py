"""Read-only access to Messages' chat.db, with the schema probed, never assumed.

Columns come and go across macOS releases (replies in Big Sur, edit/unsend in Ventura, …), so
each query selects a column only when this database has it and a neutral constant otherwise.
Every connection is fresh and `mode=ro`: never `immutable=1`, which would hide the WAL, where
Messages writes new rows first.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

APPLE_EPOCH = 978307200          # 2001-01-01T00:00:00Z in Unix seconds
NANOSECOND_DATES_FROM = 10**12   # larger raw dates are nanoseconds (High Sierra onwards), smaller seconds
STYLE_GROUP = 43                 # chat.style of a group chat (45: one-to-one)

REQUIRED = {
    "message": ("ROWID", "guid", "handle_id", "date", "is_from_me"),
    "handle": ("ROWID", "id"),
    "chat": ("ROWID", "guid"),
    "chat_message_join": ("chat_id", "message_id"),
}
# column → what to select instead when this database lacks it
MESSAGE_OPTIONAL = {
    "text": "NULL", "attributedBody": "NULL", "service": "NULL", "item_type": "0",
    "associated_message_type": "0", "cache_has_attachments": "0", "date_retracted": "0",
}
ATTACHMENT_OPTIONAL = {"filename": "NULL", "transfer_state": "NULL", "total_bytes": "NULL", "transfer_name": "NULL"}


class ChatDbProblem(Exception):
    """The bridge cannot read chat.db; the message says exactly what to do about it."""


@dataclass(frozen=True)
class Schema:
    columns: dict[str, frozenset[str]]

    def has(self, table: str, column: str | None = None) -> bool:
        return table in self.columns and (column is None or column in self.columns[table])


def full_disk_access_advice(path: Path) -> str:
    binary = os.path.realpath(sys.executable)
    return (f"cannot read {path}: macOS allows it only with Full Disk Access. Grant it to {binary}: "
            f"System Settings → Privacy & Security → Full Disk Access → +, press ⌘⇧G, paste {binary}, "
            f"switch it on, then restart the bridge")


def check_readable(path: Path) -> None:
    """Raise ChatDbProblem with the one fix for a missing file, missing Full Disk Access, or not a database."""
    try:
        with open(path, "rb") as file:
            header = file.read(16)
    except FileNotFoundError:
        raise ChatDbProblem(f"no Messages database at {path}: sign in to Messages on this Mac with your Apple ID "
                            f"and open it once (that creates the file), or set [bridge] chat_db") from None
    except PermissionError:
        raise ChatDbProblem(full_disk_access_advice(path)) from None
    if header != b"SQLite format 3\x00":
        raise ChatDbProblem(f"{path} is not an SQLite database; point [bridge] chat_db at ~/Library/Messages/chat.db")


@contextlib.contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A fresh read-only connection, closed afterwards: each poll sees the WAL as it is now."""
    try:
        db = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True, timeout=2.0)
    except sqlite3.OperationalError as exc:
        raise ChatDbProblem(f"cannot open {path}: {exc}") from None
    db.row_factory = sqlite3.Row
    try:
        yield db
    finally:
        db.close()


def probe(db: sqlite3.Connection) -> Schema:
    try:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    except sqlite3.DatabaseError as exc:
        # TCC lets the open succeed and fails the first read when Full Disk Access is missing.
        if "authoriz" in str(exc) or "unable to open" in str(exc):
            raise ChatDbProblem(full_disk_access_advice(Path(db_path(db)))) from None
        raise ChatDbProblem(f"cannot read the Messages database: {exc}") from None
    columns = {table: frozenset(row[0] for row in db.execute("SELECT name FROM pragma_table_info(?)", (table,)))
               for table in tables}
    schema = Schema(columns)
    for table, needed in REQUIRED.items():
        missing = [column for column in needed if not schema.has(table, column)]
        if missing:
            raise ChatDbProblem(f"this is not a Messages database this bridge understands: table {table} lacks "
                                f"{', '.join(missing)}")
    return schema


def db_path(db: sqlite3.Connection) -> str:
    return next((row[2] for row in db.execute("PRAGMA database_list") if row[1] == "main"), "chat.db")


def _select(schema: Schema, table: str, alias: str, optional: dict[str, str]) -> str:
    # Names and fallbacks are this module's constants: nothing from the database or a message.
    return ", ".join(f"{alias}.{name}" if schema.has(table, name) else f"{fallback} AS {name}"
                     for name, fallback in optional.items())


def _is_group(schema: Schema) -> str:
    if schema.has("chat", "style"):
        return f"c.style = {STYLE_GROUP}"
    if schema.has("chat_handle_join"):
        return "(SELECT COUNT(*) FROM chat_handle_join WHERE chat_id = c.ROWID) > 1"
    return "0"


def max_rowid(db: sqlite3.Connection) -> int:
    return db.execute("SELECT COALESCE(MAX(ROWID), 0) FROM message").fetchone()[0]


def messages_after(db: sqlite3.Connection, schema: Schema, rowid: int, limit: int = 200) -> list[sqlite3.Row]:
    """Messages with ROWID > rowid, oldest first, each with its sender's address and its chat."""
    query = (
        f"SELECT m.ROWID AS rowid, m.guid, m.date, m.is_from_me, {_select(schema, 'message', 'm', MESSAGE_OPTIONAL)}, "
        f"h.id AS sender, c.guid AS chat_guid, {_is_group(schema)} AS is_group "
        "FROM message m LEFT JOIN handle h ON h.ROWID = m.handle_id "
        "LEFT JOIN chat c ON c.ROWID = (SELECT chat_id FROM chat_message_join WHERE message_id = m.ROWID "
        "ORDER BY chat_id LIMIT 1) "
        "WHERE m.ROWID > ? ORDER BY m.ROWID LIMIT ?"
    )
    return db.execute(query, (rowid, limit)).fetchall()


def from_me(db: sqlite3.Connection, rowids: list[int]) -> set[int]:
    """Which of these messages are (now) marked as ours: the flag can flip after the row appears."""
    rows = db.execute("SELECT ROWID FROM message WHERE is_from_me = 1 AND ROWID IN (SELECT value FROM json_each(?))",
                      (json.dumps(rowids),))
    return {row[0] for row in rows}


def attachments(db: sqlite3.Connection, schema: Schema, rowid: int) -> list[sqlite3.Row]:
    if not (schema.has("attachment") and schema.has("message_attachment_join")):
        return []
    query = (f"SELECT {_select(schema, 'attachment', 'a', ATTACHMENT_OPTIONAL)} FROM message_attachment_join j "
             "JOIN attachment a ON a.ROWID = j.attachment_id WHERE j.message_id = ? ORDER BY a.ROWID")
    return db.execute(query, (rowid,)).fetchall()


def unix_time(raw: int | None) -> float | None:
    """A chat.db date as Unix seconds; None for the 0/NULL/negative of drafts and damaged rows."""
    if not raw or raw <= 0:
        return None
    seconds = raw / 1e9 if raw > NANOSECOND_DATES_FROM else raw
    return seconds + APPLE_EPOCH
