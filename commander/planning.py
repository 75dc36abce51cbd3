"""The scheduler's view of the database: the queue in serving order, the nodes that can take
work now, and the plan that matches them (commander/scheduler.py does the choosing).

A claim takes what the plan gives its node, plus any task that has waited `best_node_wait`
for a better node that did not come for it. Each worker's dispatcher runs the same plan to
decide which of its long-polling nodes should claim at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from typing import NamedTuple

import peewee as pw

from commander import breakers, holds, reputation, scheduler
from commander.db import Compiled, Param
from commander.models import ACTIVE, CLOSED, LEASED, QUEUED, Node, Task
from commander.scheduler import Candidate, TaskView
from commander.settings import CommanderSettings

QUEUE_LOOKAHEAD = 64  # tasks considered per pass: enough to fill every free slot a pass can see


NODE_WITH_BREAKER = Compiled(Node, lambda: Node.select(
    Node.id, Node.name, Node.state, Node.problem, Node.capabilities, Node.breaker_state, Node.breaker_failures,
    Node.breaker_cooldown, Node.breaker_until, Node.breaker_probe).where(Node.id == Param("node_id")))


def breaker_of(node: Node) -> breakers.Breaker:
    return breakers.Breaker(node.breaker_state, node.breaker_failures, node.breaker_cooldown,
                            node.breaker_until, node.breaker_probe)


def ready(t: float):
    """Queued tasks not waiting out a retry backoff, nor held (commander/holds.py)."""
    return (Task.state == QUEUED) & (Task.not_before.is_null() | (Task.not_before <= t)) & holds.tasks_free(t)


# The queries every plan runs, compiled once (db.Compiled).
RUNNABLE_CLASSES = Compiled(Task, lambda: Task.select(Task.requires).where(ready(Param("t"))).distinct())
QUEUE_HEAD = Compiled(Task, lambda classes: (  # classes: the runnable ones' `requires` as stored (JSON); none: all
    Task.select(Task.id, Task.requires, Task.prefer, Task.priority, Task.submitter, Task.updated_at, Task.not_before,
                Task.created_at, Task.tried_nodes)
    .where(ready(Param("t")) & Task.requires.in_(classes) if classes.count else ready(Param("t")))
    .order_by((Task.priority + (Param("t") - Task.updated_at) / Param("aging")).desc(), Task.id)
    .limit(QUEUE_LOOKAHEAD)
))
RUNNING_PER_NODE = Compiled(Task, lambda: (
    Task.select(Task.node, pw.fn.COUNT(Task.id)).where(Task.state == LEASED).group_by(Task.node)))


def runnable_classes(t: float) -> list[tuple[str, ...]]:
    """The distinct `requires` of ready tasks: a cheap first look before any claim."""
    return [tuple(Task.requires.python_value(requires)) for (requires,) in RUNNABLE_CLASSES.tuples(t=t)]


def queue(t: float, settings: CommanderSettings, runnable: list[list[str]] | None = None) -> list[TaskView]:
    """The head of the queue in serving order (scheduler.fair_order)."""
    aging = settings.aging or float("inf")
    classes = [Task.requires.db_value(key) for key in runnable or ()]
    rows = QUEUE_HEAD.rows(t=t, aging=aging, classes=classes)
    if not rows:
        return []
    views = [
        TaskView(id=r.id, requires=frozenset(r.requires), prefer=frozenset(r.prefer), priority=r.priority,
                 # Waiting counts from when it could first run: a retry's backoff is not patience spent.
                 submitter=r.submitter, waited=t - max(r.updated_at, r.not_before or 0.0), created_at=r.created_at,
                 tried_nodes=frozenset(r.tried_nodes))
        for r in rows
    ]
    served = Counter()
    submitters = {view.submitter for view in views}
    if len(submitters) > 1:  # fair shares only matter between submitters that are waiting
        # Recent service, not just work in flight: with one slot nothing is in flight at a claim.
        served.update(dict(
            Task.select(Task.submitter, pw.fn.COUNT(Task.id))
            .where((Task.started_at > t - settings.fairness_window) & Task.submitter.in_(submitters))
            .group_by(Task.submitter).tuples()
        ))
    return scheduler.fair_order(views, served, settings.aging)


CANDIDATE_COLUMNS = (
    Node.id, Node.capabilities, Node.slots, Node.open_slots, Node.last_seen, Node.priority, Node.rep_mean,
    Node.rep_count, Node.rep_at, Node.breaker_state, Node.breaker_failures, Node.breaker_cooldown,
    Node.breaker_until, Node.breaker_probe,
)


FLEET_TTL = 0.1  # seconds a worker reuses the node rows behind its plans (most of a plan's cost);
# free slots are counted fresh from the leases each time, so a reused row never offers a full node


FLEET = Compiled(Node, lambda: Node.select(*CANDIDATE_COLUMNS).where(
    (Node.state == ACTIVE) & Node.problem.is_null() & (Node.last_seen > Param("heard_since"))
    & Node.name.not_in(holds.nodes_held(Param("t")))))


def fleet(t: float, settings: CommanderSettings) -> list[tuple]:
    """What candidates are built from: every active node's row (but held ones), read raw (per-field conversion
    of a thousand rows costs more than the rest of a plan)."""
    return FLEET.tuples(heard_since=t - settings.lost_after, t=t)


def running_now() -> dict[int, int]:
    """How many leases each node holds: the Commander's own count of its busy slots."""
    return dict(RUNNING_PER_NODE.tuples())


