"""Holds: scopes that start no new work for a while (commander/models.py Hold).

A hold names every task (scope `all`), an agent's tasks, a submitter's, or a node, with the
reason a waiting task shows and the time it lapses. The planner (commander/planning.py) reads
them in the same query that picks the queue's head, so a task held is never leased and a task
queued later (a pipeline's next step, a retry, an approval) is held from its first moment, with
no one having to mark it. Work already running goes on. The reaper removes lapsed holds and
wakes the dispatchers (`lapse`), so held work starts by itself; whoever lifts a hold earlier
does it inside `cmdr.writing()`, which wakes them on commit.

Holds know nothing of why they are set: the spend caps (commander/spend) set and lift them.
"""

from __future__ import annotations

import math

import peewee as pw

from commander.db import Compiled, Param
from commander.exceptions import TooManyRequests
from commander.models import Hold, Task, now

ALL, AGENT, SUBMITTER, NODE = "all", "agent", "submitter", "node"
SCOPES = (ALL, AGENT, SUBMITTER, NODE)


def _names(scope: str, t) -> pw.SelectQuery:
    return Hold.select(Hold.name).where((Hold.scope == scope) & (Hold.until > t))


def tasks_free(t) -> pw.Expression:
    """The condition a task that may start at `t` meets (t may be a db.Param)."""
    return (~pw.fn.EXISTS(_names(ALL, t)) & (Task.agent.is_null() | Task.agent.not_in(_names(AGENT, t)))
            & Task.submitter.not_in(_names(SUBMITTER, t)))


def nodes_held(t):
    """A subquery of the names of the nodes that take no new work at `t`."""
    return _names(NODE, t)


NODE_HELD = Compiled(Hold, lambda: Hold.select(Hold.id).where(
    (Hold.scope == NODE) & (Hold.name == Param("name")) & (Hold.until > Param("t"))))


def node_held(name: str, t: float) -> bool:
    """Whether the node of this name may start no new work (asked at every claim: compiled)."""
    return bool(NODE_HELD.tuples(name=name, t=t))


def active(t: float | None = None) -> list[Hold]:
    return list(Hold.select().where(Hold.until > (now() if t is None else t)))


def reason_for(held: list[Hold], agent: str | None, submitter: str, node_name: str | None = None) -> Hold | None:
    """The hold among `held` that keeps a task of this agent and submitter (or a node) from starting."""
    for hold in held:
        if (hold.scope == ALL or (hold.scope == AGENT and hold.name == agent)
                or (hold.scope == SUBMITTER and hold.name == submitter)
                or (hold.scope == NODE and hold.name == node_name)):
            return hold
    return None


def check_submit(agent: str | None, submitter: str) -> None:
    """Refuse a new task (429) whose scope is held with `refuse` set."""
    t = now()
    hold = reason_for([h for h in active(t) if h.refuse and h.scope != NODE], agent, submitter)
    if hold:
        raise TooManyRequests("held", hold.reason, retry_after=max(1, math.ceil(hold.until - t)))


def put(scope: str, name: str, reason: str, until: float, refuse: bool) -> bool:
    """Hold a scope (inside the caller's write transaction); True if it was not held already."""
    existing = Hold.get_or_none((Hold.scope == scope) & (Hold.name == name))
    if existing and existing.until > now() and (existing.reason, existing.refuse, existing.until) == (reason, refuse, until):
        return False
    Hold.insert(scope=scope, name=name, reason=reason, refuse=refuse, until=until).on_conflict(
        conflict_target=[Hold.scope, Hold.name],
        update={Hold.reason: reason, Hold.refuse: refuse, Hold.until: until}).execute()
    return existing is None or existing.until <= now()


def lift(scope: str, name: str) -> bool:
    """Lift a scope's hold (inside the caller's write transaction); True if one was in force."""
    return Hold.delete().where((Hold.scope == scope) & (Hold.name == name) & (Hold.until > now())).execute() > 0


def lapse(cmdr) -> int:
    """Remove the holds whose time is over; the commit wakes the dispatchers to plan held work."""
    if not Hold.select().where(Hold.until <= now()).exists():
        return 0
    with cmdr.writing():
        return Hold.delete().where(Hold.until <= now()).execute()
