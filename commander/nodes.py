"""Node lifecycle: register, heartbeat, deregister, and marking silent nodes lost."""

from __future__ import annotations

import secrets

import peewee as pw

from commander import audit, events
from commander.context import Commander
from commander.db import Compiled
from commander.errors import ApiError
from commander.models import (
    ACTIVE, DRAINING, LEASED, LIVE_STATES, LOST, OFFLINE, PAUSED, QUEUED, Node, Task, Token, now,
)
from commander.permissions import NODE_PERMISSIONS
from commander.schemas import HeartbeatIn, RegisterIn
from commander.secrets import new_token, token_hash



def register(cmdr: Commander, body: RegisterIn) -> dict:
    """Create the node, or give a re-registering machine its own node back with fresh secrets."""
    key = secrets.token_bytes(32)
    token = new_token("node")
    fields = dict(
        name=body.name, capabilities=sorted(set(body.capabilities)), slots=body.slots,
        open_slots=body.slots, version=body.version, runner=body.runner, problem=body.problem,
        state=ACTIVE, last_seen=now(), signing_key=cmdr.box.encrypt(key.hex().encode()),
    )
    with cmdr.writing():
        node = Node.get_or_none(Node.machine_id == body.machine_id)
        if node is None:
            node = Node.create(machine_id=body.machine_id, **fields)
            kind = "node.registered"
        else:
            Node.update(**fields).where(Node.id == node.id).execute()
            Token.delete().where(Token.node == node.id).execute()  # old node tokens die here
            kind = "node.reregistered"
        Token.create(kind="node", name=body.name, token_hash=token_hash(token), prefix=token[:8],
                     permissions=list(NODE_PERMISSIONS), node=node.id)
        events.publish(kind, node=node.id, name=body.name, capabilities=fields["capabilities"],
                       slots=body.slots, runner=body.runner, problem=body.problem)
    settings = cmdr.settings
    return dict(node_id=node.id, node_token=token, signing_key=key.hex(),
                heartbeat_interval=settings["heartbeat_interval"], lease_ttl=settings["lease_ttl"],
                max_wait=settings["max_wait"])


# Every heartbeat runs these: compiled once (see db.Compiled), parameters in this order.
NODE_STATE = Compiled(Node, lambda: Node.select(Node.state).where(Node.id == 0))  # (node id)
HEARTBEAT_UPDATE = Compiled(Node, lambda: Node.update(  # (state, capabilities, open_slots, runner, problem, last_seen, id)
    state="", capabilities=[], open_slots=0, runner="", problem="", last_seen=0.0).where(Node.id == 0))


def heartbeat(cmdr: Commander, node: Node, body: HeartbeatIn) -> dict:
    """Record liveness, renew the leases the node still holds, and answer with orders."""
    t = now()
    tokens = [ref.lease_token for ref in body.running]
    capabilities = sorted(set(body.capabilities)) if body.capabilities is not None else node.capabilities
    with cmdr.writing(wake=False):
        state = NODE_STATE.rows(node.id)[0].state  # fresh, under the write lock
        new_state = state
        if state in (LOST, OFFLINE):
            new_state = ACTIVE
        if body.draining and new_state != DRAINING:
            new_state = DRAINING
        HEARTBEAT_UPDATE.execute(new_state, Node.capabilities.db_value(capabilities), body.open_slots, body.runner,
                                 body.problem, t, node.id)
        published = False
        if new_state != state:
            events.publish(f"node.{new_state}", node=node.id, previous=state)
            published = True
        if (body.runner, body.problem) != (node.runner, node.problem):
            events.publish("node.runner", node=node.id, runner=body.runner, problem=body.problem)
            published = True
        held = set()
        if tokens:
            Task.update(lease_until=t + cmdr.settings["lease_ttl"]).where(
                (Task.state == LEASED) & (Task.node == node.id) & Task.lease_token.in_(tokens)
            ).execute()
            held = {
                row.lease_token
                for row in Task.select(Task.lease_token).where(
                    (Task.state == LEASED) & (Task.node == node.id) & Task.lease_token.in_(tokens)
                )
            }
    if published:
        cmdr.notifier.notify()
    cancel = [ref.model_dump() for ref in body.running if ref.lease_token not in held]
    return dict(state=new_state, heartbeat_interval=cmdr.settings["heartbeat_interval"],
                orders=dict(drain=new_state == DRAINING, pause=new_state == PAUSED, cancel=cancel))


def deregister(cmdr: Commander, node: Node) -> None:
    """A clean exit: the node goes offline and any lease it still holds expires now."""
    with cmdr.writing():
        Node.update(state=OFFLINE, open_slots=0, last_seen=now()).where(Node.id == node.id).execute()
        Task.update(lease_until=now()).where((Task.state == LEASED) & (Task.node == node.id)).execute()
        events.publish("node.offline", node=node.id)


def mark_lost(cmdr: Commander) -> int:
    """Nodes silent for longer than `lost_after` become lost; their leases then expire."""
    cutoff = now() - cmdr.settings["lost_after"]
    silent = Node.select(Node.id, Node.state).where(Node.state.in_(LIVE_STATES) & (Node.last_seen < cutoff))
    if not silent.exists():
        return 0
    count = 0
    with cmdr.writing():
        for node in silent:
            changed = Node.update(state=LOST, open_slots=0).where(
                (Node.id == node.id) & Node.state.in_(LIVE_STATES) & (Node.last_seen < cutoff)
            ).execute()
            if changed:
                count += 1
                events.publish("node.lost", node=node.id, previous=node.state)
    return count


def set_state(cmdr: Commander, node_id: int, state: str, actor: str) -> Node:
    node = get(node_id)
    with cmdr.writing():
        Node.update(state=state).where(Node.id == node_id).execute()
        events.publish(f"node.{state}", node=node_id, previous=node.state)
        audit.record(actor, "node.state", f"node {node_id} {node.name}", previous=node.state, state=state)
    return get(node_id)


def remove(cmdr: Commander, node_id: int, actor: str) -> None:
    """Forget a node: its tokens die with it and the work it held goes back to the queue."""
    node = get(node_id)
    with cmdr.writing():
        requeued = [t.id for t in Task.select(Task.id).where((Task.state == LEASED) & (Task.node == node_id))]
        Task.update(state=QUEUED, lease_token=None, lease_until=None, updated_at=now()).where(
            Task.id.in_(requeued)).execute()
        for task_id in requeued:
            events.publish("task.requeued", task=task_id, node=node_id, reason="node removed")
        Node.delete().where(Node.id == node_id).execute()
        events.publish("node.removed", node=node_id, name=node.name)
        audit.record(actor, "node.removed", f"node {node_id} {node.name}", requeued=requeued)


def get(node_id: int) -> Node:
    node = Node.get_or_none(Node.id == node_id)
    if node is None:
        raise ApiError(404, "not_found", f"node {node_id} does not exist")
    return node


def running_counts() -> dict[int, int]:
    rows = Task.select(Task.node, pw.fn.COUNT(Task.id).alias("n")).where(Task.state == LEASED).group_by(Task.node)
    return {row.node_id: row.n for row in rows}


def as_dict(node: Node, running: int) -> dict:
    return dict(
        id=node.id, name=node.name, machine_id=node.machine_id, state=node.state,
        capabilities=node.capabilities, slots=node.slots, open_slots=node.open_slots, running=running,
        runner=node.runner, problem=node.problem, version=node.version,
        registered_at=node.registered_at, last_seen=node.last_seen,
        heartbeat_age=round(max(0.0, now() - node.last_seen), 3),
    )
