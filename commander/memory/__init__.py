"""Agent memory: what agents remember, sealed at rest, searchable without plaintext (docs/memory.md).

- words.py: the blind index: normalised words mapped through a keyed HMAC, for FTS5;
- store.py: the memories of a scope (an agent's, or `shared`), encrypted with cmdr.box;
- blocks.py: the [REMEMBER] grammar: parsing an answer's blocks, and the answer without them;
- remember.py: a succeeded task's blocks stored for its agent (task_finished);
- inject.py: the relevant memories added to a task's prompt when it is leased, and what provenance
  rebuilds of it;
- consolidate.py: near-duplicate memories of a scope merged (MinHash over the blind tokens), daily;
- api.py: the /api/agents/<name>/memory routes (`memory:read`, `memory:write`).
"""

from __future__ import annotations

from commander.memory import consolidate


def init(cmdr) -> None:
    """Check the settings (a bad one stops the start) and hang [REMEMBER] extraction on
    task_finished (injection is on the lease path itself)."""
    consolidate.check(cmdr.settings)
    # Imported here, not above: commander.schemas imports blocks.py (a task's answer is shown
    # without its blocks), and loading this package must not pull in the agents, which import schemas.
    from commander.memory import remember

    cmdr.signals.task_finished.connect(remember.on_task_finished)


def start(cmdr) -> None:
    """Per worker process, with the other background threads: the daily consolidation."""
    consolidate.start(cmdr)
