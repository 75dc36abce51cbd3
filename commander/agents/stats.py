"""Each agent's live state, read from the task table when asked (never stored).

- queued and running: one grouped count over the live tasks (the task state index finds them);
- the window: the agent's latest WINDOW tasks that succeeded or failed, newest first, through
  the (agent, finished_at) index: their success rate, median duration, tokens and cost.

A count of the last 100 rather than of the last 7 days: its cost is bounded however busy an agent
is, and a rarely used agent still shows how its last runs went. Measured with
bench/agents_status.py (20 agents over 200,000 finished tasks, on a busy 2-core machine):
GET /api/agents took 35 ms at p50, 1.1x the queue's first page (GET /api/tasks, 31 ms), so no
rollup is kept: it would add a write under the write lock to every finished task, the hot path,
to save a few milliseconds on a page a person opens now and then.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import peewee as pw

from commander.db import Compiled, Param
from commander.models import FAILED, LEASED, QUEUED, SUCCEEDED, Task

WINDOW = 100

LATEST_FINISHED = Compiled(Task, lambda: (
    Task.select(Task.state, Task.duration_ms, Task.input_tokens, Task.output_tokens, Task.cost_usd)
    .where((Task.agent == Param("name")) & Task.finished_at.is_null(False) & Task.state.in_((SUCCEEDED, FAILED)))
    .order_by(Task.finished_at.desc()).limit(WINDOW)))


@dataclass(frozen=True)
class Stats:
    queued: int = 0
    running: int = 0
    window: int = 0            # finished tasks counted below (at most WINDOW)
    succeeded: int = 0
    failed: int = 0
    success_rate: float | None = None
    median_duration_ms: int | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


def live_counts(names: list[str]) -> dict[str, dict[str, int]]:
    """name → {state: count} for queued and running tasks."""
    counts: dict[str, dict[str, int]] = {}
    rows = (Task.select(Task.agent, Task.state, pw.fn.COUNT(Task.id))
            .where(Task.state.in_((QUEUED, LEASED)) & Task.agent.in_(names)).group_by(Task.agent, Task.state).tuples())
    for agent, state, count in rows:
        counts.setdefault(agent, {})[state] = count
    return counts


def of(names: list[str]) -> dict[str, Stats]:
    """Each named agent's state now."""
    if not names:
        return {}
    live = live_counts(names)
    return {name: summarize(live.get(name, {}), LATEST_FINISHED.tuples(name=name)) for name in names}


def summarize(live: dict[str, int], finished: list[tuple]) -> Stats:
    succeeded = sum(1 for state, *_ in finished if state == SUCCEEDED)
    durations = [duration for _, duration, *_ in finished if duration is not None]
    return Stats(
        queued=live.get(QUEUED, 0), running=live.get(LEASED, 0), window=len(finished), succeeded=succeeded,
        failed=len(finished) - succeeded, success_rate=succeeded / len(finished) if finished else None,
        median_duration_ms=int(statistics.median(durations)) if durations else None,
        input_tokens=sum(row[2] for row in finished), output_tokens=sum(row[3] for row in finished),
        cost_usd=sum(row[4] or 0.0 for row in finished))
