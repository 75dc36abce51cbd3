"""One row per request to a hook, and what came of it: GitHub's "Recent Deliveries", here.

A delivery's `key` is the sender's delivery id (X-GitHub-Delivery, X-M3SHD-Delivery) or one
made up; the unique (hook, key) index claims it before anything starts, so a redelivery, even
one racing the first, starts nothing new. A request that fails authentication is recorded
under a key of its own: a forger who names a real delivery id cannot take it from the sender.
"""

from __future__ import annotations

import uuid

import peewee as pw

from commander import events
from commander.context import Commander
from commander.models import DELIVERY_STATUSES, Webhook, WebhookDelivery, now
from commander.schemas import DeliveryOut

# In DELIVERY_STATUSES' order (unpacked: a new status fails here, loudly):
# received   claimed, being handled
# started    a task or pipeline started
# pending    an Uptime Kuma DOWN waiting out the debounce window
# cancelled  … and an UP came first: nothing started
# recovered  a started response whose monitor came back up (its note: what that did)
# resolved   an UP that closed a response
# ignored    no rule takes this event (or the monitor's response is open already)
# failed     the response could not start (its error says why); a redelivery tries again
# unauthorized  bad or missing signature or secret; nothing of the body is kept
# ping       GitHub's ping, Uptime Kuma's test notification
RECEIVED, STARTED, PENDING, CANCELLED, RECOVERED, RESOLVED, IGNORED, FAILED, UNAUTHORIZED, PING = DELIVERY_STATUSES

KEEP_UNAUTHORIZED = 100  # per hook: enough to see an attack or a wrong secret, too few to fill the disk


def out(delivery: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut.from_row(delivery, pipeline_id=delivery.pipeline)


def recent(hook: Webhook, limit: int = 20) -> list[WebhookDelivery]:
    return list(WebhookDelivery.select().where(WebhookDelivery.hook == hook.id)
                .order_by(WebhookDelivery.received_at.desc(), WebhookDelivery.id.desc()).limit(limit))


def get(delivery_id: int) -> WebhookDelivery:
    return WebhookDelivery.get_by_id(delivery_id)


def unauthorized(cmdr: Commander, hook: Webhook, event: str, error: str) -> None:
    """Record a refused request (its own key, no payload) and drop the oldest such records past
    KEEP_UNAUTHORIZED for this hook."""
    with cmdr.writing():
        WebhookDelivery.create(hook=hook.id, key=f"refused-{uuid.uuid4()}", event=event[:64], status=UNAUTHORIZED,
                               error=error)
        kept = (WebhookDelivery.select(WebhookDelivery.id)
                .where((WebhookDelivery.hook == hook.id) & (WebhookDelivery.status == UNAUTHORIZED))
                .order_by(WebhookDelivery.id.desc()).limit(KEEP_UNAUTHORIZED))
        WebhookDelivery.delete().where((WebhookDelivery.hook == hook.id) & (WebhookDelivery.status == UNAUTHORIZED)
                                       & WebhookDelivery.id.not_in(kept)).execute()


def claim(cmdr: Commander, hook: Webhook, key: str | None, event: str, action: str | None, sealed: str | None,
          monitor: str | None = None) -> tuple[WebhookDelivery, bool]:
    """The delivery row for `key`, claimed for handling now: (row, True) for a new one or a failed
    one tried again, (the first row, False) for a redelivery of one that did not fail."""
    key = key or str(uuid.uuid4())
    with cmdr.writing():
        first = WebhookDelivery.get_or_none((WebhookDelivery.hook == hook.id) & (WebhookDelivery.key == key))
        if first is not None and first.status != FAILED:
            return first, False
        fields = dict(event=event[:64], action=action and action[:64], status=RECEIVED, error=None, payload=sealed,
                      monitor=monitor, received_at=now(), task_ids=[], pipeline=None, due_at=None, note=None)
        if first is None:
            try:
                with cmdr.db.atomic():  # a savepoint: the unique index settles a race the look above lost
                    return WebhookDelivery.create(hook=hook.id, key=key, **fields), True
            except pw.IntegrityError:
                return WebhookDelivery.get((WebhookDelivery.hook == hook.id) & (WebhookDelivery.key == key)), False
        WebhookDelivery.update(**fields).where(WebhookDelivery.id == first.id).execute()
    return get(first.id), True


def settle(cmdr: Commander, delivery: WebhookDelivery, status: str, **fields) -> WebhookDelivery:
    """Record what came of a delivery, and announce it (event `webhook.<status>`)."""
    with cmdr.writing():
        WebhookDelivery.update(status=status, **fields).where(WebhookDelivery.id == delivery.id).execute()
        settled = get(delivery.id)
        events.publish(f"webhook.{status}", hook=delivery.hook_id, delivery=delivery.id, event=settled.event,
                       action=settled.action, tasks=settled.task_ids, pipeline=settled.pipeline, error=settled.error)
    return settled
