"""Nodes in process (commander/nodes.py): registering and registering again, heartbeats and the
orders they answer with, key rotation, operator states, silence, a clean exit, and removal."""

from __future__ import annotations

import pytest

from commander import leases, nodes, provenance, tasks
from commander.exceptions import Conflict, Invalid, NotFound
from commander.models import AuditEntry, Event, Node, NodeKey, Task, Token, now
from commander.permissions import NODE_PERMISSIONS
from commander.secrets import token_hash
from mesh import SignedNode, configure, expire_now, join, join_signing, lease_of, report, submit


def beat(cmdr, node: Node, open_slots: int = 1, **options) -> dict:
    """A heartbeat as the route sends it, with the node's row as it stands."""
    return nodes.heartbeat(cmdr, Node.get_by_id(node.id), f"node {node.id}", open_slots=open_slots, **options)


def ref(lease: dict) -> nodes.LeaseRef:
    return nodes.LeaseRef(lease["task_id"], lease["attempt"], lease["lease_token"])


def node_events(node: Node) -> list[tuple[str, dict]]:
    return [(e.kind, e.data) for e in Event.select().where(Event.node == node.id).order_by(Event.id)]


def set_row(node: Node, **fields) -> None:
    Node.update(**fields).where(Node.id == node.id).execute()


# --- registration ------------------------------------------------------------------------------

def test_a_new_machine_gets_a_node_a_token_and_a_key_only_it_is_told(cmdr):
    configure(cmdr, heartbeat_interval=7.0, lease_ttl=21.0, max_wait=40.0)
    machine = nodes.Machine(machine_id="m-1", name="alpha", capabilities=["b", "a", "a"], slots=3, version="1.2",
                            runner="claude-cli", public_key="ab" * 32)
    reply = nodes.register(cmdr, machine, "test")
    assert reply["node_token"].startswith("m3n_") and len(bytes.fromhex(reply["signing_key"])) == 32
    assert (reply["heartbeat_interval"], reply["lease_ttl"], reply["max_wait"]) == (7.0, 21.0, 40.0)
    node = Node.get_by_id(reply["node_id"])
    assert (node.machine_id, node.name, node.state, node.capabilities, node.slots, node.open_slots, node.version,
            node.runner) == ("m-1", "alpha", "active", ["a", "b"], 3, 3, "1.2", "claude-cli")
    # The key is stored sealed, never as the node was told it.
    assert reply["signing_key"] not in node.signing_key
    assert cmdr.box.decrypt(node.signing_key).decode() == reply["signing_key"]
    [token] = Token.select().where(Token.node == node.id)
    assert (token.kind, token.token_hash, set(token.permissions)) == (
        "node", token_hash(reply["node_token"]), set(NODE_PERMISSIONS))
    [key] = NodeKey.select().where(NodeKey.node == node.id)
    assert (key.hmac_key, key.public_key) == (node.signing_key, "ab" * 32)
    assert [kind for kind, _ in node_events(node)] == ["node.registered"]


def test_a_known_machine_id_without_its_key_is_refused_and_audited_never_taken_over(cmdr):
    first = nodes.register(cmdr, nodes.Machine(machine_id="m-1", name="alpha", capabilities=["a"], slots=2), "test")
    with pytest.raises(Conflict) as refused:
        nodes.register(cmdr, nodes.Machine(machine_id="m-1", name="mallory", slots=4), "token 9")
    assert refused.value.code == "machine_known"
    # Nothing of the real node changed: its token and key still act for it.
    [token] = Token.select().where(Token.node == first["node_id"])
    assert token.token_hash == token_hash(first["node_token"]) and Node.select().count() == 1
    node = Node.get_by_id(first["node_id"])
    assert (node.name, node.slots) == ("alpha", 2)
    assert cmdr.box.decrypt(node.signing_key).decode() == first["signing_key"]
    assert AuditEntry.select().where(AuditEntry.action == "node.takeover_refused",
                                     AuditEntry.actor == "token 9").count() == 1


