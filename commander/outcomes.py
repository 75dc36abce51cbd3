"""Recording how an attempt ended on its node: the outcome window, the node's reputation and
its circuit breaker, all inside the write transaction that ended the attempt (it receives the
attempt_ended signal, commander/signals.py)."""

from __future__ import annotations

from commander import breakers, events, reputation
from commander.db import Compiled, CompiledInsert, CompiledUpdate, Param
from commander.models import CLOSED, HALF_OPEN, LIVE_STATES, OPEN, SUCCEEDED, Node, Outcome, Task
from commander.planning import NODE_WITH_BREAKER, breaker_of
from commander.settings import CommanderSettings
from commander.signals import TAKEN_BACK, AttemptEnded

REFERENCE_SAMPLE = 50  # recent successes of a task class that set its typical duration

# Every result runs these (db.Compiled).
REFERENCE_DURATIONS = Compiled(Outcome, lambda: (
    Outcome.select(Outcome.duration_ms)
    .where((Outcome.task_class == Param("task_class")) & (Outcome.kind == SUCCEEDED)
           & Outcome.duration_ms.is_null(False))
    .order_by(Outcome.id.desc()).limit(REFERENCE_SAMPLE)))
OUTCOME_INSERT = CompiledInsert(Outcome)
WINDOW = Compiled(Outcome, lambda: (
    Outcome.select(Outcome.id, Outcome.ts, Outcome.kind, Outcome.reward)
    .where(Outcome.node == Param("node_id")).order_by(Outcome.id.desc()).limit(Param("keep"))))
FORGET_BEFORE = Compiled(Outcome, lambda: Outcome.delete().where(
    (Outcome.node == Param("node_id")) & (Outcome.id < Param("oldest_kept"))))
SET_STANDING = CompiledUpdate(Node, ("rep_mean", "rep_count", "rep_at", "breaker_state", "breaker_failures",
                                     "breaker_cooldown", "breaker_until", "breaker_probe"), match=("id",))


def init(cmdr) -> None:
    cmdr.signals.attempt_ended.connect(on_attempt_ended)


def on_attempt_ended(cmdr, ended: AttemptEnded) -> bool:
    """Record the outcome of an attempt its node ran to an end; True if the node's breaker moved."""
    if ended.kind == TAKEN_BACK or ended.node_id is None:
        return False
    duration_ms = ended.result.duration_ms if ended.result else None
    return record(cmdr, ended.node_id, ended.task, ended.kind, duration_ms, ended.at)


def task_class(task: Task) -> str:
    """Tasks of one class are comparable in speed: the same model and required capabilities."""
    return f"{task.model or '-'}|{','.join(task.requires)}"


def record(cmdr, node_id: int, task: Task, kind: str, duration_ms: int | None, t: float) -> bool:
    """`kind` is succeeded, failed (on the task's own merits), infra (the runner broke) or lost.
    Returns whether the node's breaker changed state."""
    settings = cmdr.settings
    found = NODE_WITH_BREAKER.rows(node_id=node_id)
    if not found:
        return False
    node = found[0]
    cls = task_class(task)
    durations = [duration for (duration,) in REFERENCE_DURATIONS.tuples(task_class=cls)]
    earned = reputation.reward(kind, duration_ms, reputation.reference(durations))
    OUTCOME_INSERT.create(node=node_id, task=task.id, ts=t, kind=kind, reward=earned, duration_ms=duration_ms,
                          task_class=cls)
    keep = max(settings.reputation_window, settings.breaker_window)
    window = WINDOW.rows(node_id=node_id, keep=keep)
    if len(window) == keep:
        FORGET_BEFORE.execute(node_id=node_id, oldest_kept=window[-1].id)
    window.reverse()
    rewarded = [(o.ts, o.reward) for o in window if o.reward is not None][-settings.reputation_window:]
    mean, count = reputation.summarize(rewarded, t, settings.reputation_half_life)
    before = breaker_of(node)
    after = breakers.after_outcome(before, kind in ("infra", "lost"), [o.kind in ("infra", "lost") for o in window],
                                   t, settings)
    if after.state == OPEN and before.state == CLOSED and not may_open(node_id, settings):
        # Opening this one would take too much of the fleet out: it stays closed, visibly.
        events.publish("node.breaker_held", node=node_id, failures=after.failures,
                       reason="too many breakers are open already")
        after = breakers.Breaker(failures=after.failures)
    SET_STANDING.execute(dict(id=node_id), rep_mean=mean, rep_count=count, rep_at=t, breaker_state=after.state,
                         breaker_failures=after.failures, breaker_cooldown=after.cooldown, breaker_until=after.until,
                         breaker_probe=after.probe)
    if after.state == before.state:
        return False
    publish_transition(node_id, before.state, after, reason=f"{kind} on task {task.id}")
    return True


def may_open(node_id: int, settings: CommanderSettings) -> bool:
    """Whether one more breaker may open: never more than `breaker_max_open` of live nodes."""
    live = Node.select().where(Node.state.in_(LIVE_STATES)).count()
    already = Node.select().where(
        Node.state.in_(LIVE_STATES) & Node.breaker_state.in_((OPEN, HALF_OPEN)) & (Node.id != node_id)
    ).count()
    return already + 1 <= int(live * settings.breaker_max_open)


def publish_transition(node_id: int, previous: str, breaker: breakers.Breaker, reason: str) -> None:
    events.publish("node.breaker", node=node_id, state=breaker.state, previous=previous, reason=reason,
                   until=breaker.until, cooldown=breaker.cooldown, failures=breaker.failures)
