"""Events: every state change a dashboard, bridge or CLI follows, stored in order."""

from __future__ import annotations

import json

from commander.db import CompiledInsert
from commander.models import Event

EVENT_INSERT = CompiledInsert(Event)


def publish(kind: str, task: int | None = None, node: int | None = None, **data) -> None:
    """Record an event inside the caller's transaction; the caller wakes waiters after commit."""
    EVENT_INSERT.create(kind=kind, task=task, node=node, data=data)


def latest_id() -> int:
    row = Event.select(Event.id).order_by(Event.id.desc()).first()
    return row.id if row else 0


def page_after(after: int, limit: int = 500) -> list[Event]:
    return list(Event.select().where(Event.id > after).order_by(Event.id).limit(limit))


def as_sse(event: Event) -> str:
    payload = {"id": event.id, "ts": event.ts, "kind": event.kind, "task_id": event.task,
               "node_id": event.node, "data": event.data}
    return f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"