def candidates(t: float, settings: CommanderSettings, rows: list[tuple] | None = None,
               running: dict[int, int] | None = None) -> list[Candidate]:
    """Every node taking work (busy ones too: a task may wait for one), with its free slots as
    the Commander counts them now (or with `running` leases per node); from `rows` (see `fleet`)
    when the caller has them at hand."""
    running = running_now() if running is None else running
    rows = fleet(t, settings) if rows is None else rows
    half_life = settings.reputation_half_life
    parsed: dict[str, frozenset[str]] = {}  # fleets share a few capability sets: parse each once
    able = []
    for (node_id, caps, slots, open_slots, last_seen, priority, mean, count, rep_at, state, failures, cooldown,
         until, probe_task) in rows:
        free = min(open_slots, slots - running.get(node_id, 0))
        probe = False
        if state != CLOSED:
            limit, _ = breakers.admits(breakers.Breaker(state, failures, cooldown, until, probe_task), t)
            if limit == 0:
                continue
            free, probe = min(free, limit), True
        if caps not in parsed:
            parsed[caps] = frozenset(Node.capabilities.python_value(caps))
        able.append(Candidate(
            node_id=node_id, capabilities=parsed[caps], slots=slots, free=free, heartbeat_age=max(0.0, t - last_seen),
            priority=priority, mean=mean, count=reputation.count_now(count, rep_at, t, half_life), probe=probe,
        ))
    return able


def idle_ranking(t: float, settings: CommanderSettings, rows: list[tuple]) -> scheduler.Ranking:
    """The fleet ranked as if no node ran anything; a plan applies the leases of the moment
    (`Ranking.with_leases`). A worker shares one for FLEET_TTL (Commander.ranking): ranking a
    thousand nodes is most of a plan's cost."""
    return scheduler.Ranking(candidates(t, settings, rows, running={}), settings)


def plan(tasks: list[TaskView], ranking: scheduler.Ranking) -> list[tuple[TaskView, int | None]]:
    """Each task with the node best placed to run it, in serving order (None: no node can take
    it now); a node's free slots are used up as tasks are placed on it."""
    return [(task, ranking.place(task)) for task in tasks]


def claimable(placed, node_id: int, capabilities: frozenset[str], settings: CommanderSettings) -> list[TaskView]:
    """The planned tasks `node_id` should take: those it is best for, and those whose best node
    has not come for them within `best_node_wait` (a task held for a busy node stays held)."""
    patience = settings.best_node_wait
    return [
        task for task, best in placed
        if task.requires <= capabilities and (best == node_id or (best is not None and task.waited >= patience))
    ]


def tasks_for(node_id: int, capabilities: frozenset[str], t: float, settings: CommanderSettings, load_ranking) -> list[int]:
    """The ids of the tasks the plan gives this node now, in serving order; `load_ranking(node_id)`
    gives an idle ranking (see `idle_ranking`) made with this node's row."""
    runnable = [list(key) for key in runnable_classes(t) if capabilities.issuperset(key)]
    if not runnable:
        return []
    placed = plan(queue(t, settings, runnable), load_ranking(node_id).with_leases(running_now()))
    return [task.id for task in claimable(placed, node_id, capabilities, settings)]


class Handout(NamedTuple):
    """What a dispatcher's plan gives out (see who_should_claim)."""
    here: dict[int, list[int]]       # node waiting in this worker → ids of the tasks it should claim
    elsewhere: dict[int, list[int]]  # any other node → the tasks placed on it (to hand off)
    replan_in: float | None          # seconds until the plan changes by itself (None: not by time)


def who_should_claim(t: float, settings: CommanderSettings, waiting: Collection[int], load_ranking) -> Handout:
    """One plan for the nodes long-polling in this worker (their ids): the work it gives them,
    the tasks it places on other nodes (they may be waiting in another worker), and when the
    first of those will have waited `best_node_wait` for its node, after which any node may
    take it. A node's capabilities are the ranking's, read with the fleet: an approval made
    while a node waits counts at the next plan."""
    tasks = queue(t, settings)
    if not tasks:
        return Handout({}, {}, None)
    ranking = load_ranking().with_leases(running_now())
    placed = plan(tasks, ranking)
    here = {}
    for node_id in waiting:
        node = ranking.by_id.get(node_id)  # absent: it can take no work now
        if node and (ids := [task.id for task in claimable(placed, node_id, node.capabilities, settings)]):
            here[node_id] = ids
    elsewhere: dict[int, list[int]] = {}
    patience, replan_in = settings.best_node_wait, None
    for task, best in placed:
        if best is not None and best not in waiting:
            elsewhere.setdefault(best, []).append(task.id)
            if task.waited < patience:
                replan_in = min(patience - task.waited, replan_in or patience)
    return Handout(here, elsewhere, replan_in)
