"""Leases in process (commander/leases.py): who may claim what, how results are fenced by
attempt, token and node, and what becomes of leases that run out."""

from __future__ import annotations

import threading
import time

import pytest

from commander import leases, nodes, provenance as commander_provenance
from commander.db import Compiled
from commander.exceptions import Conflict
from commander.models import Event, Node, Task, Token, now
from commander.settings import CommanderSettings
from commander.wake import Dispatcher, Notifier, run_dir_for
from harness import wait_until
from m3shd import provenance, wire
from mesh import configure, expire_now, join, join_signing, lease_of, report, result, submit


def leased_ids(claimed: list[dict]) -> list[int]:
    return [lease["task_id"] for lease in claimed]


def kinds(task: Task) -> list[str]:
    return [kind for (kind,) in Event.select(Event.kind).where(Event.task == task.id).order_by(Event.id).tuples()]


# --- claim -------------------------------------------------------------------------------------

def test_a_claim_leases_a_queued_task_with_a_fresh_token_and_term(cmdr):
    configure(cmdr, lease_ttl=30.0)
    node, task = join(cmdr, capabilities=["gpu"]), submit(cmdr, "hi", model="haiku", requires=["gpu"])
    before = now()
    [lease] = leases.claim(cmdr, node.id, open_slots=1)
    assert {k: lease[k] for k in ("task_id", "attempt", "prompt", "model", "requires")} == dict(
        task_id=task.id, attempt=1, prompt="hi", model="haiku", requires=["gpu"])
    assert len(lease["lease_token"]) == 32 and before + 30 <= lease["lease_until"] <= now() + 30
    stored = Task.get_by_id(task.id)
    assert (stored.state, stored.node_id, stored.attempt, stored.lease_token, stored.lease_until) == (
        "leased", node.id, 1, lease["lease_token"], lease["lease_until"])
    assert stored.started_at is not None
    assert Event.get((Event.task == task.id) & (Event.kind == "task.leased")).data == dict(attempt=1)
    assert leases.claim(cmdr, node.id, open_slots=1) == []  # it is no longer queued


def test_each_claim_of_a_task_is_a_new_attempt_with_a_new_token(cmdr):
    node, task = join(cmdr), submit(cmdr)
    first = lease_of(cmdr, node, task)
    expire_now(cmdr, task)
    second = lease_of(cmdr, node, task)
    assert (first["attempt"], second["attempt"]) == (1, 2) and first["lease_token"] != second["lease_token"]


def test_a_node_gets_only_the_tasks_whose_requirements_it_meets(cmdr):
    plain, gpu = join(cmdr, "plain"), join(cmdr, "gpu", capabilities=["gpu", "cuda"])
    render, _ = submit(cmdr, requires=["gpu"]), submit(cmdr, requires=["gpu", "arm"])
    assert leases.claim(cmdr, plain.id, open_slots=4) == []
    assert leased_ids(leases.claim(cmdr, gpu.id, open_slots=4)) == [render.id]  # the other needs arm too


def test_a_claim_takes_no_more_than_its_open_slots_nor_the_nodes_free_slots(cmdr):
    node, small = join(cmdr, "big", slots=4), join(cmdr, "small", slots=1)
    ids = [submit(cmdr, f"task {i}").id for i in range(6)]
    nodes.set_state(cmdr, small.id, "paused", "user:ops")
    assert leases.claim(cmdr, node.id, open_slots=0) == []
    assert leased_ids(leases.claim(cmdr, node.id, open_slots=2)) == ids[:2]
    assert leased_ids(leases.claim(cmdr, node.id, open_slots=1)) == ids[2:3]
    assert leased_ids(leases.claim(cmdr, node.id, open_slots=4)) == ids[3:4]  # 3 of its 4 slots are busy
    nodes.set_state(cmdr, small.id, "active", "user:ops")
    assert leased_ids(leases.claim(cmdr, small.id, open_slots=3)) == ids[4:5]  # a node of one slot takes one


