"""Events: every state change a dashboard, bridge or CLI follows, stored in order."""

from __future__ import annotations

import json

from commander.db import CompiledInsert
from commander.models import DELIVERY_STATUSES, NODE_STATES, PIPELINE_STATES, TASK_STATES, Event
from commander.signals import REJECT, TaskFinished

# Every kind `publish` is called with (tests/e2e/test_dashboard.py checks the calls against it): an
# SSE event is named by its kind, so a browser must list the kinds it listens for.
KINDS = (
    *(f"task.{state}" for state in TASK_STATES), "task.approved", "task.rejected", "task.retrying", "task.requeued",
    "task.tool_call",
    *(f"node.{state}" for state in NODE_STATES), "node.registered", "node.reregistered", "node.runner",
    "node.drain_deadline", "node.removed", "node.pending", "node.approved", "node.rejected", "node.breaker",
    "node.breaker_held", "node.key_rotating", "node.key_rotated", "node.capabilities", "node.capabilities_requested",
    "node.capabilities_approved",
    *(f"pipeline.{state}" for state in PIPELINE_STATES), "pipeline.submitted", "pipeline.step", "pipeline.tampered",
    "agent.created", "agent.version", "agent.broken", "agent.deleted", "task.memory", "memory.merged",
    "spend.cap_reached", "spend.released", "spend.alert", "spend.alert_failed",
    *(f"webhook.{status}" for status in DELIVERY_STATUSES),
)

EVENT_INSERT = CompiledInsert(Event)


def publish(kind: str, task: int | None = None, node: int | None = None, **data) -> None:
    """Record an event inside the caller's transaction; the caller wakes waiters after commit."""
    EVENT_INSERT.create(kind=kind, task=task, node=node, data=data)


def init(cmdr) -> None:
    cmdr.signals.task_finished.connect(on_task_finished)


def on_task_finished(cmdr, finished: TaskFinished) -> None:
    """A task's final state is announced as `task.<state>`, a rejection as `task.rejected`, with
    the data its transition gives."""
    if finished.cause == REJECT:
        publish("task.rejected", task=finished.task.id, **finished.details)
    else:
        publish(f"task.{finished.task.state}", task=finished.task.id, **finished.details)


def latest_id() -> int:
    row = Event.select(Event.id).order_by(Event.id.desc()).first()
    return row.id if row else 0


def page_after(after: int, limit: int = 500) -> list[Event]:
    return list(Event.select().where(Event.id > after).order_by(Event.id).limit(limit))


def of_task(task_id: int, limit: int = 200) -> list[Event]:
    """A task's history, oldest first: submitted, approved, each attempt leased and how it ended."""
    return list(Event.select().where(Event.task == task_id).order_by(Event.id).limit(limit))


def as_sse(event: Event) -> str:
    payload = {"id": event.id, "ts": event.ts, "kind": event.kind, "task_id": event.task,
               "node_id": event.node, "data": event.data}
    return f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"
