"""The scheduler's view of the database: the queue in serving order, the nodes that can take
work now, and the plan that matches them (commander/scheduler.py does the choosing).

A claim takes what the plan gives its node, plus any task that has waited `best_node_wait`
for a better node that did not come for it. Each worker's dispatcher runs the same plan to
decide which of its long-polling nodes should claim at all.
"""

from __future__ import annotations

from collections import Counter

import peewee as pw

from commander import breakers, reputation, scheduler
from commander.models import ACTIVE, CLOSED, LEASED, QUEUED, Node, Task
from commander.scheduler import Candidate, TaskView

QUEUE_LOOKAHEAD = 64  # tasks considered per pass: enough to fill every free slot a pass can see


def breaker_of(node: Node) -> breakers.Breaker:
    return breakers.Breaker(node.breaker_state, node.breaker_failures, node.breaker_cooldown,
                            node.breaker_until, node.breaker_probe)


def ready(t: float):
    """Queued tasks not waiting out a retry backoff."""
    return (Task.state == QUEUED) & (Task.not_before.is_null() | (Task.not_before <= t))


def runnable_classes(t: float) -> list[tuple[str, ...]]:
    """The distinct `requires` of ready tasks: a cheap first look before any claim."""
    return [tuple(row.requires) for row in Task.select(Task.requires).where(ready(t)).distinct()]


def queue(t: float, settings: dict, runnable: list[list[str]] | None = None) -> list[TaskView]:
    """The head of the queue in serving order (scheduler.fair_order)."""
    aging = settings["aging"] or float("inf")
    where = ready(t) if runnable is None else ready(t) & Task.requires.in_values(runnable)
    rows = (
        Task.select(Task.id, Task.requires, Task.prefer, Task.priority, Task.submitter, Task.updated_at,
                    Task.created_at, Task.tried_nodes)
        .where(where)
        .order_by((Task.priority + (t - Task.updated_at) / aging).desc(), Task.id)
        .limit(QUEUE_LOOKAHEAD)
    )
    if not rows:
        return []
    views = [
        TaskView(id=r.id, requires=frozenset(r.requires), prefer=frozenset(r.prefer), priority=r.priority,
                 submitter=r.submitter, waited=t - r.updated_at, created_at=r.created_at,
                 tried_nodes=frozenset(r.tried_nodes))
        for r in rows
    ]
    # Recent service, not just work in flight: with one slot nothing is in flight at a claim.
    served = Counter(dict(
        Task.select(Task.submitter, pw.fn.COUNT(Task.id))
        .where((Task.state == LEASED) | (Task.started_at > t - settings["fairness_window"]))
        .group_by(Task.submitter).tuples()
    ))
    return scheduler.fair_order(views, served, settings["aging"])


def candidates(t: float, settings: dict) -> list[Candidate]:
    """Every node taking work (busy ones too: a retry may wait for one), with its free slots as
    the Commander counts them."""
    running = dict(
        Task.select(Task.node, pw.fn.COUNT(Task.id)).where(Task.state == LEASED).group_by(Task.node).tuples()
    )
    half_life = settings["reputation_half_life"]
    able = []
    for node in Node.select().where(
        (Node.state == ACTIVE) & Node.problem.is_null() & (Node.last_seen > t - settings["lost_after"])
    ):
        free = min(node.open_slots, node.slots - running.get(node.id, 0))
        probe = False
        if node.breaker_state != CLOSED:
            limit, _ = breakers.admits(breaker_of(node), t)
            if limit == 0:
                continue
            free, probe = min(free, limit), True
        able.append(Candidate(
                node_id=node.id, capabilities=frozenset(node.capabilities), slots=node.slots, free=free,
                heartbeat_age=max(0.0, t - node.last_seen), priority=node.priority, mean=node.rep_mean,
                count=reputation.count_now(node.rep_count, node.rep_at, t, half_life), probe=probe,
        ))
    return able


def plan(tasks: list[TaskView], nodes: list[Candidate], settings: dict) -> list[tuple[TaskView, int | None]]:
    """Each task with the node best placed to run it, in serving order (None: no node can take
    it now); a node's free slots are used up as tasks are placed on it."""
    ranking = scheduler.Ranking(nodes, settings)
    return [(task, ranking.place(task)) for task in tasks]


def claimable(placed, node_id: int, capabilities: frozenset[str], settings: dict) -> list[TaskView]:
    """The planned tasks `node_id` should take: those it is best for, and those that waited long
    enough for another node."""
    patience = settings["best_node_wait"]
    return [
        task for task, best in placed
        if task.requires <= capabilities and (best == node_id or task.waited >= patience)
    ]


def who_should_claim(t: float, settings: dict, waiting: dict[int, frozenset[str]]) -> list[int]:
    """Of the nodes long-polling in this worker (id → capabilities), those the plan gives work."""
    tasks = queue(t, settings)
    if not tasks:
        return []
    placed = plan(tasks, candidates(t, settings), settings)
    chosen = []
    for node_id, capabilities in waiting.items():
        if claimable(placed, node_id, capabilities, settings):
            chosen.append(node_id)
    return chosen
