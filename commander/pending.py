"""Tokenless joins: a machine asks, waits as pending, and registers once an operator approves.

A pending machine holds no secret of the mesh and can do nothing but ask for its own state,
with the poll token it was given. Strangers on the LAN can at most fill the capped waiting list
(per address and overall; entries expire after a day), and an operator empties it by rejecting.
"""

from __future__ import annotations

from commander import audit, events, nodes
from commander.context import Commander
from commander.exceptions import Conflict, NotFound, TooManyRequests
from commander.models import Node, PendingNode, now
from commander.secrets import new_token, token_hash

PER_ADDRESS = 3          # waiting requests from one address
EXPIRES_AFTER = 86400.0  # a request nobody approved within a day is dropped


def request(cmdr: Commander, machine: nodes.Machine, address: str | None) -> dict:
    """`machine` asks to join from `address`; returns its id and the poll token it asks with."""
    token = new_token("pending")
    with cmdr.writing():
        PendingNode.delete().where(PendingNode.requested_at < now() - EXPIRES_AFTER).execute()
        known = Node.get_or_none(Node.machine_id == machine.machine_id)
        if known is not None:
            raise nodes.machine_known(known)
        if PendingNode.select().where(PendingNode.machine_id == machine.machine_id).exists():
            raise Conflict("already_pending", "this machine is already waiting for approval")
        if PendingNode.select().count() >= cmdr.settings.max_pending_nodes:
            raise TooManyRequests("too_many_pending", "too many machines are waiting for approval; approve or reject "
                                                      "some first")
        if PendingNode.select().where(PendingNode.address == address).count() >= PER_ADDRESS:
            raise TooManyRequests("too_many_pending", "too many machines from this address are waiting for approval")
        row = PendingNode.create(machine_id=machine.machine_id, name=machine.name,
                                 capabilities=sorted(set(machine.capabilities)), slots=machine.slots,
                                 version=machine.version, address=address, poll_hash=token_hash(token),
                                 public_key=machine.public_key, seal_key=machine.seal_key)
        events.publish("node.pending", pending=row.id, name=row.name, address=address)
    return dict(id=row.id, state="pending", poll_token=token)


def poll(cmdr: Commander, token: str) -> dict:
    """The waiting machine asks; once approved, this registers it and hands over its secrets, once."""
    row = PendingNode.get_or_none(PendingNode.poll_hash == token_hash(token))
    if row is None:
        raise NotFound("not_pending", "no such join request: it was rejected, has expired or was already approved")
    if row.approved_at is None:
        return dict(state="pending")
    machine = nodes.Machine(machine_id=row.machine_id, name=row.name, capabilities=row.capabilities, slots=row.slots,
                            version=row.version, public_key=row.public_key, seal_key=row.seal_key)
    registration = nodes.register(cmdr, machine, f"pending node {row.id}, approved by {row.approved_by}")
    with cmdr.writing():
        PendingNode.delete().where(PendingNode.id == row.id).execute()
    return dict(state="approved", registration=registration)


def approve(cmdr: Commander, pending_id: int, actor: str) -> PendingNode:
    row = get(pending_id)
    with cmdr.writing():
        PendingNode.update(approved_at=now(), approved_by=actor).where(PendingNode.id == pending_id).execute()
        events.publish("node.approved", pending=pending_id, name=row.name)
        audit.record(actor, "node.approved", f"pending node {pending_id} {row.name}", machine_id=row.machine_id,
                     requested_from=row.address)
    return get(pending_id)


def reject(cmdr: Commander, pending_id: int, actor: str) -> None:
    row = get(pending_id)
    with cmdr.writing():
        PendingNode.delete().where(PendingNode.id == pending_id).execute()
        events.publish("node.rejected", pending=pending_id, name=row.name)
        audit.record(actor, "node.rejected", f"pending node {pending_id} {row.name}", machine_id=row.machine_id,
                     requested_from=row.address)


def get(pending_id: int) -> PendingNode:
    row = PendingNode.get_or_none(PendingNode.id == pending_id)
    if row is None:
        raise NotFound("not_found", f"pending node {pending_id} does not exist")
    return row


def listing() -> list[PendingNode]:
    """Machines waiting for an operator's answer, oldest first."""
    return list(PendingNode.select().order_by(PendingNode.id))
