"""The /api/webhooks routes: managing hooks needs `webhooks:manage`; the receiving routes declare
`webhooks:ingest`, which a hook's own secret holds: they take no token or session (GitHub and
Uptime Kuma send none) but the signature or secret each checks, and their bodies are capped at
webhook_max_body before they are read."""

from __future__ import annotations

from flask import Blueprint, request

from commander.auth import principal
from commander.routes import api_route, commander
from commander.schemas import DeliveryQuery, HookDetail, HookIn, HookList, HookOut, Receipt
from commander.webhooks import deliveries, hooks, monitors, receive

bp = Blueprint("webhooks", __name__)
HOOK = dict(permission="webhooks:ingest", hook=True, body_limit="webhook_max_body", response=Receipt, status=202,
            also=(200, 422))


@api_route(bp, "POST", "/webhooks", permission="webhooks:manage", body=HookIn, response=HookOut, status=201)
def create(body: HookIn):
    """Create a webhook; its secret is in this answer only (give it to the sender)."""
    hook, secret = hooks.create(commander(), body, principal().actor)
    return hooks.out(hook, secret), 201


@api_route(bp, "GET", "/webhooks", permission="webhooks:manage", response=HookList)
def list_hooks():
    """Every webhook, by name (never their secrets)."""
    return HookList(hooks=[hooks.out(hook) for hook in hooks.listing()])


@api_route(bp, "GET", "/webhooks/<name>", permission="webhooks:manage", query=DeliveryQuery, response=HookDetail)
def show(name: str, query: DeliveryQuery):
    """A webhook and its latest deliveries, newest first: what each started, or why not."""
    hook = hooks.get(name)
    return HookDetail(hook=hooks.out(hook), deliveries=[deliveries.out(d) for d in deliveries.recent(hook, query.limit)])


@api_route(bp, "POST", "/webhooks/<name>/rotate-secret", permission="webhooks:manage", response=HookOut)
def rotate_secret(name: str):
    """Give a webhook a new secret (in this answer only); the old one stops working at once."""
    hook, secret = hooks.rotate(commander(), name, principal().actor)
    return hooks.out(hook, secret)


@api_route(bp, "DELETE", "/webhooks/<name>", permission="webhooks:manage", status=204)
def delete(name: str):
    """Delete a webhook and its deliveries; what it started stays."""
    hooks.delete(commander(), name, principal().actor)


def incoming() -> receive.Request:
    return receive.Request(raw=request.get_data(cache=True), mimetype=request.mimetype, headers=request.headers,
                           secret_in_url=request.args.get("secret"))


@api_route(bp, "POST", "/webhooks/github/<name>", **HOOK)
def github(name: str):
    """A GitHub delivery, signed with X-Hub-Signature-256; X-GitHub-Event and `action` pick the rule."""
    return receive.signed(commander(), name, "github", incoming(), "X-GitHub-Event", "X-GitHub-Delivery")


@api_route(bp, "POST", "/webhooks/json/<name>", **HOOK)
def signed_json(name: str):
    """Any JSON, signed as GitHub signs (X-Hub-Signature-256), the event named in X-M3SHD-Event, its id in X-M3SHD-Delivery."""
    return receive.signed(commander(), name, "json", incoming(), "X-M3SHD-Event", "X-M3SHD-Delivery")


@api_route(bp, "POST", "/webhooks/uptime-kuma/<name>", **HOOK)
def uptime_kuma(name: str):
    """An Uptime Kuma notification; the hook's secret as `Authorization: Bearer` or `?secret=`."""
    return monitors.receive(commander(), *receive.uptime_kuma(commander(), name, incoming()))
