"""The `recall` and `remember` tools: a task's agent searches and adds to its own memories (and
the shared ones) mid-task, through the memory store (commander/memory/store.py: sealed values, the
blind index).

A call reaches only the memories of the agent the task runs as, plus the shared scope: the scope
comes from the task the lease holds, never from the model's arguments. So the tools need no
memory permission on the node's token (nodes hold none, SECURITY.md): the lease, and the agent's
`plugin_tools` listing them, are the grant. An agent whose profile says `memory = "off"` gets a
refusal, as it gets no memories in its prompt.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from commander.agents import service as agents
from commander.memory import remember as learning, store
from commander.models import Task
from commander.plugins.manager import ToolError


class RecallArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: Annotated[str, StringConstraints(min_length=1, max_length=2000)] = Field(
        description="words to look for (whole words; the best matches come first)")
    limit: int = Field(5, ge=1, le=20, description="most memories to return")


class RememberArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: Annotated[str, StringConstraints(min_length=1, max_length=4000)] = Field(description="what to remember")
    key: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        None, description="a name for it: remembering under a key again replaces the value")
    tags: list[Annotated[str, StringConstraints(min_length=1, max_length=40)]] = Field([], max_length=10)
    shared: bool = Field(False, description="for every agent, not only this one")


def scope_of(call) -> str:
    """The task's agent, if it may use memories at all."""
    if call.agent is None:
        raise ToolError("this task runs as no agent, so it has no memories")
    version = Task.get_by_id(call.task_id).agent_version
    if agents.version_of(call.cmdr, call.agent, version).profile.memory == learning.OFF:
        raise ToolError(f"agent {call.agent} keeps no memories (its profile says memory = \"off\")")
    return call.agent


def recall(call, args: RecallArgs) -> dict:
    cmdr = call.cmdr
    with cmdr.db.connection_context():
        scope = scope_of(call)
        found = [store.opened(cmdr, row) for row in store.search(cmdr, [scope, store.SHARED], args.query, args.limit)]
    return {"memories": [dict(id=m.id, key=m.key, value=m.value, tags=m.tags, shared=m.scope == store.SHARED)
                         for m in found]}


def remember(call, args: RememberArgs) -> dict:
    cmdr = call.cmdr
    if len(args.value) > cmdr.settings.memory_value_max:
        raise ToolError(f"a memory holds at most {cmdr.settings.memory_value_max} characters; shorten it")
    with cmdr.db.connection_context():
        own = scope_of(call)  # an agent without memories shares none either
        scope = store.SHARED if args.shared else own
        with cmdr.writing(wake=False):
            row, created = store.put(cmdr, scope, args.value, args.key, args.tags, source_task=call.task_id)
    return {"id": row.id, "created": created, "shared": scope == store.SHARED}


def setup(manager) -> None:
    manager.tool("recall", "Search your memories (and the shared ones) from earlier tasks; returns the best "
                           "matches with their ids.", RecallArgs, recall, timeout=10)
    manager.tool("remember", "Remember something for later tasks (optionally under a key, with tags, or shared "
                             "with every agent).", RememberArgs, remember, timeout=10)
