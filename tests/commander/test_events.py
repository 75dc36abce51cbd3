"""Events in process: stored in order inside the writer's transaction, paged, and framed as SSE."""

from __future__ import annotations

import json

from commander import events
from commander.models import TASK_STATES


def test_events_are_stored_in_order_paged_and_framed_for_sse(app):
    cmdr = app.extensions["m3shd"]
    with cmdr.db.connection_context():
        before = events.latest_id()
        with cmdr.writing():
            events.publish("task.queued", task=None, prompt_chars=5)
            events.publish("node.lost", node=None)
        page = events.page_after(before)
        assert [e.kind for e in page] == ["task.queued", "node.lost"] and events.latest_id() == page[-1].id
        assert events.page_after(before, limit=1) == page[:1]
        frame = events.as_sse(page[0])
    head, data = frame.split("\ndata: ")
    assert head == f"id: {page[0].id}\nevent: task.queued" and frame.endswith("\n\n")
    assert json.loads(data) == {"id": page[0].id, "ts": page[0].ts, "kind": "task.queued", "task_id": None,
                                "node_id": None, "data": {"prompt_chars": 5}}


def test_a_failed_write_publishes_nothing(app):
    cmdr = app.extensions["m3shd"]
    with cmdr.db.connection_context():
        before = events.latest_id()
        try:
            with cmdr.writing():
                events.publish("task.queued")
                raise RuntimeError("the rest of the change failed")
        except RuntimeError:
            pass
        assert events.page_after(before) == []


def test_every_task_state_has_its_event_kind():
    assert {f"task.{state}" for state in TASK_STATES} <= set(events.KINDS)
