"""Node lifecycle: register, heartbeat, deregister, and marking silent nodes lost."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import peewee as pw

from commander import audit, breakers, capabilities, events, planning, reputation, scheduler, tasks
from commander.capabilities import Standing
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
    seal_key: str | None = None     # hex X25519 key its runner credentials are sealed to


class LeaseRef(NamedTuple):
    """An attempt a node says it is running."""
    task_id: int
    attempt: int
    lease_token: str


def register(cmdr: Commander, machine: Machine, actor: str) -> dict:
    """A new machine becomes a node with fresh secrets; the capabilities it reports are approved
    as given (see capabilities.py). A machine id already on record is refused (`machine_known`,
    audited): only that node, proving its current key, registers again (`reregister`)."""
    key = secrets.token_bytes(32)
    token = new_token("node")
    sealed = cmdr.box.encrypt(key.hex().encode())
    labels = sorted(set(machine.capabilities))
    with cmdr.writing():
        known = Node.get_or_none(Node.machine_id == machine.machine_id)
        if known is None:
            node = Node.create(
                machine_id=machine.machine_id, name=machine.name, capabilities=labels, slots=machine.slots,
                open_slots=machine.slots, priority=machine.priority, version=machine.version, runner=machine.runner,
                problem=machine.problem, state=ACTIVE, last_seen=now(), signing_key=sealed, seal_key=machine.seal_key)
            Token.create(kind="node", name=machine.name, token_hash=token_hash(token), prefix=token[:8],
                         permissions=list(NODE_PERMISSIONS), node=node.id)
            NodeKey.create(node=node.id, hmac_key=sealed, public_key=machine.public_key)
            events.publish("node.registered", node=node.id, name=machine.name, capabilities=labels,
                           slots=machine.slots, runner=machine.runner, problem=machine.problem)
            audit.record(actor, "node.registered", described(node), capabilities=labels,
                         public_key=machine.public_key, seal_key=machine.seal_key)
    if known is not None:
        with cmdr.writing(wake=False):
            audit.record(actor, "node.takeover_refused", described(known), name=machine.name)
        raise machine_known(known)
    settings = cmdr.settings
    return dict(node_id=node.id, node_token=token, signing_key=key.hex(),
                heartbeat_interval=settings.heartbeat_interval, lease_ttl=settings.lease_ttl,
                max_wait=settings.max_wait)


def machine_known(node: Node) -> Conflict:
    """The refusal a machine id already on record gets without its node's key: what to do about it."""
    return Conflict(
        "machine_known",
        f"this machine id belongs to node {node.id} ({node.name}); only that node registers again, with its saved "
        f"identity (its key proves it). If this machine was reinstalled and lost that identity, remove node "
        f"{node.id} (`m3shd nodes remove {node.id}`), then join it again")


def described(node: Node) -> str:
    """How the audit log names a node."""
    return f"node {node.id} {node.name}"


def reregister(cmdr: Commander, node_id: int, machine: Machine, actor: str) -> dict:
    """A node that proved its key (a signed request) describes itself again: same node, token
    and key, so a lost answer costs nothing. Its state returns to active unless an operator
    paused or disabled it; new capabilities wait for approval (capabilities.py). Its Ed25519
    key may be given once, never changed: results already signed are verified with it. Its
    X25519 seal key likewise: a stolen node token and HMAC key alone cannot redirect the runner
    credentials to a key of the thief's."""
    with cmdr.writing():
        node = get(node_id)  # fresh, under the write lock
        if machine.machine_id != node.machine_id:
            raise Conflict("machine_mismatch", f"node {node_id} is another machine; a node keeps its machine id")
        on_record = NodeKey.select(NodeKey.public_key).where(NodeKey.node == node_id).order_by(NodeKey.id.desc()).first()
        public_key = on_record.public_key if on_record else None
        if public_key is not None and machine.public_key != public_key:
            raise Conflict("result_key_changed",
                           f"node {node_id} signs its results with another Ed25519 key, which it cannot change: if "
                           f"its state directory was reset, remove node {node_id} (`m3shd nodes remove {node_id}`) "
                           f"and join it again")
        if None not in (node.seal_key, machine.seal_key) and machine.seal_key != node.seal_key:
            raise Conflict("seal_key_changed",
                           f"node {node_id} registered another X25519 seal key, which it cannot change: if its state "
                           f"directory was reset, remove node {node_id} (`m3shd nodes remove {node_id}`) and join it "
                           f"again")
        before = Standing(node.capabilities, node.requested_capabilities)
        after = capabilities.reported(node.capabilities, machine.capabilities, cmdr.settings.capability_facts)
        state = node.state if node.state in OPERATOR_STATES else ACTIVE
        Node.update(name=machine.name, slots=machine.slots, open_slots=machine.slots, priority=machine.priority,
                    version=machine.version, runner=machine.runner, problem=machine.problem, state=state,
                    last_seen=now(), capabilities=after.approved, requested_capabilities=after.requested,
                    ).where(Node.id == node_id).execute()
        if node.seal_key is None and machine.seal_key is not None:
            Node.update(seal_key=machine.seal_key).where(Node.id == node_id).execute()
            audit.record(actor, "node.seal_key", described(node), seal_key=machine.seal_key)
        if public_key is None and machine.public_key is not None:
            NodeKey.create(node=node_id, hmac_key=node.signing_key, public_key=machine.public_key)
            audit.record(actor, "node.result_key", described(node), public_key=machine.public_key)
        events.publish("node.reregistered", node=node_id, name=machine.name, capabilities=after.approved,
                       slots=machine.slots, runner=machine.runner, problem=machine.problem)
        audit.record(actor, "node.reregistered", described(node), name=machine.name, state=state,
                     capabilities=after.approved, requested=after.requested)
        note_capabilities(node, before, after, actor)
    settings = cmdr.settings
    return dict(node_id=node_id, state=state, capabilities=after.approved, requested_capabilities=after.requested,
                heartbeat_interval=settings.heartbeat_interval, lease_ttl=settings.lease_ttl,
                max_wait=settings.max_wait)