def test_a_node_that_registers_again_keeps_its_token_and_key_and_new_labels_wait(cmdr):
    first = nodes.register(cmdr, nodes.Machine(machine_id="m-1", name="alpha", capabilities=["a"], slots=2), "test")
    again = nodes.reregister(cmdr, first["node_id"], nodes.Machine(machine_id="m-1", name="alpha-2",
                                                                   capabilities=["a", "b"], slots=4), "node 1")
    assert (again["node_id"], again["capabilities"], again["requested_capabilities"]) == (
        first["node_id"], ["a"], ["a", "b"])  # a label a node adds waits for an operator
    [token] = Token.select().where(Token.node == first["node_id"])
    assert token.token_hash == token_hash(first["node_token"])
    node = Node.get_by_id(first["node_id"])
    assert (node.name, node.slots) == ("alpha-2", 4)
    assert cmdr.box.decrypt(node.signing_key).decode() == first["signing_key"]
    assert [kind for kind, _ in node_events(node)][-2:] == ["node.reregistered", "node.capabilities_requested"]
    with pytest.raises(Conflict) as mismatch:
        nodes.reregister(cmdr, first["node_id"], nodes.Machine(machine_id="m-2", name="x", slots=1), "node 1")
    assert mismatch.value.code == "machine_mismatch"


@pytest.mark.parametrize("before, after", [("paused", "paused"), ("disabled", "disabled"), ("draining", "active"),
                                           ("lost", "active"), ("offline", "active")])
def test_registering_again_keeps_only_an_operators_pause_or_disable(cmdr, before, after):
    node = join(cmdr)
    set_row(node, state=before)
    nodes.reregister(cmdr, node.id, nodes.Machine(machine_id=node.machine_id, name=node.name, slots=4), "node 1")
    assert Node.get_by_id(node.id).state == after


# --- heartbeats --------------------------------------------------------------------------------

def test_a_heartbeat_records_liveness_slots_and_capabilities(cmdr):
    node = join(cmdr, capabilities=["a"])
    set_row(node, last_seen=now() - 10)
    t = now()
    reply = beat(cmdr, node, open_slots=2)
    stored = Node.get_by_id(node.id)
    assert (reply["state"], stored.open_slots, stored.capabilities) == ("active", 2, ["a"])  # None: unchanged
    assert stored.last_seen >= t
    assert reply["orders"] == dict(drain=False, pause=False, cancel=[], rotate_key=None)
    beat(cmdr, node, capabilities=["z", "b", "b", "os=linux"])  # a fact counts at once; other new labels wait
    stored = Node.get_by_id(node.id)
    assert (stored.capabilities, stored.requested_capabilities) == (["os=linux"], ["b", "os=linux", "z"])


@pytest.mark.parametrize("before", ["lost", "offline"])
def test_a_heartbeat_brings_a_silent_node_back(cmdr, before):
    node = join(cmdr)
    set_row(node, state=before)
    assert beat(cmdr, node)["state"] == "active"
    assert node_events(node)[-1] == ("node.active", dict(previous=before))


def test_a_heartbeat_announces_a_runner_that_changes_and_only_then(cmdr):
    node = join(cmdr, runner="claude-cli")
    beat(cmdr, node, runner="claude-cli")
    beat(cmdr, node, runner="claude-cli", problem="claude is not logged in")
    beat(cmdr, node, runner="claude-cli", problem="claude is not logged in")
    assert [data for kind, data in node_events(node) if kind == "node.runner"] == [
        dict(runner="claude-cli", problem="claude is not logged in")]
    assert Node.get_by_id(node.id).problem == "claude is not logged in"


@pytest.mark.parametrize("before, after, orders", [
    ("active", "draining", dict(drain=True, pause=False)),
    ("paused", "paused", dict(drain=False, pause=True)),     # an operator's state outranks the node's own
    ("disabled", "disabled", dict(drain=False, pause=True)),
    ("offline", "offline", dict(drain=False, pause=False)),  # its last heartbeat came after it deregistered
])
def test_a_node_shutting_down_drains(cmdr, before, after, orders):
    node = join(cmdr)
    set_row(node, state=before)
    reply = beat(cmdr, node, draining=True)
    assert reply["state"] == Node.get_by_id(node.id).state == after
    assert {k: reply["orders"][k] for k in orders} == orders


