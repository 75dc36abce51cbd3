"""The /api/agents/<name>/memory routes: reading needs `memory:read`, storing and forgetting
`memory:write`. `<name>` is an agent, or `shared` for the memories every agent reads. A token
scoped to one agent reaches that agent's memories and the shared ones only."""

from __future__ import annotations

from typing import Annotated

from flask import Blueprint
from pydantic import Field, StringConstraints

from commander.agents import service as agents
from commander.auth import principal
from commander.exceptions import Forbidden
from commander.memory import blocks, consolidate, store
from commander.routes import api_route, commander
from commander.schemas import Id, Request, Response

bp = Blueprint("memory", __name__)

Tag = Annotated[str, StringConstraints(pattern=blocks.TAG.pattern)]


class MemoryIn(Request):
    key: Annotated[str, StringConstraints(min_length=1, max_length=blocks.KEY_LONGEST)] | None = Field(
        None, description="storing a key the scope holds already replaces its value")
    value: Annotated[str, StringConstraints(min_length=1, max_length=100_000)]
    tags: Annotated[list[Tag], Field(max_length=blocks.MOST_TAGS)] = []


class MemoryQuery(Request):
    # 500: percent-encoded (up to 12 bytes a character) it still fits gunicorn's request line (server.py).
    q: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = Field(
        None, description="search: memories sharing words with this text, best first")
    limit: Annotated[int, Field(ge=1, le=500)] = 50
    before_id: Id | None = None


class MemoryOut(Response):
    id: int
    scope: str = Field(description="the agent whose memory it is, or `shared`")
    key: str | None
    value: str
    tags: list[str]
    source_task: int | None = Field(description="the task whose [REMEMBER] block stored it")
    created_at: float
    updated_at: float
    last_used_at: float | None = Field(description="when a prompt was last given it")
    use_count: int = Field(description="how many prompts were given it")
    merged_into: int | None = Field(description="consolidation merged it into that memory: it is no longer listed, "
                                                "searched or given")


class Merge(Response):
    scope: str
    kept: int = Field(description="the memory that took the others' uses and tags")
    merged: list[int] = Field(description="memories merged into it: no longer listed, searched or given")


class MergeList(Response):
    merges: list[Merge]


class MemoryList(Response):
    scope: str
    memories: list[MemoryOut]


def scope_of(name: str) -> str:
    """The scope `name` names, once the caller may reach it (NotFound for an unknown agent)."""
    caller = principal().agent
    if name != store.SHARED:
        if caller is not None and name != caller:
            raise Forbidden("agent_scope", f"a token for agent `{caller}` reaches its memories and the shared ones, "
                                           f"not those of `{name}`")
        agents.get(name)
    return name


def shown(memory: store.Remembered) -> MemoryOut:
    return MemoryOut(**vars(memory))


@api_route(bp, "GET", "/agents/<name>/memory", permission="memory:read", query=MemoryQuery, response=MemoryList,
           agent_scoped=True)
def list_memories(name: str, query: MemoryQuery):
    """An agent's memories (or the shared ones), newest first; with `q`, those matching it, best first."""
    scope, cmdr = scope_of(name), commander()
    if query.q:
        found = [store.opened(cmdr, row) for row in store.search(cmdr, [scope], query.q, query.limit)]
    else:
        found = store.listing(cmdr, scope, query.limit, query.before_id)
    return MemoryList(scope=scope, memories=[shown(memory) for memory in found])


@api_route(bp, "GET", "/agents/<name>/memory/<id:memory_id>", permission="memory:read", response=MemoryOut,
           agent_scoped=True)
def get_memory(name: str, memory_id: int):
    """One memory."""
    return shown(store.get(commander(), scope_of(name), memory_id))


@api_route(bp, "PUT", "/agents/<name>/memory", permission="memory:write", body=MemoryIn, response=MemoryOut,
           status=201, also=(200,), agent_scoped=True)
def put_memory(name: str, body: MemoryIn):
    """Store a memory (201), or replace the value of its key, or find the same memory stored already (200)."""
    cmdr, scope = commander(), scope_of(name)
    with cmdr.writing():
        row, created = store.put(cmdr, scope, body.value, body.key, body.tags)
        memory = store.get(cmdr, scope, row.id)
    return shown(memory), 201 if created else 200


@api_route(bp, "DELETE", "/agents/<name>/memory/<id:memory_id>", permission="memory:write", status=204,
           agent_scoped=True)
def forget_memory(name: str, memory_id: int):
    """Forget a memory: it and its index entry are deleted."""
    cmdr, scope = commander(), scope_of(name)
    with cmdr.writing():
        store.forget(scope, memory_id)


@api_route(bp, "POST", "/memory/consolidate", permission="memory:write", response=MergeList)
def consolidate_memories():
    """Merge near-duplicate memories in every scope now (also done daily at memory_consolidate_at)."""
    return MergeList(merges=[Merge(**merge) for merge in consolidate.consolidate(commander())])
