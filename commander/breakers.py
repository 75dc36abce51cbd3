"""Circuit breakers, one per node: closed → open → half-open → closed.

Only infrastructure failures count (runner crash, spawn or auth error, timeout, lost lease);
a task that fails on its own merits is a healthy outcome. A closed breaker opens after
`breaker_consecutive` failures in a row, or when at least `breaker_ratio` of the last
`breaker_window` outcomes failed (once there are `breaker_min_outcomes`). An open breaker
admits nothing for its cooldown; then it is half-open and admits one probe task: success
closes it (the cooldown resets), failure opens it again with the cooldown doubled up to
`breaker_cooldown_max`. The caller enforces the fleet-wide cap on open breakers.

Pure functions over a small state record; commander/outcomes.py stores it on the node.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from commander.models import CLOSED, HALF_OPEN, OPEN
from commander.settings import CommanderSettings


@dataclass(frozen=True)
class Breaker:
    state: str = CLOSED
    failures: int = 0            # consecutive infrastructure failures
    cooldown: float = 0.0        # length of the current (or last) open period
    until: float | None = None   # open until then
    probe: int | None = None     # the task a half-open breaker let through


def wants_open(breaker: Breaker, recent_failures: list[bool], settings: CommanderSettings) -> bool:
    """Should a closed breaker open, given its consecutive count and the recent window
    (newest last, True for an infrastructure failure)?"""
    if breaker.failures >= settings.breaker_consecutive:
        return True
    window = recent_failures[-settings.breaker_window:]
    return len(window) >= settings.breaker_min_outcomes and sum(window) >= settings.breaker_ratio * len(window)


def after_outcome(breaker: Breaker, infra_failure: bool, recent_failures: list[bool], now: float,
                  settings: CommanderSettings) -> Breaker:
    """The breaker after one outcome. Opening is proposed, not forced: see `open_`."""
    if not infra_failure:
        if breaker.state == HALF_OPEN:
            return Breaker()  # closed; a later open starts again from the base cooldown
        return replace(breaker, failures=0)
    counted = replace(breaker, failures=breaker.failures + 1)
    if breaker.state == HALF_OPEN:
        return open_(counted, now, settings)
    if breaker.state == CLOSED and wants_open(counted, recent_failures, settings):
        return open_(counted, now, settings)
    return counted


def open_(breaker: Breaker, now: float, settings: CommanderSettings) -> Breaker:
    """Open for the base cooldown, or double the last one after a failed probe."""
    base, cap = settings.breaker_cooldown, settings.breaker_cooldown_max
    cooldown = min(cap, breaker.cooldown * 2) if breaker.state == HALF_OPEN and breaker.cooldown else base
    return replace(breaker, state=OPEN, cooldown=cooldown, until=now + cooldown, probe=None)


def admits(breaker: Breaker, now: float) -> tuple[int, Breaker]:
    """How many tasks the node may take now (0, 1 for a probe, or -1 for no limit), and the
    breaker as it stands now (an open breaker past its cooldown turns half-open)."""
    if breaker.state == CLOSED:
        return -1, breaker
    if breaker.state == OPEN:
        if breaker.until is not None and now < breaker.until:
            return 0, breaker
        breaker = replace(breaker, state=HALF_OPEN, probe=None)
    return (0 if breaker.probe else 1), breaker