@pytest.mark.parametrize("state", ["paused", "draining", "disabled"])
def test_a_node_an_operator_took_out_of_service_gets_nothing_even_if_planned(cmdr, state):
    node, task = join(cmdr), submit(cmdr)
    nodes.set_state(cmdr, node.id, state, "user:ops")
    assert leases.claim(cmdr, node.id, open_slots=4) == []
    assert leases.claim(cmdr, node.id, open_slots=4, planned=[task.id]) == []
    assert Task.get_by_id(task.id).state == "queued"


def test_a_lost_node_or_one_whose_runner_is_broken_gets_nothing(cmdr):
    lost, broken, task = join(cmdr, "lost"), join(cmdr, "broken", problem="claude is not logged in"), submit(cmdr)
    Node.update(state="lost").where(Node.id == lost.id).execute()
    for node in (lost, broken):
        assert leases.claim(cmdr, node.id, open_slots=4, planned=[task.id]) == []
    assert leases.claim(cmdr, 999, open_slots=4, planned=[task.id]) == []  # nor a node that is gone


def test_an_open_breaker_admits_nothing_then_one_probe_once_its_cooldown_is_over(cmdr):
    # The task ids are given as planned, so what is checked is the claim's own admission.
    node = join(cmdr)
    ids = [submit(cmdr, f"task {i}").id for i in range(3)]
    Node.update(breaker_state="open", breaker_failures=3, breaker_cooldown=60.0, breaker_until=now() + 60).where(
        Node.id == node.id).execute()
    assert leases.claim(cmdr, node.id, open_slots=4, planned=ids) == []
    Node.update(breaker_until=now() - 1).where(Node.id == node.id).execute()
    [probe] = leases.claim(cmdr, node.id, open_slots=4, planned=ids)
    stored = Node.get_by_id(node.id)
    assert (probe["task_id"], stored.breaker_state, stored.breaker_probe) == (ids[0], "half_open", ids[0])
    transition = Event.get((Event.node == node.id) & (Event.kind == "node.breaker"))
    assert {k: transition.data[k] for k in ("state", "previous", "reason")} == dict(
        state="half_open", previous="open", reason="cooldown over")
    assert leases.claim(cmdr, node.id, open_slots=4, planned=ids) == []  # one probe at a time
    report(cmdr, node, probe, output="fine")                              # it succeeds: closed again
    assert Node.get_by_id(node.id).breaker_state == "closed"
    assert leased_ids(leases.claim(cmdr, node.id, open_slots=4, planned=ids)) == ids[1:]


def test_planned_tasks_are_leased_in_the_plans_order_skipping_those_taken_meanwhile(cmdr):
    a, b = join(cmdr, "a"), join(cmdr, "b")
    first, second, third = (submit(cmdr, name).id for name in ("first", "second", "third"))
    assert leased_ids(leases.claim(cmdr, a.id, open_slots=4, planned=[third])) == [third]
    assert leased_ids(leases.claim(cmdr, b.id, open_slots=4, planned=[third, second, 999])) == [second]
    assert leased_ids(leases.claim(cmdr, b.id, open_slots=1, planned=[first])) == [first]
    assert leases.claim(cmdr, b.id, open_slots=4, planned=[]) == []
    assert [Task.get_by_id(i).node_id for i in (first, second, third)] == [b.id, b.id, a.id]


def test_without_a_dispatcher_a_long_poll_answers_with_what_a_claim_finds(cmdr):
    node = join(cmdr)
    token_id = Token.get(Token.node == node.id).id
    assert leases.claim_or_wait(cmdr, node.id, token_id, open_slots=1, wait=0.0) == []
    task = submit(cmdr)
    assert leased_ids(leases.claim_or_wait(cmdr, node.id, token_id, open_slots=1, wait=30.0)) == [task.id]


def test_an_empty_long_poll_ends_after_half_to_all_of_its_wait_spread_at_random():
    """So a fleet whose claims began together (a Commander restart) renews them spread out, not in
    one burst every `wait` seconds (wire.LONG_POLL_SPREAD)."""
    held = [leases.long_poll_for(40.0) for _ in range(400)]
    assert all(20.0 <= h <= 40.0 for h in held)
    assert min(held) < 21.0 and max(held) > 39.0 and len({round(h, 3) for h in held}) > 300
    assert leases.long_poll_for(0.0) == 0.0


