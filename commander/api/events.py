from __future__ import annotations

from flask import Blueprint, Response, request

from commander import events
from commander.exceptions import Invalid
from commander.routes import api_route, commander
from commander.schemas import MAX_ID, EventsQuery

bp = Blueprint("events", __name__)

KEEPALIVE_S = 15.0


@api_route(bp, "GET", "/events", permission="tasks:read", query=EventsQuery, stream="text/event-stream")
def stream(query: EventsQuery):
    """Server-sent events; resume with `Last-Event-ID` (or `after`), keep-alive comments every 15 s."""
    cmdr = commander()
    resume = request.headers.get("Last-Event-ID", "").strip()
    if resume and not (resume.isascii() and resume.isdigit() and int(resume) <= MAX_ID):
        raise Invalid("invalid_request", "Last-Event-ID must be an event id")
    after = int(resume) if resume else query.after
    if after is None:
        after = events.latest_id()
    cmdr.db.close()

    def generate():
        last = after
        yield "retry: 2000\n\n"
        while True:
            generation = cmdr.notifier.generation
            with cmdr.db.connection_context():
                page = events.page_after(last)
            for event in page:
                yield events.as_sse(event)
                last = event.id
            if len(page) == 500:
                continue
            if cmdr.notifier.wait(generation, KEEPALIVE_S) == generation:
                yield ": keep-alive\n\n"

    return Response(generate(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
