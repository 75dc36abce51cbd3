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

from commander.db import Compiled, CompiledInsert, CompiledUpdate, Param
from commander.exceptions import NotFound
from commander.memory import words
from commander.models import Memory, MemoryTokenDocs, MemoryWords, now

SHARED = "shared"

# Injection searches on every lease, and a task's [REMEMBER] blocks are stored inside its
# result's transaction: their queries are compiled once (db.Compiled; building them with peewee
# each time took most of a store, bench/memory.py). bm25 ranks best first (lowest).
SEARCH = Compiled(MemoryWords, lambda: MemoryWords.select(MemoryWords.rowid).where(
    MemoryWords.match(Param("query"))).order_by(MemoryWords.bm25()).limit(Param("limit")))
BY_IDS = Compiled(Memory, lambda ids: Memory.select().where(Memory.id.in_(ids)))
BY_KEY = Compiled(Memory, lambda: Memory.select().where(
    (Memory.scope == Param("scope")) & (Memory.key_hash == Param("key_hash"))))
# By scope and content hash alone, so SQLite searches the (scope, content_hash) index: with
# `key_hash IS NULL` in the query it took the (scope, key_hash) one and read every keyless
# memory of the scope, each store slower than the last (test_memory.py checks the plan).
BY_CONTENT = Compiled(Memory, lambda: Memory.select().where(
    (Memory.scope == Param("scope")) & (Memory.content_hash == Param("content_hash"))))
MEMORY_INSERT = CompiledInsert(Memory)
SEALED_FIELDS = ("value", "tags", "content_hash", "updated_at")
RESEAL = CompiledUpdate(Memory, SEALED_FIELDS, ("id",))
TOUCH = CompiledUpdate(Memory, ("updated_at",), ("id",))
INDEX = Compiled(MemoryWords, lambda: MemoryWords.insert(rowid=Param("id"), words=Param("words")))
INDEXED = Compiled(MemoryWords, lambda ids: MemoryWords.select(MemoryWords.words).where(MemoryWords.rowid.in_(ids)))
UNINDEX = Compiled(MemoryWords, lambda ids: MemoryWords.delete().where(MemoryWords.rowid.in_(ids)))
COUNT_UP = Compiled(MemoryTokenDocs, lambda: MemoryTokenDocs.insert(token=Param("token"), docs=1).on_conflict(
    conflict_target=[MemoryTokenDocs.token], update={MemoryTokenDocs.docs: MemoryTokenDocs.docs + 1}))
COUNT_DOWN = Compiled(MemoryTokenDocs, lambda tokens: MemoryTokenDocs.update(docs=MemoryTokenDocs.docs - 1).where(
    MemoryTokenDocs.token.in_(tokens)))
UNCOUNT = Compiled(MemoryTokenDocs, lambda tokens: MemoryTokenDocs.delete().where(
    MemoryTokenDocs.token.in_(tokens) & (MemoryTokenDocs.docs <= 0)))
COUNTS = Compiled(MemoryTokenDocs, lambda tokens: MemoryTokenDocs.select(MemoryTokenDocs.token, MemoryTokenDocs.docs)
                  .where(MemoryTokenDocs.token.in_(tokens)))
# A lease's search ranks the memories holding the prompt's rarest words: words are added rarest
# first while the memories holding them stay within this many (bm25 scores every memory a query
# matches, ~2 µs each: all of a long prompt's words matched 900 of 20,000 memories, 4 ms;
# bench/memory.py). The rarest word is always searched, however many hold it.
RELEVANT_DOCS = 100


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
    merged_into: int | None


def opened(cmdr, row: Memory) -> Remembered:
    box = cmdr.box
    return Remembered(
        id=row.id, scope=row.scope, key=box.decrypt(row.key).decode() if row.key else None,
        value=box.decrypt(row.value).decode(), tags=json.loads(box.decrypt(row.tags)),
        source_task=row.source_task_id, created_at=row.created_at, updated_at=row.updated_at,
        last_used_at=row.last_used_at, use_count=row.use_count, merged_into=row.merged_into)


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
    found = BY_KEY.rows(scope=scope, key_hash=key_hash) if key_hash else [
        row for row in BY_CONTENT.rows(scope=scope, content_hash=content_hash)
        if row.key_hash is None and row.merged_into is None]
    if found:
        existing = found[0]
        if existing.content_hash == content_hash and opened(cmdr, existing).tags == tags:
            TOUCH.execute({"id": existing.id}, updated_at=t)
            return existing, False
        RESEAL.execute({"id": existing.id}, **sealed)
        unindex([existing.id])
        _index(cmdr, existing.id, scope, key, value, tags)
        return Memory.get_by_id(existing.id), False
    row = MEMORY_INSERT.create(scope=scope, key_hash=key_hash, key=cmdr.box.encrypt(key.encode()) if key else None,
                               source_task=source_task, created_at=t, **sealed)
    _index(cmdr, row.id, scope, key, value, tags)
    return row, True