def test_a_newer_claim_of_a_node_ends_its_older_long_poll_at_once(cmdr, tmp_path, monkeypatch):
    """A N0D3 that restarted mid-claim: its old long-poll still waits in the Commander when the new
    one comes. The older ends empty; they must not take the node's place from each other in turn."""
    node = join(cmdr)
    token_id = Token.get(Token.node == node.id).id
    cmdr.dispatcher = Dispatcher(Notifier(run_dir_for(str(tmp_path))), claim=None, choose=None, waiting_in_vain=None)
    asked = []
    monkeypatch.setattr(leases, "waiting_in_vain", lambda waiting, t: asked.append(t) or [])
    ended = {}

    def claim(name: str, wait: float) -> None:
        with cmdr.db.connection_context():
            assert leases.claim_or_wait(cmdr, node.id, token_id, open_slots=1, wait=wait) == []
        ended[name] = time.monotonic()

    older = threading.Thread(target=claim, args=("older", 30.0))
    older.start()
    wait_until(lambda: node.id in cmdr.dispatcher._waiters, timeout=10)
    newer = threading.Thread(target=claim, args=("newer", 1.0))
    newer.start()
    older.join(20)
    newer.join(20)
    assert ended["older"] < ended["newer"]  # the older let go as the newer came, not at its own 15-30 s
    assert len(asked) <= 1


def test_the_sweep_lets_go_of_exactly_the_waiting_nodes_that_can_take_no_work(cmdr):
    """The dispatcher's once-a-second sweep (leases.waiting_in_vain) over more waiting nodes than
    one of its queries asks about (db.Compiled.tuples_among)."""
    joined = [join(cmdr, f"n{i}") for i in range(Compiled.CHUNK + 30)]
    waiting = {node.id: Token.get(Token.node == node.id).id for node in joined}
    paused, revoked, lost = joined[3], joined[Compiled.CHUNK + 7], joined[-1]
    nodes.set_state(cmdr, paused.id, "paused", "user:ops")
    Token.update(revoked_at=now()).where(Token.id == waiting[revoked.id]).execute()
    Node.update(state="lost").where(Node.id == lost.id).execute()
    waiting[joined[0].id] = waiting[joined[1].id]  # a token of another node does not act for this one
    assert sorted(leases.waiting_in_vain(waiting, now())) == sorted([joined[0].id, paused.id, revoked.id, lost.id])
    assert leases.waiting_in_vain({}, now()) == []

# --- results -----------------------------------------------------------------------------------

def test_a_success_is_stored_with_its_usage_cost_and_chained_provenance(cmdr):
    node, signer = join_signing(cmdr)
    task = submit(cmdr, "what is six times seven")
    lease = lease_of(cmdr, node, task)
    fields = dict(output="42", runner="claude-cli", cost_usd=0.02, duration_ms=1500,
                  usage=dict(input_tokens=10, output_tokens=5, cache_read_tokens=3, cache_write_tokens=2))
    finished, duplicate = report(cmdr, node, lease, signer=signer, **fields)
    assert (finished.state, finished.output, finished.runner, finished.cost_usd, finished.duration_ms, duplicate) == (
        "succeeded", "42", "claude-cli", 0.02, 1500, False)
    assert (finished.input_tokens, finished.output_tokens, finished.cache_read_tokens, finished.cache_write_tokens) == (
        10, 5, 3, 2)
    assert finished.finished_at is not None and finished.error is None
    payload = dict(task_id=task.id, attempt=1, lease_token=lease["lease_token"], status="succeeded",
                   prompt_sha256=wire.sha256_hex(b"what is six times seven"), **wire.binding(lease), **fields)
    document = wire.result_document(payload)
    assert finished.result_document == document.decode()
    assert finished.chain_hash == provenance.chain_hash(document, [])
    assert finished.signed_with_id == commander_provenance.keys_in_use(Node.get_by_id(node.id)).id
    assert commander_provenance.bundle(cmdr, finished)["ok"]
    assert kinds(task)[-1] == "task.succeeded"


def test_a_failure_on_the_tasks_own_merits_is_final_with_attempts_left(cmdr):
    node, task = join(cmdr), submit(cmdr, max_attempts=3)
    finished, _ = report(cmdr, node, lease_of(cmdr, node, task), "failed", error="the prompt makes no sense")
    assert (finished.state, finished.error, finished.attempt) == ("failed", "the prompt makes no sense", 1)
    assert "task.retrying" not in kinds(task) and kinds(task)[-1] == "task.failed"


