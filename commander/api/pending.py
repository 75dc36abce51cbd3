from __future__ import annotations

from flask import Blueprint, request

from commander import nodes, pending
from commander.api.nodes import may_see_machine_ids
from commander.auth import principal
from commander.permissions import PUBLIC
from commander.routes import api_route, commander
from commander.models import PendingNode
from commander.schemas import PendingList, PendingNodeOut, PendingOut, PendingPollIn, PendingPollOut, RegisterIn
from m3shd.trust import key_fingerprint

bp = Blueprint("pending", __name__)


def pending_out(row: PendingNode) -> PendingNodeOut:
    return PendingNodeOut.from_row(row, approved=row.approved_at is not None,
                                   machine_id=row.machine_id if may_see_machine_ids() else None,
                                   key_fingerprint=row.public_key and key_fingerprint(row.public_key))


@api_route(bp, "POST", "/nodes/pending", permission=PUBLIC, body=RegisterIn, response=PendingOut, status=202)
def request_join(body: RegisterIn):
    """Ask to join without a token: the machine waits as pending until an operator approves it."""
    return PendingOut(**pending.request(commander(), nodes.Machine(**body.model_dump()), request.remote_addr))


@api_route(bp, "POST", "/nodes/pending/poll", permission=PUBLIC, body=PendingPollIn, response=PendingPollOut)
def poll(body: PendingPollIn):
    """A pending machine asks whether it was approved; the answer that says so carries its node secrets."""
    return PendingPollOut(**pending.poll(commander(), body.poll_token))


@api_route(bp, "GET", "/nodes/pending", permission="nodes:read", response=PendingList)
def list_pending():
    """Machines waiting for approval, with the address each asked from."""
    return PendingList(pending=[pending_out(row) for row in pending.listing()])


@api_route(bp, "POST", "/nodes/pending/<id:pending_id>/approve", permission="nodes:manage", response=PendingNodeOut)
def approve(pending_id: int):
    """Let a pending machine in: at its next poll it registers as a node (audited)."""
    return pending_out(pending.approve(commander(), pending_id, principal().actor))


@api_route(bp, "DELETE", "/nodes/pending/<id:pending_id>", permission="nodes:manage", status=204)
def reject(pending_id: int):
    """Turn a pending machine away (audited); its poll token stops working."""
    pending.reject(commander(), pending_id, principal().actor)
