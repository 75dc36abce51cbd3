"""Consolidation: memories of one scope that say the same thing become one.

Two key-less memories of a scope are near duplicates when the Jaccard similarity of their blind
token sets (words.py; no decryption needed) is at least `memory_merge_similarity`. Candidates are
found with MinHash: a memory's sketch is, for each of HASHES salted bijections of 64-bit
values, the least image of its tokens; two memories whose sketches agree somewhere become a candidate pair, and only
candidates have their similarity computed. A pair at similarity J agrees on one salt with
probability J, so at the default 0.8 a pair is missed with probability 0.2^4 < 0.2 %, while the
work stays near-linear instead of the n² of comparing every pair. Clusters (pairs joined
transitively) keep their most used member (then the most recently updated); the others are
marked `merged_into` it and leave the index, and it takes their use counts and tags. Nothing is
deleted: a merged memory stays readable by id, with what it was merged into. Keyed memories are
never merged (a scope holds one per key: storing a key again replaces its value), and exact
duplicates cannot arise (storing the same content again is the memory already there).

`consolidate` runs in one write transaction per scope, then compacts the blind index (store.compact:
a lease's search reads every segment FTS5 has written since, and one segment took half its time,
bench/memory.py); `start` runs it daily at `memory_consolidate_at` (local time, `time_zone`) in
one worker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from datetime import datetime
from zoneinfo import ZoneInfo

from commander import events
from commander.memory import store
from commander.models import Memory, MemoryWords, now
from m3shd.config import ConfigError

log = logging.getLogger("m3shd.commander.memory")

HASHES = 4
MASK = 2 ** 64 - 1  # tokens are 64-bit (words.TOKEN_HEX)
# Each salt is a bijection of 64-bit values, x -> (a x + b) mod 2^64 with a odd, from fixed constants.
SALTS = tuple((int.from_bytes(hashlib.sha256(f"m3shd minhash {i}".encode()).digest()[:8], "big") | 1,
               int.from_bytes(hashlib.sha256(f"m3shd minhash {i}".encode()).digest()[8:16], "big"))
              for i in range(HASHES))
LARGEST_BUCKET = 200  # a sketch value shared by more (a very common word) proposes no pairs


def consolidate(cmdr, similarity: float | None = None) -> list[dict]:
    """Merge the near duplicates of every scope; returns [{scope, kept, merged: [ids]}]."""
    similarity = cmdr.settings.memory_merge_similarity if similarity is None else similarity
    scopes = [scope for (scope,) in Memory.select(Memory.scope).distinct().tuples()]
    done = []
    for scope in scopes:
        with cmdr.writing():
            for kept, merged in clusters(scope, similarity):
                merge(cmdr, scope, kept, merged)
                done.append(dict(scope=scope, kept=kept, merged=merged))
    with cmdr.writing():
        store.compact()
    return done


def clusters(scope: str, similarity: float) -> list[tuple[int, list[int]]]:
    rows = (Memory.select(Memory.id, Memory.use_count, Memory.updated_at, MemoryWords.words)
            .join(MemoryWords, on=(MemoryWords.rowid == Memory.id))
            .where((Memory.scope == scope) & Memory.key_hash.is_null() & Memory.merged_into.is_null()).tuples())
    tokens, rank = {}, {}
    for memory_id, uses, updated_at, words in rows:
        tokens[memory_id] = frozenset(words.split())
        rank[memory_id] = (uses, updated_at)
    buckets: dict[tuple[int, int], list[int]] = {}
    for memory_id, found in tokens.items():
        if not found:
            continue
        values = [int(token, 16) for token in found]
        for i, (a, b) in enumerate(SALTS):
            buckets.setdefault((i, min((a * value + b) & MASK for value in values)), []).append(memory_id)
    parent = {memory_id: memory_id for memory_id in tokens}

    def root(memory_id: int) -> int:
        while parent[memory_id] != memory_id:
            parent[memory_id] = parent[parent[memory_id]]
            memory_id = parent[memory_id]
        return memory_id

    checked = set()
    for members in buckets.values():
        if len(members) < 2 or len(members) > LARGEST_BUCKET:
            continue
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                if (a, b) in checked:
                    continue
                checked.add((a, b))
                if jaccard(tokens[a], tokens[b]) >= similarity:
                    parent[root(a)] = root(b)
    groups: dict[int, list[int]] = {}
    for memory_id in tokens:
        groups.setdefault(root(memory_id), []).append(memory_id)
    found = []
    for members in groups.values():
        if len(members) > 1:
            kept = max(members, key=lambda memory_id: (*rank[memory_id], memory_id))
            found.append((kept, sorted(m for m in members if m != kept)))
    return found


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b)


def merge(cmdr, scope: str, kept: int, merged: list[int]) -> None:
    rows = list(Memory.select().where(Memory.id.in_([kept, *merged])))
    tags = sorted({tag for row in rows for tag in json.loads(cmdr.box.decrypt(row.tags))})
    Memory.update(use_count=sum(row.use_count for row in rows), tags=cmdr.box.encrypt(json.dumps(tags).encode()),
                  updated_at=now()).where(Memory.id == kept).execute()
    Memory.update(merged_into=kept).where(Memory.id.in_(merged)).execute()
    store.unindex(merged)
    events.publish("memory.merged", scope=scope, kept=kept, merged=merged)


def check(settings) -> None:
    """A bad time or similarity stops the start, naming the key."""
    if settings.memory_consolidate_at and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", settings.memory_consolidate_at):
        raise ConfigError(f"[commander] memory_consolidate_at: expected HH:MM (24 h) or \"\", "
                          f"got {settings.memory_consolidate_at!r}")
    if not 0 < settings.memory_merge_similarity <= 1:
        raise ConfigError(f"[commander] memory_merge_similarity: expected a number above 0 and at most 1, "
                          f"got {settings.memory_merge_similarity!r}")


def due(settings, last_day: str | None, t: float) -> str | None:
    """The local day to consolidate now, if its `memory_consolidate_at` has come and it has not run."""
    if not settings.memory_consolidate_at:
        return None
    local = datetime.fromtimestamp(t, ZoneInfo(settings.time_zone))
    day = local.date().isoformat()
    return day if local.strftime("%H:%M") >= settings.memory_consolidate_at and day != last_day else None


def start(cmdr) -> None:
    """Once a day at memory_consolidate_at, in the one worker that holds the lock."""
    last: list[str | None] = [None]

    def step() -> None:
        if day := due(cmdr.settings, last[0], time.time()):
            merged = consolidate(cmdr)
            last[0] = day
            log.info("memory consolidated for %s: %d merges", day, len(merged))
    threading.Thread(target=cmdr.run_alone, args=("memory-consolidation", step, 60.0, 600.0), name="memory",
                     daemon=True).start()
