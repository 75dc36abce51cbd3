"""Uptime Kuma: a monitor's DOWN starts the hook's response, its UP withdraws or annotates it.

Its webhook notification (server/notification-providers/webhook.js) posts
`{"heartbeat": {...}, "monitor": {...}, "msg": "..."}`; heartbeat.status is 0 DOWN, 1 UP (2
pending and 3 maintenance start nothing); the Test button sends `msg` alone. A flapping monitor
would start a response per DOWN, so a DOWN first waits out the hook's debounce window (its own,
else the webhook_debounce setting) as a `pending` delivery: an UP within it cancels it; past it,
the loop here starts it. While a response for a monitor is open, further DOWNs start nothing.
An UP after the response started cancels its work if none of it has begun (no attempt, nothing
final), else leaves it running and notes the recovery on the delivery.
"""

from __future__ import annotations

import json
import threading

from commander import pipelines, tasks
from commander.context import Commander
from commander.exceptions import Conflict
from commander.models import FINAL_STATES, Webhook, WebhookDelivery, now
from commander.schemas import Receipt
from commander.webhooks import deliveries, respond
from commander.webhooks.receive import handle_rule, receipt

DOWN, UP = 0, 1
OPEN = (deliveries.RECEIVED, deliveries.PENDING, deliveries.STARTED)


def monitor_of(document: dict) -> str | None:
    """The monitor's id in Uptime Kuma: which response an UP closes."""
    monitor, heartbeat = document.get("monitor"), document.get("heartbeat")
    found = monitor.get("id") if isinstance(monitor, dict) else None
    if found is None and isinstance(heartbeat, dict):
        found = heartbeat.get("monitorID")
    return None if found is None or isinstance(found, (dict, list)) else str(found)[:64]


def receive(cmdr: Commander, hook: Webhook, document: dict, sealed: str) -> tuple[Receipt, int]:
    heartbeat = document.get("heartbeat")
    if heartbeat is None:
        delivery, _ = deliveries.claim(cmdr, hook, None, "test", None, None)
        return receipt(deliveries.settle(cmdr, delivery, deliveries.PING), "test notification received"), 200
    status = heartbeat.get("status") if isinstance(heartbeat, dict) else None
    monitor = monitor_of(document)
    event = {DOWN: "down", UP: "up"}.get(status, f"status-{status}")[:64] if type(status) is int else "unknown"
    # Uptime Kuma sends no delivery id; a monitor's heartbeat time and status name one delivery.
    beat = isinstance(heartbeat, dict) and heartbeat.get("time")
    key = f"{monitor}-{beat}-{status}"[:128] if beat and monitor else None
    delivery, fresh = deliveries.claim(cmdr, hook, key, event, None, sealed, monitor)
    if not fresh:
        return receipt(delivery, "this heartbeat was received before: nothing new started", duplicate=True), 200
    if monitor is None or event not in ("down", "up"):
        settled = deliveries.settle(cmdr, delivery, deliveries.IGNORED, error=f"{event} of monitor {monitor}: "
                                                                              f"only DOWN and UP of a monitor start or end a response")
        return receipt(settled, "ignored: only a monitor's DOWN (0) and UP (1) count"), 202
    opened = open_response(hook, monitor, delivery.id)
    if event == "up":
        return recovered(cmdr, delivery, opened)
    if opened is not None:
        settled = deliveries.settle(cmdr, delivery, deliveries.IGNORED,
                                    error=f"a response to this monitor is open already (delivery {opened.id})")
        return receipt(settled, f"ignored: delivery {opened.id} is this monitor's open response"), 202
    window = hook.debounce if hook.debounce is not None else cmdr.settings.webhook_debounce
    if window > 0 and respond.matching(hook.rules, "down", None, document) is not None:
        settled = deliveries.settle(cmdr, delivery, deliveries.PENDING, due_at=now() + window)
        return receipt(settled, f"the response starts in {window:g} s unless the monitor comes back up"), 202
    return handle_rule(cmdr, hook, delivery, "down", None, document)