def test_a_broken_runner_sends_the_task_back_after_a_doubling_backoff_to_another_node(cmdr):
    configure(cmdr, retry_backoff_max=300.0, best_node_wait=60.0)
    a, b = join(cmdr, "a"), join(cmdr, "b")
    task = submit(cmdr, backoff=10.0, max_attempts=3)
    first = lease_of(cmdr, a, task)
    t = now()
    retried, duplicate = report(cmdr, a, first, "failed", infra_failure=True, error="runner crashed")
    assert (retried.state, retried.attempt, retried.lease_token, retried.lease_until, duplicate) == (
        "queued", 1, None, None, False)
    assert retried.tried_nodes == [a.id] and retried.error == "runner crashed"
    assert t + 10 <= retried.not_before <= now() + 10
    assert kinds(task)[-1] == "task.retrying"
    assert leases.claim(cmdr, a.id, open_slots=4) == leases.claim(cmdr, b.id, open_slots=4) == []  # backing off

    Task.update(not_before=now() - 1).where(Task.id == task.id).execute()
    assert leases.claim(cmdr, a.id, open_slots=4) == []  # b is free and has not broken on it
    second = lease_of(cmdr, b, task)
    assert second["attempt"] == 2 and Task.get_by_id(task.id).not_before is None
    t = now()
    retried, _ = report(cmdr, b, second, "failed", infra_failure=True, error="runner crashed again")
    assert retried.tried_nodes == sorted([a.id, b.id]) and t + 20 <= retried.not_before <= now() + 20

    Task.update(not_before=now() - 1).where(Task.id == task.id).execute()
    configure(cmdr, best_node_wait=0.0)
    third = lease_of(cmdr, a, task)  # every able node broke on it and it waited long enough: any may take it
    finished, _ = report(cmdr, a, third, "failed", infra_failure=True, error="still broken")
    assert (finished.state, finished.attempt, finished.error) == ("failed", 3, "still broken")  # the last attempt


@pytest.mark.parametrize("attempt, own, wait", [(1, 10.0, 10.0), (2, 10.0, 20.0), (3, 10.0, 40.0), (9, 10.0, 300.0),
                                                (1, 0.0, None), (2, 0.0, None)])
def test_a_retry_waits_its_own_backoff_doubled_per_attempt_up_to_the_cap(attempt, own, wait):
    settings = CommanderSettings(retry_backoff=5.0, retry_backoff_max=300.0)
    task = Task(attempt=attempt, backoff=own, tried_nodes=[7])
    assert leases.retry_fields(task, 3, 1000.0, settings) == dict(
        state="queued", updated_at=1000.0, not_before=1000.0 + wait if wait else None, tried_nodes=[3, 7],
        lease_token=None, lease_until=None)


def test_the_same_result_sent_again_is_a_duplicate_and_changes_nothing(cmdr):
    node, task = join(cmdr), submit(cmdr)
    lease = lease_of(cmdr, node, task)
    finished, duplicate = report(cmdr, node, lease, output="done")
    events_before = Event.select().count()
    again, duplicate_again = report(cmdr, node, lease, output="done")
    assert (duplicate, duplicate_again, again.id, again.updated_at) == (False, True, task.id, finished.updated_at)
    assert Event.select().count() == events_before
    with pytest.raises(Conflict):  # the same attempt with another result is no duplicate
        report(cmdr, node, lease, output="something else")
    assert Task.get_by_id(task.id).output == "done"


@pytest.mark.parametrize("stale", ["attempt", "token", "node"])
def test_a_result_that_does_not_hold_the_lease_is_refused(cmdr, stale):
    node, other, task = join(cmdr, "a"), join(cmdr, "b"), submit(cmdr)
    lease = lease_of(cmdr, node, task)
    sender = other if stale == "node" else node
    changed = dict(attempt=dict(attempt=2), token=dict(lease_token="cd" * 16), node={})[stale]
    with pytest.raises(Conflict) as refused:
        leases.apply_result(cmdr, sender, result(dict(lease, **changed), output="mine"), b"{}", None)
    assert refused.value.code == "stale_lease"
    assert f"of task {task.id} no longer holds its lease (the task is leased, attempt 1)" in refused.value.message
    stored = Task.get_by_id(task.id)
    assert (stored.state, stored.output, stored.node_id) == ("leased", None, node.id)


