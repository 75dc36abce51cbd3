"""A delivery's way in, per kind of sender: find the hook, authenticate the request, claim its
delivery id, parse, and hand the event to a rule (respond.py) or, for Uptime Kuma, to monitors.py.

Each returns (receipt, HTTP status). Refusals are the domain's errors, raised once what must be
recorded of them is committed: a bad signature leaves only an `unauthorized` delivery record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from werkzeug.exceptions import UnsupportedMediaType

from commander.context import Commander
from commander.exceptions import CommanderError, Invalid
from commander.models import Webhook, WebhookDelivery
from commander.schemas import Receipt
from commander.templates import RenderError
from commander.webhooks import deliveries, hooks, respond, verify


@dataclass(frozen=True)
class Request:
    """What the route passes on: the raw body and the headers and query values that matter."""
    raw: bytes
    mimetype: str
    headers: dict[str, str]
    secret_in_url: str | None = None


def receipt(delivery: WebhookDelivery, message: str, duplicate: bool = False) -> Receipt:
    return Receipt(delivery=delivery.id, status=delivery.status, duplicate=duplicate, task_ids=delivery.task_ids,
                   pipeline_id=delivery.pipeline, message=message)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse(request: Request) -> dict:
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("send the payload as JSON (GitHub: Content type application/json; Uptime Kuma: "
                                   "Request Body `application/json`)")
    try:
        document = json.loads(request.raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Invalid("invalid_json", "the payload is not valid JSON") from None
    if not isinstance(document, dict):
        raise Invalid("invalid_json", "the payload must be a JSON object")
    return document


def signed(cmdr: Commander, name: str, kind: str, request: Request, event_header: str,
           delivery_header: str) -> tuple[Receipt, int]:
    """GitHub, and the generic signed JSON hook: X-Hub-Signature-256 over the raw body, the event
    named in `event_header`, the delivery id in `delivery_header`."""
    hook = hooks.get(name, kind)
    event = request.headers.get(event_header, "")
    try:
        verify.check_signature(hooks.secret_of(cmdr, hook), request.raw, request.headers.get(verify.SIGNATURE_HEADER))
    except CommanderError as refused:
        deliveries.unauthorized(cmdr, hook, event, refused.message)
        raise
    if not event:
        raise Invalid("no_event", f"send the event's name in {event_header}")
    try:
        document = parse(request)
    except (Invalid, UnsupportedMediaType) as exc:
        delivery, fresh = deliveries.claim(cmdr, hook, request.headers.get(delivery_header), event, None, None)
        if fresh:  # a delivery id that already started something keeps its record
            deliveries.settle(cmdr, delivery, deliveries.FAILED, error=getattr(exc, "message", None) or exc.description)
        raise
    action = document.get("action") if isinstance(document.get("action"), str) else None
    delivery, fresh = deliveries.claim(cmdr, hook, request.headers.get(delivery_header), event, action,
                                       cmdr.box.encrypt(request.raw))
    if not fresh:
        return receipt(delivery, f"delivery {delivery.key} was received before: nothing new started",
                       duplicate=True), 200
    if kind == "github" and event == "ping":
        return receipt(deliveries.settle(cmdr, delivery, deliveries.PING), "pong"), 200
    return handle_rule(cmdr, hook, delivery, event, action, document)


def handle_rule(cmdr: Commander, hook: Webhook, delivery: WebhookDelivery, event: str, action: str | None,
           document: dict) -> tuple[Receipt, int]:
    """Start what the first matching rule says, now; ignored if none matches."""
    rule = respond.matching(hook.rules, event, action, document)
    if rule is None:
        described = event + (f" ({action})" if action else "")
        settled = deliveries.settle(cmdr, delivery, deliveries.IGNORED, error=f"no rule takes {described}")
        return receipt(settled, f"ignored: no rule of this hook takes {described}"), 202
    return started(cmdr, hook, delivery, rule, document)


def started(cmdr: Commander, hook: Webhook, delivery: WebhookDelivery, rule: dict,
            document: dict) -> tuple[Receipt, int]:
    try:
        task_ids, pipeline_id = respond.start(cmdr, hook, rule, document)
    except (RenderError, CommanderError) as failed:
        reason = str(failed) if isinstance(failed, RenderError) else failed.message
        settled = deliveries.settle(cmdr, delivery, deliveries.FAILED, error=reason)
        return receipt(settled, f"nothing started: {reason}"), 422
    settled = deliveries.settle(cmdr, delivery, deliveries.STARTED, task_ids=task_ids, pipeline=pipeline_id)
    what = f"pipeline {pipeline_id}" if pipeline_id else f"task {task_ids[0]}"
    return receipt(settled, f"started {what}"), 202


def uptime_kuma(cmdr: Commander, name: str, request: Request) -> tuple[Webhook, dict, str]:
    """Uptime Kuma's webhook notification, authenticated and parsed: the hook, the payload
    (`{heartbeat, monitor, msg}`) and the payload sealed for keeping. monitors.py takes it on."""
    hook = hooks.get(name, "uptime-kuma")
    try:
        verify.check_secret(hooks.secret_of(cmdr, hook), request.headers.get("Authorization"), request.secret_in_url)
    except CommanderError as refused:
        deliveries.unauthorized(cmdr, hook, "", refused.message)
        raise
    return hook, parse(request), cmdr.box.encrypt(request.raw)
