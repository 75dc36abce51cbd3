"""Learning: a succeeded task's [REMEMBER] blocks become its agent's memories.

Receives task_finished (commander/signals.py), inside the transaction that stored the result, so
the memories commit with the result or not at all. It stays cheap: an answer without `[REMEMBER`
costs one substring test; one with blocks, a linear parse and a few inserts (the caps bound them).
A block goes to the agent's own scope, or to `shared` when it says `scope=shared` or the agent's
profile says `memory = "shared"`; an agent whose profile says `memory = "off"` stores none.
What was stored and what was wrong is published as a `task.memory` event on the task.
"""

from __future__ import annotations

from commander import events
from commander.agents import service as agents
from commander.memory import blocks, store
from commander.models import SUCCEEDED

OFF, SHARED = "off", "shared"  # an agent profile's `memory` (commander/agents/profile.py), besides "own"
from commander.signals import TaskFinished


def on_task_finished(cmdr, finished: TaskFinished) -> bool:
    task = finished.task
    if task.state != SUCCEEDED or not task.output or blocks.OPEN not in task.output or not task.agent:
        return False
    mode = agents.version_of(cmdr, task.agent, task.agent_version).profile.memory
    if mode == OFF:
        return False
    own = store.SHARED if mode == SHARED else task.agent
    found = blocks.parse(task.output, cmdr.settings.memory_value_max, cmdr.settings.memory_task_max)
    stored = []
    for block in found.blocks:
        row, _ = store.put(cmdr, block.scope or own, block.value, block.key, block.tags, source_task=task.id)
        stored.append(row.id)
    events.publish("task.memory", task=task.id, agent=task.agent, stored=stored, problems=found.problems)
    return False