def test_a_node_back_from_the_dead_cannot_overwrite_the_retrys_result(cmdr):
    a, b, task = join(cmdr, "a"), join(cmdr, "b"), submit(cmdr)
    old = lease_of(cmdr, a, task)
    assert expire_now(cmdr, task) == 1
    new = lease_of(cmdr, b, task)
    with pytest.raises(Conflict):
        report(cmdr, a, old, output="stale")
    stored = Task.get_by_id(task.id)
    assert (stored.state, stored.node_id, stored.attempt, stored.output) == ("leased", b.id, 2, None)
    report(cmdr, b, new, output="fresh")
    with pytest.raises(Conflict):
        report(cmdr, a, old, output="stale")
    assert (Task.get_by_id(task.id).state, Task.get_by_id(task.id).output) == ("succeeded", "fresh")


# --- expiry ------------------------------------------------------------------------------------

def test_an_expired_lease_goes_back_to_the_queue_to_avoid_its_node(cmdr):
    node, task = join(cmdr), submit(cmdr, backoff=4.0)
    lease_of(cmdr, node, task)
    assert leases.expire(cmdr) == 0 and Task.get_by_id(task.id).state == "leased"  # not yet
    t = now()
    assert expire_now(cmdr, task) == 1
    requeued = Task.get_by_id(task.id)
    assert (requeued.state, requeued.attempt, requeued.lease_token, requeued.tried_nodes) == (
        "queued", 1, None, [node.id])
    assert t + 4 <= requeued.not_before <= now() + 4
    event = Event.select().where(Event.task == task.id).order_by(Event.id.desc()).get()
    assert (event.kind, event.data) == ("task.requeued", dict(attempt=1, reason="lease expired"))


@pytest.mark.parametrize("policy, error", [
    (dict(max_attempts=1), "lease expired on attempt 1 of 1; giving up"),
    (dict(max_attempts=3, retry_on_lost=False), "lease expired and retry_on_lost is off; giving up"),
])
def test_an_expired_lease_fails_the_task_when_it_may_not_retry(cmdr, policy, error):
    node, task = join(cmdr), submit(cmdr, **policy)
    lease_of(cmdr, node, task)
    assert expire_now(cmdr, task) == 1
    failed = Task.get_by_id(task.id)
    assert (failed.state, failed.error, failed.lease_token, failed.lease_until) == ("failed", error, None, None)
    assert failed.finished_at is not None


def test_expiry_takes_only_the_leases_past_their_time(cmdr):
    node, late, timely = join(cmdr), submit(cmdr, "late"), submit(cmdr, "timely")
    assert leased_ids(leases.claim(cmdr, node.id, open_slots=4)) == [late.id, timely.id]
    assert expire_now(cmdr, late) == 1
    assert (Task.get_by_id(late.id).state, Task.get_by_id(timely.id).state) == ("queued", "leased")


def test_after_a_restart_live_leases_and_nodes_get_a_fresh_term(cmdr):
    configure(cmdr, lease_ttl=20.0, lost_after=20.0)
    node, gone, task = join(cmdr, "live"), join(cmdr, "gone"), submit(cmdr)
    lease_of(cmdr, node, task)
    long_ago = now() - 1000
    # The Commander was down: nobody could heartbeat, so leases and heartbeats look overdue.
    Task.update(lease_until=now() - 5).where(Task.id == task.id).execute()
    Node.update(last_seen=now() - 100).where(Node.id == node.id).execute()
    Node.update(state="lost", last_seen=long_ago).where(Node.id == gone.id).execute()
    t = now()
    leases.grace_after_restart(cmdr)
    assert leases.expire(cmdr) == 0 and nodes.mark_lost(cmdr) == 0
    assert Task.get_by_id(task.id).lease_until >= t + 20 and Node.get_by_id(node.id).last_seen >= t
    assert (Node.get_by_id(gone.id).state, Node.get_by_id(gone.id).last_seen) == ("lost", long_ago)