def _folded(key: str) -> str:
    """Keys compare as their normalised words: "Home WiFi" and "home wifi" are one key."""
    return " ".join(words.words(key)) or key.strip()


def _index(cmdr, memory_id: int, scope: str, key: str | None, value: str, tags: list[str]) -> None:
    tokens = words.tokens(cmdr.box.index_key, scope, index_text(key, value, tags))
    INDEX.execute(id=memory_id, words=" ".join(tokens))
    for token in set(tokens):
        COUNT_UP.execute(token=token)


def unindex(memory_ids: list[int]) -> None:
    """Take memories out of the blind index, and their tokens out of the counts."""
    for (indexed,) in INDEXED.tuples(ids=memory_ids):
        tokens = list(set(indexed.split()))
        if tokens:
            COUNT_DOWN.execute(tokens=tokens)
            UNCOUNT.execute(tokens=tokens)
    UNINDEX.execute(ids=memory_ids)


def compact() -> None:
    """Merge the blind index's segments into one. FTS5 adds a segment per write transaction and
    merges them only now and then (automerge); a search looks each word up in every segment."""
    MemoryWords.optimize()


def get(cmdr, scope: str, memory_id: int) -> Remembered:
    row = Memory.get_or_none((Memory.id == memory_id) & (Memory.scope == scope))
    if row is None:
        raise NotFound("no_memory", f"{_described(scope)} has no memory {memory_id}")
    return opened(cmdr, row)


def listing(cmdr, scope: str, limit: int, before_id: int | None = None) -> list[Remembered]:
    """The scope's memories, most recently stored first."""
    found = Memory.select().where((Memory.scope == scope) & Memory.merged_into.is_null())
    if before_id:
        found = found.where(Memory.id < before_id)
    return [opened(cmdr, row) for row in found.order_by(Memory.id.desc()).limit(limit)]


def ranked(cmdr, scopes: list[str], text: str, limit: int) -> list[int]:
    """The ids of the memories of `scopes` that share words with `text`, best first (bm25)."""
    return _best(words.query(cmdr.box.index_key, scopes, text), limit)


def relevant(cmdr, scopes: list[str], text: str, limit: int) -> list[int]:
    """`ranked`, for a lease: only `text`'s rarest searched words (RELEVANT_DOCS), the ones that
    say most about it; a word no memory of `scopes` holds costs no search at all."""
    wanted = words.query_tokens(cmdr.box.index_key, scopes, text)
    docs = dict(COUNTS.tuples(tokens=wanted)) if wanted else {}
    chosen, matched = [], 0
    for token in sorted(docs, key=docs.get):
        if chosen and matched + docs[token] > RELEVANT_DOCS:
            break
        chosen.append(token)
        matched += docs[token]
    return _best(words.any_of(chosen) if chosen else None, limit)


def _best(expression: str | None, limit: int) -> list[int]:
    """The ids an FTS5 query matches, best first (none for no query)."""
    return [memory_id for (memory_id,) in SEARCH.tuples(query=expression, limit=limit)] if expression else []


def search(cmdr, scopes: list[str], text: str, limit: int) -> list[Memory]:
    """The memories `ranked` finds, as sealed rows, best first."""
    ids = ranked(cmdr, scopes, text, limit)
    rows = {row.id: row for row in BY_IDS.rows(ids=ids)} if ids else {}
    return [rows[memory_id] for memory_id in ids if memory_id in rows]


def forget(scope: str, memory_id: int) -> None:
    """Delete a memory, and those consolidation merged into it (forgotten, their content must go too)."""
    if not Memory.delete().where((Memory.id == memory_id) & (Memory.scope == scope)).execute():
        raise NotFound("no_memory", f"{_described(scope)} has no memory {memory_id}")
    unindex([memory_id])
    Memory.delete().where(Memory.merged_into == memory_id).execute()


def _described(scope: str) -> str:
    return "the shared scope" if scope == SHARED else f"agent {scope}"
