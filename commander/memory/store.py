"""The memory store: what an agent remembers, sealed before it reaches the database.

A memory lives in a scope: an agent's name (its own memories) or `shared` (every agent's). It has
an optional key, a value and tags; all three are Fernet-encrypted with cmdr.box, since each may
carry content ("Dana's birthday: 3 May"). What stays clear holds no content: the scope, the
source task, times and the use count, plus two keyed hashes (words.keyed_hash, with the index
key): `key_hash`, so that storing a key again replaces its value (one memory per key and scope),
and `content_hash`, so that the same key and value stored twice stay one memory. The words of
key, value and tags go into the blind index (words.py). The callers hold the write transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from commander.db import Compiled, Param
from commander.exceptions import NotFound
from commander.memory import words
from commander.models import Memory, MemoryWords, now

SHARED = "shared"

# Injection searches on every lease: compiled once (db.Compiled). bm25 ranks best first (lowest).
SEARCH = Compiled(MemoryWords, lambda: MemoryWords.select(MemoryWords.rowid).where(
    MemoryWords.match(Param("query"))).order_by(MemoryWords.bm25()).limit(Param("limit")))


@dataclass(frozen=True)
class Remembered:
    """A memory as its callers see it: decrypted."""
    id: int
    scope: str
    key: str | None
    value: str
    tags: list[str]
    source_task: int | None
    created_at: float
    updated_at: float
    last_used_at: float | None
    use_count: int


def opened(cmdr, row: Memory) -> Remembered:
    box = cmdr.box
    return Remembered(
        id=row.id, scope=row.scope, key=box.decrypt(row.key).decode() if row.key else None,
        value=box.decrypt(row.value).decode(), tags=json.loads(box.decrypt(row.tags)),
        source_task=row.source_task_id, created_at=row.created_at, updated_at=row.updated_at,
        last_used_at=row.last_used_at, use_count=row.use_count)


def index_text(key: str | None, value: str, tags: list[str]) -> str:
    return " ".join([key or "", value, *tags])


def put(cmdr, scope: str, value: str, key: str | None = None, tags: list[str] | tuple[str, ...] = (),
        source_task: int | None = None) -> tuple[Memory, bool]:
    """Store a memory; returns (row, created). A key already stored in the scope gets the new
    value and tags; the same content stored again is the memory already there, touched."""
    index_key, t = cmdr.box.index_key, now()
    tags = sorted(set(tags))
    key_hash = words.keyed_hash(index_key, "key", _folded(key)) if key else None
    content_hash = words.keyed_hash(index_key, "content", f"{key or ''}\0{value}")
    sealed = dict(value=cmdr.box.encrypt(value.encode()), tags=cmdr.box.encrypt(json.dumps(tags).encode()),
                  content_hash=content_hash, updated_at=t)
    if key_hash:
        existing = Memory.get_or_none((Memory.scope == scope) & (Memory.key_hash == key_hash))
    else:
        existing = Memory.get_or_none((Memory.scope == scope) & (Memory.key_hash.is_null())
                                      & (Memory.content_hash == content_hash))
    if existing is not None:
        if existing.content_hash == content_hash and opened(cmdr, existing).tags == tags:
            Memory.update(updated_at=t).where(Memory.id == existing.id).execute()
            return existing, False
        Memory.update(**sealed).where(Memory.id == existing.id).execute()
        MemoryWords.delete().where(MemoryWords.rowid == existing.id).execute()
        _index(cmdr, existing.id, scope, key, value, tags)
        return Memory.get_by_id(existing.id), False
    row = Memory.create(scope=scope, key_hash=key_hash, key=cmdr.box.encrypt(key.encode()) if key else None,
                        source_task=source_task, created_at=t, **sealed)
    _index(cmdr, row.id, scope, key, value, tags)
    return row, True


def _folded(key: str) -> str:
    """Keys compare as their normalised words: "Home WiFi" and "home wifi" are one key."""
    return " ".join(words.words(key)) or key.strip()


def _index(cmdr, memory_id: int, scope: str, key: str | None, value: str, tags: list[str]) -> None:
    tokens = words.tokens(cmdr.box.index_key, scope, index_text(key, value, tags))
    MemoryWords.insert(rowid=memory_id, words=" ".join(tokens)).execute()


def get(cmdr, scope: str, memory_id: int) -> Remembered:
    row = Memory.get_or_none((Memory.id == memory_id) & (Memory.scope == scope))
    if row is None:
        raise NotFound("no_memory", f"{_described(scope)} has no memory {memory_id}")
    return opened(cmdr, row)


def listing(cmdr, scope: str, limit: int, before_id: int | None = None) -> list[Remembered]:
    """The scope's memories, most recently stored first."""
    found = Memory.select().where(Memory.scope == scope)
    if before_id:
        found = found.where(Memory.id < before_id)
    return [opened(cmdr, row) for row in found.order_by(Memory.id.desc()).limit(limit)]


def search(cmdr, scopes: list[str], text: str, limit: int) -> list[Memory]:
    """The memories of `scopes` that share words with `text`, best first (bm25), sealed."""
    expression = words.query(cmdr.box.index_key, scopes, text)
    if expression is None:
        return []
    ids = [memory_id for (memory_id,) in SEARCH.tuples(query=expression, limit=limit)]
    if not ids:
        return []
    rows = {row.id: row for row in Memory.select().where(Memory.id.in_(ids))}
    return [rows[memory_id] for memory_id in ids if memory_id in rows]


def forget(scope: str, memory_id: int) -> None:
    if not Memory.delete().where((Memory.id == memory_id) & (Memory.scope == scope)).execute():
        raise NotFound("no_memory", f"{_described(scope)} has no memory {memory_id}")
    MemoryWords.delete().where(MemoryWords.rowid == memory_id).execute()


def _described(scope: str) -> str:
    return "the shared scope" if scope == SHARED else f"agent {scope}"