def note_capabilities(node: Node, before: Standing, after: Standing, actor: str) -> bool:
    """Inside the caller's write transaction: the events (and for a new request, the audit
    entry) a change of a node's capabilities makes; True if there was any."""
    if after == before:
        return False
    if after.requested is not None and after.requested != before.requested:
        events.publish("node.capabilities_requested", node=node.id, approved=after.approved,
                       requested=after.requested, asked_for=capabilities.asked_for(after))
        audit.record(actor, "node.capabilities_requested", described(node), approved=after.approved,
                     requested=after.requested)
    if after.approved != before.approved:
        events.publish("node.capabilities", node=node.id, previous=before.approved, capabilities=after.approved)
    return True


def approve_capabilities(cmdr: Commander, node_id: int, shown: Sequence[str], actor: str) -> Node:
    """An operator's approval of the capabilities node `node_id` asks for: exactly `shown`, the
    set the operator saw, so a request that changed meanwhile is not approved unseen."""
    with cmdr.writing():
        node = get(node_id)
        if node.requested_capabilities is None:
            raise Conflict("nothing_requested", f"node {node_id} asks for no capabilities beyond those approved")
        if sorted(set(shown)) != node.requested_capabilities:
            raise Conflict("capabilities_changed",
                           f"node {node_id} now asks for {', '.join(node.requested_capabilities) or 'no labels'}; "
                           f"look again and approve that")
        Node.update(capabilities=node.requested_capabilities, requested_capabilities=None).where(
            Node.id == node_id).execute()
        events.publish("node.capabilities_approved", node=node_id, previous=node.capabilities,
                       capabilities=node.requested_capabilities)
        audit.record(actor, "node.capabilities_approved", described(node), previous=node.capabilities,
                     capabilities=node.requested_capabilities)
    return get(node_id)


# Every heartbeat runs these: compiled once (see db.Compiled).
NODE_STANDING = Compiled(Node, lambda: Node.select(Node.state, Node.capabilities, Node.requested_capabilities).where(
    Node.id == Param("node_id")))
HEARTBEAT_UPDATE = CompiledUpdate(Node, ("state", "capabilities", "requested_capabilities", "open_slots", "runner",
                                         "problem", "last_seen"), match=("id",))
RENEW_LEASES = Compiled(Task, lambda tokens: Task.update(lease_until=Param("until")).where(
    (Task.state == LEASED) & (Task.node == Param("node_id")) & Task.lease_token.in_(tokens)
).returning(Task.lease_token))


def heartbeat(cmdr: Commander, node: Node, actor: str, *, open_slots: int, running: Sequence[LeaseRef] = (),
              runner: str | None = None, problem: str | None = None, capabilities: Sequence[str] | None = None,
              draining: bool = False, first: Callable[[], None] | None = None) -> dict:
    """Record liveness, renew the leases the node still holds, and answer with orders.
    `capabilities` None: unchanged (else see capabilities.py); `draining`: the node is shutting down.
    Heartbeats are most of the writes a fleet makes, so they commit in groups (commander/batch.py);
    `first` joins the same write and goes first (the request's nonce: what it raises undoes all)."""
    tokens = [ref.lease_token for ref in running]

    def beat() -> tuple[str, set[str], bool]:
        if first is not None:
            first()
        t = now()
        row = NODE_STANDING.rows(node_id=node.id)[0]  # fresh, under the write lock
        state = new_state = row.state
        if draining:
            # A shutting-down node drains; one that already deregistered stays offline (its last
            # heartbeat can arrive after the deregistration).
            if state not in (DRAINING, OFFLINE, *OPERATOR_STATES):
                new_state = DRAINING
        elif state in (LOST, OFFLINE):
            new_state = ACTIVE
        before = Standing(row.capabilities, row.requested_capabilities)
        after = before if capabilities is None else reported_capabilities(cmdr, before, capabilities)
        HEARTBEAT_UPDATE.execute(dict(id=node.id), state=new_state, capabilities=after.approved,
                                 requested_capabilities=after.requested, open_slots=open_slots, runner=runner,
                                 problem=problem, last_seen=t)
        published = note_capabilities(node, before, after, actor)
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
        return new_state, held, published

    new_state, held, published = cmdr.small_writes.run(beat)
    if published:
        cmdr.notifier.notify()
    cancel = [ref._asdict() for ref in running if ref.lease_token not in held]
    return dict(state=new_state, heartbeat_interval=cmdr.settings.heartbeat_interval,
                orders=dict(drain=new_state == DRAINING, pause=new_state in OPERATOR_STATES, cancel=cancel,
                            rotate_key=pending_key_hex(cmdr, node)))


def reported_capabilities(cmdr: Commander, before: Standing, labels: Sequence[str]) -> Standing:
    """A heartbeat's labels: unchanged labels (most heartbeats) skip the rules."""
    if before.requested is None and sorted(set(labels)) == before.approved:
        return before
    return capabilities.reported(before.approved, labels, cmdr.settings.capability_facts)


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
        audit.record(actor, "node.rotate_key", described(node),
                     replaced_pending=node.next_signing_key is not None)


def finish_rotation(cmdr: Commander, node_id: int, sealed: str, actor: str) -> bool:
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
        audit.record(actor, "node.key_rotated", described(get(node_id)))
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
        audit.record(actor, "node.state", described(node), previous=node.state, state=state,
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
        audit.record(actor, "node.removed", described(node), requeued=requeued)


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
