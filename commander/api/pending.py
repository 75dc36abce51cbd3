from __future__ import annotations

from flask import Blueprint, request

from commander import pending
from commander.permissions import PUBLIC
from commander.routing import api_route, commander, principal
from commander.schemas import PendingList, PendingNodeOut, PendingOut, PendingPollIn, PendingPollOut, RegisterIn

bp = Blueprint("pending", __name__)


@api_route(bp, "POST", "/nodes/pending", permission=PUBLIC, body=RegisterIn, response=PendingOut, status=202)
def request_join(body: RegisterIn):
    """Ask to join without a token: the machine waits as pending until an operator approves it."""
    return PendingOut(**pending.request(commander(), body, request.remote_addr))


@api_route(bp, "POST", "/nodes/pending/poll", permission=PUBLIC, body=PendingPollIn, response=PendingPollOut)
def poll(body: PendingPollIn):
    """A pending machine asks whether it was approved; the answer that says so carries its node secrets."""
    return PendingPollOut(**pending.poll(commander(), body.poll_token))


@api_route(bp, "GET", "/nodes/pending", permission="nodes:read", response=PendingList)
def list_pending():
    """Machines waiting for approval, with the address each asked from."""
    return PendingList(pending=[PendingNodeOut(**row) for row in pending.listing()])


@api_route(bp, "POST", "/nodes/pending/<id:pending_id>/approve", permission="nodes:manage", response=PendingNodeOut)
def approve(pending_id: int):
    """Let a pending machine in: at its next poll it registers as a node (audited)."""
    return PendingNodeOut(**pending.as_dict(pending.approve(commander(), pending_id, principal().actor)))


@api_route(bp, "DELETE", "/nodes/pending/<id:pending_id>", permission="nodes:manage", status=204)
def reject(pending_id: int):
    """Turn a pending machine away (audited); its poll token stops working."""
    pending.reject(commander(), pending_id, principal().actor)
