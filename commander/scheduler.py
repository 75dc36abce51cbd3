"""Choosing: which queued task goes first, and which node is best for it.

Order of tasks: effective priority first (a task's priority plus one level per `aging` seconds
it has waited, so low priorities do not starve), then the submitter served least lately (tasks
started within `fairness_window` seconds: fair shares between submitters), then the oldest.

Choice of node, among those that can take the task now (capabilities ⊇ `requires`, a free
slot, a breaker that admits work), best first by:
1. not among the nodes whose earlier attempts at this task broke (a retry prefers another node,
   and waits for one that is busy rather than go back to a node it broke on);
2. untried before tried (UCB1's exploration, see reputation.py), and a node whose breaker is
   half-open likewise, so its probe task comes soon and it can recover;
3. score = min(ucb, 2) + score_slots · free/slots + score_freshness · freshness (see `freshness`)
   + score_prefer · (share of the task's `prefer` the node has), rounded to 0.001, where ucb
   takes N as the summed counts of all nodes in the running;
4. the node's priority; then the lowest id, so the choice is deterministic.
The best free node may still be passed over, for a while, for a busy one that is clearly
better (see `Ranking.best`).
Pure functions and one small class; a pass costs O(nodes log nodes) once, then about O(1) per
plain task. A ranking made once can be reused with fresh lease counts (`with_leases`), which
moves only the nodes running work.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass

from commander import reputation
from commander.settings import CommanderSettings

UCB_CAP = 2.0  # keeps a barely-tried node's exploration bonus from drowning every other term


@dataclass
class Candidate:
    node_id: int
    capabilities: frozenset[str]
    slots: int
    free: int                 # slots not taken by leases (the Commander's own count)
    heartbeat_age: float
    priority: int
    mean: float               # reputation
    count: float              # decayed number of rewarded outcomes
    probe: bool = False       # half-open breaker: its one probe task is due


@dataclass
class TaskView:
    id: int
    requires: frozenset[str]
    prefer: frozenset[str]
    priority: int
    submitter: str
    waited: float             # seconds since it became queued
    created_at: float
    tried_nodes: frozenset[int]


def freshness(heartbeat_age: float, settings: CommanderSettings) -> float:
    """1 while the node's last heartbeat is on time (within 1.5 intervals), then falling to 0 at
    `lost_after`. Flat while on time: otherwise equal nodes would be ordered by the instant of
    their last heartbeat, and two workers ranking a moment apart would each place a task on a
    node long-polling in the other, so neither hands it out."""
    on_time = 1.5 * settings.heartbeat_interval
    late = heartbeat_age - on_time
    return 1.0 if late <= 0 else max(0.0, 1.0 - late / max(settings.lost_after - on_time, 1e-9))


def steady_score(node: Candidate, total: float, settings: CommanderSettings) -> float:
    """The part of a node's score that depends neither on the task nor on its free slots."""
    ucb = reputation.ucb(node.mean, node.count, total, settings.ucb_c)
    return min(ucb, UCB_CAP) + settings.score_freshness * freshness(node.heartbeat_age, settings)


def base_score(steady: float, free: int, slots: int, settings: CommanderSettings) -> float:
    """Everything in a node's score that does not depend on the task."""
    return steady + settings.score_slots * free / slots


