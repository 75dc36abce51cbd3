"""Tokenless joins in process (commander/pending.py): a machine asks, waits within the limits,
and registers once an operator approves; a rejected or expired request is gone."""

from __future__ import annotations

import pytest

from commander import nodes, pending
from commander.exceptions import Conflict, NotFound, TooManyRequests
from commander.models import AuditEntry, Event, Node, PendingNode, now
from commander.secrets import token_hash
from mesh import configure, join


def machine(name: str, **fields) -> nodes.Machine:
    return nodes.Machine(machine_id=f"machine-{name}", name=name, **fields)


def ask(cmdr, name: str, address: str | None = "192.0.2.10", **fields) -> dict:
    return pending.request(cmdr, machine(name, **fields), address)


def test_a_request_waits_holding_only_the_hash_of_its_poll_token(cmdr):
    asked = ask(cmdr, "pi", capabilities=["b", "a", "a"], slots=2, version="1.0")
    assert asked["state"] == "pending" and asked["poll_token"].startswith("m3p_")
    row = PendingNode.get_by_id(asked["id"])
    assert (row.machine_id, row.name, row.capabilities, row.slots, row.version, row.address) == (
        "machine-pi", "pi", ["a", "b"], 2, "1.0", "192.0.2.10")
    assert row.poll_hash == token_hash(asked["poll_token"]) and row.approved_at is None
    assert Event.get(Event.kind == "node.pending").data == dict(pending=row.id, name="pi", address="192.0.2.10")
    assert pending.poll(cmdr, asked["poll_token"]) == dict(state="pending")
    assert Node.select().count() == 0


def test_a_machine_asks_once_and_a_node_cannot_ask_at_all(cmdr):
    ask(cmdr, "pi")
    join(cmdr, "known")
    for name, code in (("pi", "already_pending"), ("known", "machine_known")):
        with pytest.raises(Conflict) as refused:
            ask(cmdr, name, address="192.0.2.99")
        assert refused.value.code == code
    assert PendingNode.select().count() == 1


def test_one_address_may_have_only_a_few_requests_waiting(cmdr):
    for i in range(pending.PER_ADDRESS):
        ask(cmdr, f"pi-{i}")
    with pytest.raises(TooManyRequests) as refused:
        ask(cmdr, "one-more")
    assert refused.value.code == "too_many_pending" and "this address" in refused.value.message
    ask(cmdr, "elsewhere", address="192.0.2.11")  # another address still may
    assert PendingNode.select().count() == pending.PER_ADDRESS + 1


def test_the_waiting_list_has_a_limit_for_all_addresses_together(cmdr):
    configure(cmdr, max_pending_nodes=2)
    ask(cmdr, "a", address="192.0.2.1"), ask(cmdr, "b", address="192.0.2.2")
    with pytest.raises(TooManyRequests) as refused:
        ask(cmdr, "c", address="192.0.2.3")
    assert "approve or reject some first" in refused.value.message
    pending.reject(cmdr, PendingNode.get(PendingNode.name == "a").id, "user:ops")
    ask(cmdr, "c", address="192.0.2.3")  # rejecting makes room


def test_a_request_nobody_answered_within_a_day_makes_room(cmdr):
    old = [ask(cmdr, f"old-{i}") for i in range(pending.PER_ADDRESS)]
    PendingNode.update(requested_at=now() - pending.EXPIRES_AFTER - 1).execute()
    ask(cmdr, "new")
    assert [row.name for row in pending.listing()] == ["new"]
    with pytest.raises(NotFound) as gone:
        pending.poll(cmdr, old[0]["poll_token"])
    assert gone.value.code == "not_pending"


def test_an_approved_machine_registers_at_its_next_poll_once(cmdr):
    asked = ask(cmdr, "pi", capabilities=["gpu"], slots=3)
    approved = pending.approve(cmdr, asked["id"], "user:ops")
    assert approved.approved_by == "user:ops" and approved.approved_at is not None
    [entry] = AuditEntry.select().where(AuditEntry.action == "node.approved")
    assert (entry.actor, entry.details) == ("user:ops", dict(machine_id="machine-pi", requested_from="192.0.2.10"))
    polled = pending.poll(cmdr, asked["poll_token"])
    assert polled["state"] == "approved"
    node = Node.get_by_id(polled["registration"]["node_id"])
    assert (node.machine_id, node.name, node.capabilities, node.slots) == ("machine-pi", "pi", ["gpu"], 3)
    assert polled["registration"]["node_token"].startswith("m3n_")
    with pytest.raises(NotFound):  # its secrets are handed over once
        pending.poll(cmdr, asked["poll_token"])
    assert pending.listing() == []


def test_a_rejected_request_is_gone(cmdr):
    asked = ask(cmdr, "stranger")
    pending.reject(cmdr, asked["id"], "user:ops")
    with pytest.raises(NotFound):
        pending.poll(cmdr, asked["poll_token"])
    assert Node.select().count() == 0 and PendingNode.select().count() == 0
    [entry] = AuditEntry.select().where(AuditEntry.action == "node.rejected")
    assert entry.target == f"pending node {asked['id']} stranger"
    ask(cmdr, "stranger")  # it may ask again


def test_an_unknown_request_or_poll_token_is_not_found(cmdr):
    for answer in (pending.approve, pending.reject):
        with pytest.raises(NotFound) as missing:
            answer(cmdr, 999, "user:ops")
        assert missing.value.code == "not_found"
    with pytest.raises(NotFound):
        pending.poll(cmdr, "m3p_not-a-token")