def open_response(hook: Webhook, monitor: str, other_than: int) -> WebhookDelivery | None:
    return (WebhookDelivery.select()
            .where((WebhookDelivery.hook == hook.id) & (WebhookDelivery.monitor == monitor)
                   & (WebhookDelivery.event == "down") & WebhookDelivery.status.in_(OPEN)
                   & (WebhookDelivery.id != other_than))
            .order_by(WebhookDelivery.id.desc()).first())


def recovered(cmdr: Commander, delivery: WebhookDelivery, opened: WebhookDelivery | None) -> tuple[Receipt, int]:
    """An UP: withdraw or annotate the monitor's open response, and record what was done."""
    if opened is None:
        settled = deliveries.settle(cmdr, delivery, deliveries.IGNORED, error="no response to this monitor is open")
        return receipt(settled, "ignored: no response to this monitor is open"), 202
    if opened.status == deliveries.PENDING and withdraw(cmdr, opened):
        note = f"cancelled: the monitor came back up before the response started (delivery {opened.id})"
        deliveries.settle(cmdr, opened, deliveries.CANCELLED, note=f"back up (delivery {delivery.id}) within the "
                                                                   f"debounce window: nothing started")
    elif opened.status == deliveries.STARTED:
        note = end_or_annotate(cmdr, opened)
        deliveries.settle(cmdr, opened, deliveries.RECOVERED, note=f"back up (delivery {delivery.id}): {note}")
    else:
        note = f"the response of delivery {opened.id} is starting just now: left as it is"
    settled = deliveries.settle(cmdr, delivery, deliveries.RESOLVED, note=note, task_ids=opened.task_ids,
                                pipeline=opened.pipeline)
    return receipt(settled, note), 202


def withdraw(cmdr: Commander, pending: WebhookDelivery) -> bool:
    """Take a pending response back from the loop; False if the loop has just taken it."""
    with cmdr.writing():
        return bool(WebhookDelivery.update(status=deliveries.RECEIVED).where(
            (WebhookDelivery.id == pending.id) & (WebhookDelivery.status == deliveries.PENDING)).execute())


def end_or_annotate(cmdr: Commander, response: WebhookDelivery) -> str:
    """Cancel the response's work if none of it has begun; else say it is left to finish."""
    work = [tasks.get(task_id) for task_id in response.task_ids]
    if any(task.attempt or task.state in FINAL_STATES for task in work):
        return "its work had begun: left to finish"
    try:
        if response.pipeline is not None:
            pipelines.cancel(cmdr, response.pipeline)
        else:
            for task in work:
                tasks.cancel(cmdr, task.id)
    except Conflict:  # it began or ended between the look and the cancel
        return "its work had begun: left to finish"
    return "its work had not begun: cancelled"


def start_due(cmdr: Commander, t: float | None = None) -> int:
    """Start every pending response whose window has passed; returns how many were taken."""
    due = list(WebhookDelivery.select().where((WebhookDelivery.status == deliveries.PENDING)
                                              & (WebhookDelivery.due_at <= (t or now()))))
    taken = 0
    for delivery in due:
        with cmdr.writing():
            if not WebhookDelivery.update(status=deliveries.RECEIVED).where(
                    (WebhookDelivery.id == delivery.id) & (WebhookDelivery.status == deliveries.PENDING)).execute():
                continue
        taken += 1
        document = json.loads(cmdr.box.decrypt(delivery.payload))
        handle_rule(cmdr, delivery.hook, delivery, "down", None, document)
    return taken


def start(cmdr: Commander, every: float = 1.0) -> None:
    """The loop that starts debounced responses, in one worker at a time (Commander.run_alone)."""
    threading.Thread(target=cmdr.run_alone, args=("webhooks", lambda: start_due(cmdr), every, 30 * every),
                     name="webhooks", daemon=True).start()