class Ranking:
    """The candidates of one scheduling pass, scored once and sorted; `best(task)` then walks
    that order only as far as a better node could still come (usually a few steps). Free slots
    are counted here (the candidates are not changed) and used up as tasks are placed."""

    def __init__(self, nodes: list[Candidate], settings: CommanderSettings):
        total = sum(n.count for n in nodes)
        self.settings = settings
        self.by_id = {n.node_id: n for n in nodes}
        self.free = {n.node_id: n.free for n in nodes}
        self.steady = {n.node_id: steady_score(n, total, settings) for n in nodes}
        self.base = {n.node_id: base_score(self.steady[n.node_id], n.free, n.slots, settings) for n in nodes}
        self.nodes = sorted(nodes, key=lambda n: self.key(n, None), reverse=True)
        self.by_mean = sorted((n for n in nodes if n.count > 0), key=lambda n: n.mean, reverse=True)

    def with_leases(self, running: dict[int, int]) -> Ranking:
        """A copy of this ranking in which each node runs `running[node id]` tasks: fewer free
        slots, a lower score, a later place. Only those nodes are touched, so a worker can rank
        its fleet once for a moment and plan with it many times (this ranking stays as it is)."""
        ranked = object.__new__(Ranking)
        ranked.settings, ranked.by_mean, ranked.by_id, ranked.steady = self.settings, self.by_mean, self.by_id, self.steady
        ranked.free, ranked.base, ranked.nodes = dict(self.free), dict(self.base), self.nodes
        moved = {}
        for node_id, count in running.items():
            node = self.by_id.get(node_id)
            if node is None:
                continue  # not taking work now
            free = min(self.free[node_id], node.slots - count)
            if free != self.free[node_id]:
                ranked.free[node_id] = free
                ranked.base[node_id] = base_score(self.steady[node_id], free, node.slots, self.settings)
                moved[node_id] = node
        if moved:
            order = [n for n in reversed(self.nodes) if n.node_id not in moved]  # worst first: bisect's order
            for node in moved.values():
                bisect.insort(order, node, key=lambda n: ranked.key(n, None))
            ranked.nodes = order[::-1]
        return ranked

    def key(self, node: Candidate, task: TaskView | None) -> tuple:
        score = self.base[node.node_id]
        tried = False
        if task is not None:
            tried = node.node_id in task.tried_nodes
            if task.prefer:
                score += self.settings.score_prefer * len(task.prefer & node.capabilities) / len(task.prefer)
        return (not tried, node.probe or node.count <= 0, round(score, 3), node.priority, -node.node_id)

    def ranked(self, task: TaskView) -> list[Candidate]:
        """The nodes able to take `task` now, best first."""
        able = [n for n in self.nodes if self.free[n.node_id] > 0 and task.requires <= n.capabilities]
        if task.prefer or task.tried_nodes:
            able.sort(key=lambda n: self.key(n, task), reverse=True)
        return able

    def best(self, task: TaskView) -> Candidate | None:
        """The best node with a free slot; None if there is none, or while the task should wait
        for a busy node: up to `best_node_wait` when the only free ones are nodes it already broke
        on, up to `better_node_wait` when a busy node's mean reward beats the best free one's by
        more than `better_node_margin`, both over at least `better_node_evidence` outcomes (a
        slot there soon beats a slow or flaky node now; a few noisy outcomes prove nothing)."""
        best = self._scan(task, skip_tried=True)
        if best is None and task.tried_nodes:
            if task.waited < self.settings.best_node_wait and any(
                    n.node_id not in task.tried_nodes and task.requires <= n.capabilities for n in self.nodes):
                return None
            best = self._scan(task, skip_tried=False)
        evidence = self.settings.better_node_evidence
        if best is not None and best.count >= evidence and not best.probe \
                and task.waited < self.settings.better_node_wait:
            top = next((n for n in self.by_mean if task.requires <= n.capabilities
                        and n.node_id not in task.tried_nodes), None)
            if top is not None and top.count >= evidence and top.mean - best.mean > self.settings.better_node_margin:
                return None
        return best

    def _scan(self, task: TaskView, skip_tried: bool) -> Candidate | None:
        """Walk the nodes in their task-free order and stop as soon as no later node can win:
        it is in a lower group (tried before untried) or even the full `prefer` bonus would not
        lift its score to the best one's. A plain task stops at the first able node."""
        bonus = self.settings.score_prefer if task.prefer else 0.0
        best, best_key = None, None
        for node in self.nodes:
            if self.free[node.node_id] <= 0 or not task.requires <= node.capabilities:
                continue
            if skip_tried and node.node_id in task.tried_nodes:
                continue
            # The nodes are in key order for no task. The able nodes walked are all untried, or
            # all tried (`best` walks the tried only when no untried one is able), so with no bonus
            # to earn the task's key order is the same and the first able node is the best (a
            # fleet of equal nodes would otherwise be walked whole, for every task placed).
            if not bonus:
                return node
            if best is not None:
                if (node.probe or node.count <= 0) != best_key[1] or round(self.base[node.node_id] + bonus, 3) < best_key[2]:
                    break
            key = self.key(node, task)
            if best is None or key > best_key:
                best, best_key = node, key
        return best

    def place(self, task: TaskView) -> int | None:
        """Put `task` on its best node (using up one of its free slots); that node's id."""
        node = self.best(task)
        if node is None:
            return None
        self.free[node.node_id] -= 1
        return node.node_id


def effective_priority(task: TaskView, aging: float) -> float:
    return task.priority + (math.floor(task.waited / aging) if aging > 0 else 0)


def fair_order(tasks: list[TaskView], served: Counter, aging: float) -> list[TaskView]:
    """Tasks in the order they should be served; `served` counts each submitter's recent tasks
    and is advanced as tasks are picked, so one submitter's burst is interleaved with others'."""
    remaining = sorted(tasks, key=lambda t: (-effective_priority(t, aging), t.created_at, t.id))
    flight = Counter(served)
    ordered = []
    while remaining:
        top = effective_priority(remaining[0], aging)
        level = [t for t in remaining if effective_priority(t, aging) == top]
        pick = min(level, key=lambda t: (flight[t.submitter], t.created_at, t.id))
        flight[pick.submitter] += 1
        ordered.append(pick)
        remaining.remove(pick)
    return ordered