def test_a_heartbeat_renews_the_leases_the_node_holds_and_orders_the_rest_stopped(cmdr):
    configure(cmdr, lease_ttl=20.0)
    node, other = join(cmdr, "mine", slots=1), join(cmdr, "other", slots=1)
    mine, cancelled, foreign = submit(cmdr, "mine"), submit(cmdr, "cancelled"), submit(cmdr, "foreign")
    tasks.cancel(cmdr, cancelled.id)
    held, gone = lease_of(cmdr, node, mine), lease_of(cmdr, other, foreign)
    Task.update(lease_until=now() + 1).where(Task.id.in_([mine.id, foreign.id])).execute()
    cancelled_ref = nodes.LeaseRef(cancelled.id, 1, "ef" * 16)  # a lease the node thinks it still has
    t = now()
    reply = beat(cmdr, node, open_slots=0, running=[ref(held), ref(gone), cancelled_ref])
    assert reply["orders"]["cancel"] == [ref(gone)._asdict(), cancelled_ref._asdict()]
    assert Task.get_by_id(mine.id).lease_until >= t + 20
    assert Task.get_by_id(foreign.id).lease_until < t + 2  # another node's lease is not this node's to renew


def test_a_paused_node_is_told_to_pause_and_keeps_its_running_work(cmdr):
    node, task = join(cmdr), submit(cmdr)
    held = lease_of(cmdr, node, task)
    nodes.set_state(cmdr, node.id, "paused", "user:ops")
    reply = beat(cmdr, node, running=[ref(held)])
    assert reply["orders"]["pause"] and reply["orders"]["cancel"] == []
    assert Task.get_by_id(task.id).state == "leased"
    assert leases.claim(cmdr, node.id, open_slots=4, planned=[submit(cmdr).id]) == []
    assert report(cmdr, node, held, output="finished anyway")[0].state == "succeeded"


def test_a_signed_heartbeat_spends_its_nonce_in_its_own_write_and_a_replay_changes_nothing(app, client, bearer,
                                                                                           monkeypatch):
    cmdr, node = app.extensions["m3shd"], SignedNode(client, bearer)
    writes = []
    run = cmdr.small_writes.run
    monkeypatch.setattr(cmdr.small_writes, "run", lambda work: writes.append(work) or run(work))

    def row() -> tuple:
        with cmdr.db.connection_context():
            found = Node.get_by_id(node.id)
            return found.last_seen, found.open_slots

    path, body, headers = node.signed("heartbeat", {"open_slots": 3})
    assert client.post(path, data=body, headers=headers).status_code == 200
    assert len(writes) == 1  # the nonce and the heartbeat took one write turn together
    beaten = row()
    assert beaten[1] == 3
    replay = client.post(path, data=body, headers=headers)
    assert replay.status_code == 401 and replay.get_json()["error"]["code"] == "replayed_request"
    assert row() == beaten
    # Any other signed route spends its nonce on its own, before its handler runs.
    path, body, headers = node.signed("claim", {"open_slots": 1, "wait": 0})
    assert [client.post(path, data=body, headers=headers).status_code for _ in range(2)] == [200, 401]


# --- key rotation ------------------------------------------------------------------------------

