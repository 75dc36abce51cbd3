"""Reputation: how well each node has done lately, as UCB1 over a decayed rolling window.

Each attempt's outcome earns its node a reward in [0, 1]:
- succeeded: 0.5 + 0.5 · min(1, reference / duration), where `reference` is the median duration
  of recent successes of the same task class (model + required capabilities) on any node, so a
  node as fast as typical earns 1 and one four times slower earns 0.625;
- an infrastructure failure or a lost lease: 0;
- a task that failed on its own merits (the runner worked): no reward, it says nothing of the node.

Over a node's last `reputation_window` rewarded outcomes, each weighs 0.5^(age / half_life):
`mean` is the weighted mean and `count` the summed weight. Choosing among nodes uses
`ucb = mean + c · sqrt(ln N / count)` with N the summed counts of the nodes in the running;
a node with no count yet is untried and goes first. Pure functions: the scheduler, the
simulation in bench/scheduling.py and the tests all call these.
"""

from __future__ import annotations

import math
from statistics import median


def reward(kind: str, duration_ms: int | None, reference_ms: float | None) -> float | None:
    if kind in ("infra", "lost"):
        return 0.0
    if kind != "succeeded":
        return None
    if not duration_ms or not reference_ms:
        return 1.0
    return 0.5 + 0.5 * min(1.0, reference_ms / duration_ms)


def reference(durations_ms: list[int]) -> float | None:
    """The typical duration of a task class, from its recent successes."""
    return median(durations_ms) if durations_ms else None


def decay(age: float, half_life: float) -> float:
    return 0.5 ** (max(0.0, age) / half_life)


def summarize(window: list[tuple[float, float]], now: float, half_life: float) -> tuple[float, float]:
    """(mean, count) of (timestamp, reward) pairs, older ones weighing less."""
    weights = [(decay(now - ts, half_life), r) for ts, r in window]
    count = sum(w for w, _ in weights)
    if count == 0:
        return 0.0, 0.0
    return sum(w * r for w, r in weights) / count, count


def count_now(count: float, since: float, now: float, half_life: float) -> float:
    """A stored count, decayed from when it was summed to now (the mean does not change)."""
    return count * decay(now - since, half_life)


def ucb(mean: float, count: float, total: float, c: float) -> float:
    """UCB1; infinity for an untried node so it is explored first."""
    if count <= 0:
        return math.inf
    return mean + c * math.sqrt(math.log(max(total, 1.0)) / count)
