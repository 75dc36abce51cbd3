"""Node lifecycle: register, heartbeat, deregister, and marking silent nodes lost."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import peewee as pw

from commander import audit, breakers, events, planning, reputation, scheduler, tasks
from commander.context import Commander
from commander.db import Compiled, CompiledUpdate, Param
from commander.exceptions import Conflict, Invalid, NotFound
from commander.models import (
    ACTIVE, DISABLED, DRAINING, LEASED, LIVE_STATES, LOST, OFFLINE, OPERATOR_STATES, QUEUED, Node, NodeKey,
    Outcome, Task, Token, now,
)
from commander.permissions import NODE_PERMISSIONS
from commander.secrets import new_token, token_hash
from commander.settings import CommanderSettings
from commander.signals import TAKEN_BACK, AttemptEnded


@dataclass(frozen=True, kw_only=True)
class Machine:
    """A machine asking to be a node: what it says about itself when it registers (or asks to join)."""
    machine_id: str
    name: str
    capabilities: Sequence[str] = ()
    slots: int = 1
    priority: int = 0               # breaks ties between equally good nodes
    version: str = ""
    runner: str | None = None
    problem: str | None = None      # why it cannot run tasks, in its own words
    public_key: str | None = None   # hex Ed25519 key it signs results with


class LeaseRef(NamedTuple):
    """An attempt a node says it is running."""
    task_id: int
    attempt: int
    lease_token: str


def register(cmdr: Commander, machine: Machine) -> dict:
    """Create the node, or give a re-registering machine its own node back with fresh secrets."""
    key = secrets.token_bytes(32)
    token = new_token("node")
    fields = dict(
        name=machine.name, capabilities=sorted(set(machine.capabilities)), slots=machine.slots,
        open_slots=machine.slots, priority=machine.priority, version=machine.version, runner=machine.runner,
        problem=machine.problem, state=ACTIVE, last_seen=now(), signing_key=cmdr.box.encrypt(key.hex().encode()),
        next_signing_key=None,  # a registration's fresh key supersedes a rotation under way
    )
    with cmdr.writing():
        node = Node.get_or_none(Node.machine_id == machine.machine_id)
        if node is None:
            node = Node.create(machine_id=machine.machine_id, **fields)
            kind = "node.registered"
        else:
            if node.state in OPERATOR_STATES:  # a restart does not undo an operator's pause or disable
                fields["state"] = node.state
            Node.update(**fields).where(Node.id == node.id).execute()
            Token.delete().where(Token.node == node.id).execute()  # old node tokens die here
            kind = "node.reregistered"
        Token.create(kind="node", name=machine.name, token_hash=token_hash(token), prefix=token[:8],
                     permissions=list(NODE_PERMISSIONS), node=node.id)
        NodeKey.create(node=node.id, hmac_key=fields["signing_key"], public_key=machine.public_key)
        events.publish(kind, node=node.id, name=machine.name, capabilities=fields["capabilities"],
                       slots=machine.slots, runner=machine.runner, problem=machine.problem)
    settings = cmdr.settings
    return dict(node_id=node.id, node_token=token, signing_key=key.hex(),
                heartbeat_interval=settings.heartbeat_interval, lease_ttl=settings.lease_ttl,
                max_wait=settings.max_wait)


# Every heartbeat runs these: compiled once (see db.Compiled).
NODE_STATE = Compiled(Node, lambda: Node.select(Node.state).where(Node.id == Param("node_id")))
HEARTBEAT_UPDATE = CompiledUpdate(Node, ("state", "capabilities", "open_slots", "runner", "problem", "last_seen"),
                                  match=("id",))
RENEW_LEASES = Compiled(Task, lambda tokens: Task.update(lease_until=Param("until")).where(
    (Task.state == LEASED) & (Task.node == Param("node_id")) & Task.lease_token.in_(tokens)
).returning(Task.lease_token))


def heartbeat(cmdr: Commander, node: Node, *, open_slots: int, running: Sequence[LeaseRef] = (),
              runner: str | None = None, problem: str | None = None, capabilities: Sequence[str] | None = None,
              draining: bool = False) -> dict:
    """Record liveness, renew the leases the node still holds, and answer with orders.
    `capabilities` None: unchanged; `draining`: the node is shutting down."""
    t = now()
    tokens = [ref.lease_token for ref in running]
    capabilities = sorted(set(capabilities)) if capabilities is not None else node.capabilities
    with cmdr.writing(wake=False):
        state = NODE_STATE.rows(node_id=node.id)[0].state  # fresh, under the write lock
        new_state = state
        if draining:
            # A shutting-down node drains; one that already deregistered stays offline (its last
            # heartbeat can arrive after the deregistration).
            if state not in (DRAINING, OFFLINE, *OPERATOR_STATES):
                new_state = DRAINING
        elif state in (LOST, OFFLINE):
            new_state = ACTIVE
        HEARTBEAT_UPDATE.execute(dict(id=node.id), state=new_state, capabilities=capabilities, open_slots=open_slots,
                                 runner=runner, problem=problem, last_seen=t)
        published = False
        if new_state != state:
            events.publish(f"node.{new_state}", node=node.id, previous=state)
            published = True
        if (runner, problem) != (node.runner, node.problem):
            events.publish("node.runner", node=node.id, runner=runner, problem=problem)
            published = True
        held = set()
        if tokens:
            until = t + cmdr.settings.lease_ttl
            held = {token for (token,) in RENEW_LEASES.tuples(until=until, node_id=node.id, tokens=tokens)}
    if published:
        cmdr.notifier.notify()
    cancel = [ref._asdict() for ref in running if ref.lease_token not in held]
    return dict(state=new_state, heartbeat_interval=cmdr.settings.heartbeat_interval,
                orders=dict(drain=new_state == DRAINING, pause=new_state in OPERATOR_STATES, cancel=cancel,
                            rotate_key=pending_key_hex(cmdr, node)))


def pending_key_hex(cmdr: Commander, node: Node) -> str | None:
    """The key a rotation waits for the node to take up; repeated on every heartbeat until it
    does, so a lost reply costs nothing."""
    if node.next_signing_key is None:
        return None
    return cmdr.box.decrypt(node.next_signing_key).decode()


def rotate_key(cmdr: Commander, node_id: int, actor: str) -> None:
    """An operator's order: a fresh HMAC key, handed to the node by its next heartbeat. The old
    key keeps working until the node signs a request with the new one (see finish_rotation).
    Ordering again while one is pending replaces the pending key."""
    node = get(node_id)
    if node.state not in LIVE_STATES:
        raise Conflict("not_live", f"node {node_id} is {node.state}; only a connected node takes orders")
    sealed = cmdr.box.encrypt(secrets.token_bytes(32).hex().encode())
    with cmdr.writing():
        Node.update(next_signing_key=sealed).where(Node.id == node_id).execute()
        events.publish("node.key_rotating", node=node_id)
        audit.record(actor, "node.rotate_key", f"node {node_id} {node.name}",
                     replaced_pending=node.next_signing_key is not None)


def finish_rotation(cmdr: Commander, node_id: int, sealed: str) -> bool:
    """The node signed with its pending key `sealed`: that key becomes its signing key, and a new
    NodeKey record (same public key) lets provenance find it for the results signed from now on.
    False if the pending key changed meanwhile (the operator ordered another rotation)."""
    with cmdr.writing():
        finished = Node.update(signing_key=sealed, next_signing_key=None).where(
            (Node.id == node_id) & (Node.next_signing_key == sealed)).execute()
        if not finished:
            # A concurrent request signed with the same key may have finished it first.
            return Node.select().where((Node.id == node_id) & (Node.signing_key == sealed)).exists()
        latest = NodeKey.select(NodeKey.public_key).where(NodeKey.node == node_id).order_by(NodeKey.id.desc()).first()
        NodeKey.create(node=node_id, hmac_key=sealed, public_key=latest.public_key if latest else None)
        events.publish("node.key_rotated", node=node_id)
    return True


def deregister(cmdr: Commander, node: Node) -> None:
    """A clean exit: the node goes offline (unless paused or disabled, which it stays) and any
    lease it still holds expires now."""
    with cmdr.writing():
        Node.update(open_slots=0, last_seen=now()).where(Node.id == node.id).execute()
        Node.update(state=OFFLINE).where((Node.id == node.id) & Node.state.not_in(OPERATOR_STATES)).execute()
        Task.update(lease_until=now()).where((Task.state == LEASED) & (Task.node == node.id)).execute()
        events.publish("node.offline", node=node.id)


def mark_lost(cmdr: Commander) -> int:
    """Nodes silent for longer than `lost_after` become lost; their leases then expire. A paused
    or disabled node keeps that state (an operator's order outlives a reboot); its heartbeat age
    shows the silence and its leases expire all the same."""
    cutoff = now() - cmdr.settings.lost_after
    silent = Node.select(Node.id, Node.state).where(Node.state.in_((ACTIVE, DRAINING)) & (Node.last_seen < cutoff))
    if not silent.exists():
        return 0
    count = 0
    with cmdr.writing():
        for node in silent:
            changed = Node.update(state=LOST, open_slots=0).where(
                (Node.id == node.id) & Node.state.in_((ACTIVE, DRAINING)) & (Node.last_seen < cutoff)
            ).execute()
            if changed:
                count += 1
                events.publish("node.lost", node=node.id, previous=node.state)
    return count


def set_state(cmdr: Commander, node_id: int, state: str, actor: str, deadline: float | None = None) -> Node:
    """An operator's order. Paused: takes nothing new, finishes what it runs. Draining: the same,
    with an optional deadline after which its remaining work is queued elsewhere. Disabled: out of
    service until made active again, its running work queued elsewhere now."""
    if deadline is not None and state != DRAINING:
        raise Invalid("invalid_request", "a deadline applies only to draining")
    node = get(node_id)
    if node.state not in LIVE_STATES:
        raise Conflict("not_live", f"node {node_id} is {node.state}; only a connected node takes orders")
    drain_deadline = now() + deadline if deadline is not None else None
    with cmdr.writing():
        Node.update(state=state, drain_deadline=drain_deadline).where(Node.id == node_id).execute()
        events.publish(f"node.{state}", node=node_id, previous=node.state, deadline=drain_deadline)
        audit.record(actor, "node.state", f"node {node_id} {node.name}", previous=node.state, state=state,
                     deadline=drain_deadline)
        if state == DISABLED:
            requeue_leases(cmdr, node_id, "node disabled")
    return get(node_id)


def requeue_leases(cmdr: Commander, node_id: int, reason: str) -> list[int]:
    """Inside the caller's write transaction: the node's running work goes back to the queue,
    each attempt taken back ends, and the node's next heartbeat gets cancel orders."""
    t = now()
    taken = []
    for task in list(Task.select(Task.id, Task.attempt).where((Task.state == LEASED) & (Task.node == node_id))):
        if not Task.update(state=QUEUED, lease_token=None, lease_until=None, updated_at=t).where(
                (Task.id == task.id) & (Task.state == LEASED) & (Task.attempt == task.attempt)).execute():
            continue
        taken.append(task.id)
        events.publish("task.requeued", task=task.id, node=node_id, reason=reason)
        cmdr.signals.attempt_ended.send(cmdr, AttemptEnded(tasks.get(task.id), node_id, task.attempt, TAKEN_BACK, t))
    return taken


def enforce_drain_deadlines(cmdr: Commander) -> int:
    """Draining nodes past their deadline give up the work they still run."""
    late = list(Node.select(Node.id).where((Node.state == DRAINING) & (Node.drain_deadline < now())))
    if not late:
        return 0
    with cmdr.writing():
        for node in late:
            requeued = requeue_leases(cmdr, node.id, "drain deadline passed")
            Node.update(drain_deadline=None).where(Node.id == node.id).execute()
            events.publish("node.drain_deadline", node=node.id, requeued=requeued)
    return len(late)


def remove(cmdr: Commander, node_id: int, actor: str) -> None:
    """Forget a node: its tokens die with it and the work it held goes back to the queue."""
    node = get(node_id)
    with cmdr.writing():
        requeued = requeue_leases(cmdr, node_id, "node removed")
        Node.delete().where(Node.id == node_id).execute()
        events.publish("node.removed", node=node_id, name=node.name)
        audit.record(actor, "node.removed", f"node {node_id} {node.name}", requeued=requeued)


def get(node_id: int) -> Node:
    node = Node.get_or_none(Node.id == node_id)
    if node is None:
        raise NotFound("not_found", f"node {node_id} does not exist")
    return node


def listing() -> list[Node]:
    """Every node, in id order."""
    return list(Node.select().order_by(Node.id))


def standing(listed: list[Node], settings: CommanderSettings) -> dict[int, dict]:
    """What the API shows of each node beyond its row, by node id: slots in use, heartbeat age,
    breaker, and reputation with its recent window and the score the node would get for a plain
    task now (planning.candidates/Ranking)."""
    t = now()
    running = planning.running_now()
    windows = recent_outcomes([n.id for n in listed], settings.reputation_window)
    able = planning.candidates(t, settings, running=running)
    ranking = scheduler.Ranking(able, settings)
    total = sum(c.count for c in able)
    half_life = settings.reputation_half_life
    shown = {}
    for node in listed:
        count = reputation.count_now(node.rep_count, node.rep_at, t, half_life)
        shown[node.id] = dict(
            running=running.get(node.id, 0), heartbeat_age=round(max(0.0, t - node.last_seen), 3),
            breaker=breaker_view(node, t),
            reputation=dict(
                mean=round(node.rep_mean, 4), count=round(count, 4),
                ucb=round(reputation.ucb(node.rep_mean, count, total, settings.ucb_c), 4) if count > 0 else None,
                score=round(ranking.base[node.id], 3) if node.id in ranking.base else None,
                window=windows.get(node.id, []),
            ),
        )
    return shown


def breaker_view(node: Node, t: float) -> dict:
    """The breaker as it stands now: an open one past its cooldown shows as half-open."""
    _, breaker = breakers.admits(planning.breaker_of(node), t)
    return dict(state=breaker.state, failures=breaker.failures, cooldown=breaker.cooldown, until=breaker.until,
                probe_task_id=breaker.probe)


def recent_outcomes(node_ids: list[int], per_node: int) -> dict[int, list[dict]]:
    """The latest `per_node` outcomes of each node, newest first, in one query."""
    if not node_ids:
        return {}
    numbered = Outcome.select(
        Outcome, pw.fn.ROW_NUMBER().over(partition_by=[Outcome.node], order_by=[Outcome.id.desc()]).alias("n")
    ).where(Outcome.node.in_(node_ids))
    rows = (
        Outcome.select(numbered.c.node_id, numbered.c.task, numbered.c.ts, numbered.c.kind, numbered.c.reward,
                       numbered.c.duration_ms)
        .from_(numbered).where(numbered.c.n <= per_node).order_by(numbered.c.node_id, numbered.c.n).tuples()
    )
    grouped: dict[int, list[dict]] = {}
    for node_id, task_id, ts, kind, reward, duration_ms in rows:
        grouped.setdefault(node_id, []).append(
            dict(task_id=task_id, ts=ts, kind=kind, reward=reward, duration_ms=duration_ms))
    return grouped