def test_a_new_key_is_offered_until_the_node_signs_with_it(cmdr):
    node, _ = join_signing(cmdr)
    registered_key = NodeKey.get(NodeKey.node == node.id)
    nodes.rotate_key(cmdr, node.id, "user:ops")
    superseded = Node.get_by_id(node.id).next_signing_key
    offered = beat(cmdr, node)["orders"]["rotate_key"]
    assert offered == cmdr.box.decrypt(superseded).decode() and beat(cmdr, node)["orders"]["rotate_key"] == offered
    nodes.rotate_key(cmdr, node.id, "user:ops")  # ordered again: the pending key is replaced
    pending = Node.get_by_id(node.id).next_signing_key
    assert pending != superseded
    assert [e.details for e in AuditEntry.select().where(AuditEntry.action == "node.rotate_key")] == [
        dict(replaced_pending=False), dict(replaced_pending=True)]

    assert nodes.finish_rotation(cmdr, node.id, superseded, "node 1") is False
    assert nodes.finish_rotation(cmdr, node.id, pending, "node 1") is True
    stored = Node.get_by_id(node.id)
    assert (stored.signing_key, stored.next_signing_key) == (pending, None)
    newest = NodeKey.select().where(NodeKey.node == node.id).order_by(NodeKey.id.desc()).first()
    assert (newest.hmac_key, newest.public_key) == (pending, registered_key.public_key)
    assert nodes.finish_rotation(cmdr, node.id, pending, "node 1") is True  # another request finished it first
    assert NodeKey.select().where(NodeKey.node == node.id).count() == 2
    assert beat(cmdr, node)["orders"]["rotate_key"] is None
    assert node_events(node)[-1][0] == "node.key_rotated"


@pytest.mark.parametrize("state", ["lost", "offline"])
def test_only_a_connected_node_takes_orders(cmdr, state):
    node = join(cmdr)
    set_row(node, state=state)
    for order in (lambda: nodes.rotate_key(cmdr, node.id, "user:ops"),
                  lambda: nodes.set_state(cmdr, node.id, "paused", "user:ops")):
        with pytest.raises(Conflict) as refused:
            order()
        assert refused.value.code == "not_live"
    stored = Node.get_by_id(node.id)
    assert (stored.state, stored.next_signing_key) == (state, None)
    with pytest.raises(NotFound):
        nodes.rotate_key(cmdr, 999, "user:ops")


# --- operator states ---------------------------------------------------------------------------

def test_disabling_a_node_queues_its_running_work_elsewhere_and_orders_it_stopped(cmdr):
    node, task = join(cmdr), submit(cmdr)
    held = lease_of(cmdr, node, task)
    nodes.set_state(cmdr, node.id, "disabled", "user:ops")
    requeued = Task.get_by_id(task.id)
    assert (requeued.state, requeued.lease_token, requeued.lease_until) == ("queued", None, None)
    assert Event.get((Event.task == task.id) & (Event.kind == "task.requeued")).data["reason"] == "node disabled"
    assert beat(cmdr, node, running=[ref(held)])["orders"]["cancel"] == [ref(held)._asdict()]
    [entry] = AuditEntry.select().where(AuditEntry.action == "node.state")
    assert (entry.actor, entry.details["previous"], entry.details["state"]) == ("user:ops", "active", "disabled")


def test_a_drain_deadline_gives_up_the_work_still_running_when_it_passes(cmdr):
    node, task = join(cmdr), submit(cmdr)
    lease_of(cmdr, node, task)
    t = now()
    drained = nodes.set_state(cmdr, node.id, "draining", "user:ops", deadline=60)
    assert drained.state == "draining" and t + 60 <= drained.drain_deadline <= now() + 60
    assert nodes.enforce_drain_deadlines(cmdr) == 0 and Task.get_by_id(task.id).state == "leased"
    set_row(node, drain_deadline=now() - 1)
    assert nodes.enforce_drain_deadlines(cmdr) == 1
    assert Task.get_by_id(task.id).state == "queued" and Node.get_by_id(node.id).drain_deadline is None
    assert node_events(node)[-1] == ("node.drain_deadline", dict(requeued=[task.id]))
    assert nodes.enforce_drain_deadlines(cmdr) == 0


def test_a_deadline_applies_only_to_draining(cmdr):
    node = join(cmdr)
    with pytest.raises(Invalid):
        nodes.set_state(cmdr, node.id, "paused", "user:ops", deadline=60)
    assert Node.get_by_id(node.id).state == "active"


def test_making_a_node_active_again_clears_its_drain_deadline(cmdr):
    node = join(cmdr)
    nodes.set_state(cmdr, node.id, "draining", "user:ops", deadline=60)
    active = nodes.set_state(cmdr, node.id, "active", "user:ops")
    assert (active.state, active.drain_deadline) == ("active", None)


# --- silence, exit, removal --------------------------------------------------------------------

def test_silent_nodes_are_lost_unless_an_operator_paused_or_disabled_them(cmdr):
    configure(cmdr, lost_after=20.0)
    states = ("active", "draining", "paused", "disabled")
    silent = {state: join(cmdr, state) for state in states}
    heard = join(cmdr, "heard")
    for state, node in silent.items():
        set_row(node, state=state, last_seen=now() - 30)
    assert nodes.mark_lost(cmdr) == 2
    assert [Node.get_by_id(silent[s].id).state for s in states] == ["lost", "lost", "paused", "disabled"]
    assert Node.get_by_id(heard.id).state == "active" and Node.get_by_id(silent["active"].id).open_slots == 0
    assert node_events(silent["draining"])[-1] == ("node.lost", dict(previous="draining"))
    assert nodes.mark_lost(cmdr) == 0


def test_a_clean_exit_goes_offline_and_gives_its_leases_up_at_once(cmdr):
    node, task = join(cmdr), submit(cmdr)
    lease_of(cmdr, node, task)
    nodes.deregister(cmdr, Node.get_by_id(node.id))
    stored = Node.get_by_id(node.id)
    assert (stored.state, stored.open_slots) == ("offline", 0)
    assert leases.expire(cmdr) == 1 and Task.get_by_id(task.id).state == "queued"


def test_a_paused_node_that_exits_stays_paused(cmdr):
    node = join(cmdr)
    nodes.set_state(cmdr, node.id, "paused", "user:ops")
    nodes.deregister(cmdr, Node.get_by_id(node.id))
    assert Node.get_by_id(node.id).state == "paused"


def test_removing_a_node_kills_its_tokens_requeues_its_work_and_keeps_its_keys_for_provenance(cmdr):
    node, signer = join_signing(cmdr, slots=1)
    done, running = submit(cmdr, "done"), submit(cmdr, "running")
    report(cmdr, node, lease_of(cmdr, node, done), signer=signer, output="ok")
    lease_of(cmdr, node, running)
    nodes.remove(cmdr, node.id, "user:ops")
    assert Node.get_or_none(Node.id == node.id) is None
    assert Token.select().where(Token.kind == "node").count() == 0
    requeued = Task.get_by_id(running.id)
    assert (requeued.state, requeued.node_id) == ("queued", None)
    assert expire_now(cmdr, requeued) == 0
    assert NodeKey.select().count() == 1 and provenance.bundle(cmdr, Task.get_by_id(done.id))["ok"]
    [entry] = AuditEntry.select().where(AuditEntry.action == "node.removed")
    assert entry.details == dict(requeued=[running.id])
    with pytest.raises(NotFound):
        nodes.remove(cmdr, node.id, "user:ops")


# --- what the API shows ------------------------------------------------------------------------

def test_a_nodes_standing_counts_its_leases_and_shows_its_recent_outcomes(cmdr):
    node, first, second = join(cmdr, slots=1), submit(cmdr), submit(cmdr)
    report(cmdr, node, lease_of(cmdr, node, first), output="ok", duration_ms=900)
    lease_of(cmdr, node, second)
    shown = nodes.standing([Node.get_by_id(node.id)], cmdr.settings)[node.id]
    assert shown["running"] == 1
    assert [(o["task_id"], o["kind"], o["duration_ms"]) for o in shown["reputation"]["window"]] == [
        (first.id, "succeeded", 900)]
    assert shown["breaker"]["state"] == "closed" and shown["reputation"]["count"] > 0


def test_an_open_breaker_past_its_cooldown_shows_as_half_open(cmdr):
    node = join(cmdr)
    set_row(node, breaker_state="open", breaker_failures=3, breaker_cooldown=60.0, breaker_until=now() - 1)
    view = nodes.breaker_view(Node.get_by_id(node.id), now())
    assert (view["state"], view["failures"], view["probe_task_id"]) == ("half_open", 3, None)
    assert nodes.breaker_view(Node.get_by_id(node.id), now() - 10)["state"] == "open"
