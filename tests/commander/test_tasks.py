"""Tasks in process (commander/tasks.py): submit and its idempotency, approval, cancel, listing,
counts, and why a queued task is still waiting."""

from __future__ import annotations

import pytest

from commander import leases, nodes, tasks, tokens
from commander.exceptions import Conflict, NotFound
from commander.models import AuditEntry, Event, Task, now
from mesh import configure, join, lease_of, report, submit


def events_of(task: Task) -> list[tuple[str, dict]]:
    return [(event.kind, event.data) for event in Event.select().where(Event.task == task.id).order_by(Event.id)]


def audited(action: str) -> list[tuple[str, str, dict]]:
    return [(entry.actor, entry.target, entry.details)
            for entry in AuditEntry.select().where(AuditEntry.action == action).order_by(AuditEntry.id)]


# --- submit ------------------------------------------------------------------------------------

def test_a_task_takes_its_spec_and_the_commanders_defaults(cmdr):
    configure(cmdr, max_attempts=5, retry_backoff=2.5)
    task = submit(cmdr, "summarise", requires=["b", "a", "a"], prefer=["gpu"], priority=3, model="haiku",
                  submitter="user:ops")
    stored = Task.get_by_id(task.id)
    assert (stored.state, stored.prompt, stored.requires, stored.prefer, stored.priority, stored.model,
            stored.submitter) == ("queued", "summarise", ["a", "b"], ["gpu"], 3, "haiku", "user:ops")
    assert (stored.max_attempts, stored.backoff, stored.retry_on_lost, stored.attempt) == (5, 2.5, True, 0)
    assert events_of(task) == [("task.queued", dict(priority=3, requires=["a", "b"], submitter="user:ops", agent="general"))]


def test_a_tasks_own_policy_overrides_the_defaults_even_when_it_is_zero(cmdr):
    configure(cmdr, max_attempts=5, retry_backoff=2.5)
    task = Task.get_by_id(submit(cmdr, max_attempts=1, backoff=0.0, retry_on_lost=False).id)
    assert (task.max_attempts, task.backoff, task.retry_on_lost) == (1, 0.0, False)


def test_a_task_that_needs_approval_waits_for_it(cmdr):
    task = submit(cmdr, approval_required=True)
    assert (task.state, task.approval_required) == ("awaiting_approval", True)
    assert [kind for kind, _ in events_of(task)] == ["task.awaiting_approval"]
    assert leases.claim(cmdr, join(cmdr).id, open_slots=4) == []  # nobody may run it yet


def test_an_idempotency_key_returns_the_first_task_to_the_same_token_only(cmdr):
    with cmdr.writing():
        mine, _ = tokens.create("mine", actor="test", role="commander")
        theirs, _ = tokens.create("theirs", actor="test", role="commander")

    def send(prompt: str, token, key: str | None) -> tuple[Task, bool]:
        return tasks.submit(cmdr, tasks.TaskSpec(prompt=prompt), submitter=token.name, token_id=token.id,
                            idempotency_key=key)

    first, created = send("once", mine, "k-1")
    again, created_again = send("a different prompt", mine, "k-1")
    assert created and not created_again
    assert (again.id, again.prompt) == (first.id, "once")
    other, created_other = send("once", theirs, "k-1")       # the key is per token
    assert created_other and other.id != first.id
    plain = [send("no key", mine, None) for _ in range(2)]   # no key: every submit is new
    assert all(created for _, created in plain) and plain[0][0].id != plain[1][0].id
    assert Task.select().count() == 4
    assert Event.select().where(Event.kind == "task.queued").count() == 4  # the repeat published nothing


# --- approval ----------------------------------------------------------------------------------

def test_approving_queues_the_task_records_who_and_lets_it_run(cmdr):
    task = submit(cmdr, approval_required=True)
    decided = tasks.decide(cmdr, task.id, True, "user:ops")
    assert (decided.state, decided.decided_by, decided.error, decided.finished_at) == ("queued", "user:ops", None, None)
    assert ("task.approved", dict(by="user:ops", reason=None)) in events_of(task)
    assert audited("task.approved") == [("user:ops", f"task {task.id}", dict(reason=None))]
    assert lease_of(cmdr, join(cmdr), decided)["attempt"] == 1


@pytest.mark.parametrize("reason, error", [("too costly", "rejected by user:ops: too costly"),
                                           (None, "rejected by user:ops")])
def test_rejecting_cancels_the_task_with_who_and_why(cmdr, reason, error):
    task = submit(cmdr, approval_required=True)
    decided = tasks.decide(cmdr, task.id, False, "user:ops", reason)
    assert (decided.state, decided.decided_by, decided.error) == ("cancelled", "user:ops", error)
    assert decided.finished_at is not None
    assert audited("task.rejected") == [("user:ops", f"task {task.id}", dict(reason=reason))]


def test_only_a_task_awaiting_approval_can_be_decided(cmdr):
    queued = submit(cmdr)
    with pytest.raises(Conflict) as refused:
        tasks.decide(cmdr, queued.id, True, "user:ops")
    assert refused.value.code == "not_awaiting_approval" and "is queued" in refused.value.message
    waiting = submit(cmdr, approval_required=True)
    tasks.decide(cmdr, waiting.id, False, "user:ops")
    with pytest.raises(Conflict):  # decided once: a second answer (an approval) changes nothing
        tasks.decide(cmdr, waiting.id, True, "user:ops")
    assert tasks.get(waiting.id).state == "cancelled" and tasks.get(queued.id).state == "queued"
    assert audited("task.approved") == []
    with pytest.raises(NotFound):
        tasks.decide(cmdr, 999, True, "user:ops")


def test_unanswered_approvals_are_rejected_only_once_a_timeout_is_set(cmdr):
    old, fresh = submit(cmdr, "old", approval_required=True), submit(cmdr, "fresh", approval_required=True)
    Task.update(updated_at=now() - 3600).where(Task.id == old.id).execute()
    assert tasks.expire_approvals(cmdr) == 0  # approval_timeout 0: never
    assert tasks.get(old.id).state == "awaiting_approval"
    configure(cmdr, approval_timeout=600.0)
    assert tasks.expire_approvals(cmdr) == 1
    expired = tasks.get(old.id)
    assert (expired.state, expired.decided_by, expired.error) == (
        "cancelled", "commander", "rejected by commander: no answer within 600 s")
    assert tasks.get(fresh.id).state == "awaiting_approval"


# --- cancel ------------------------------------------------------------------------------------

def test_cancelling_a_queued_task_keeps_it_from_every_node(cmdr):
    task = submit(cmdr)
    cancelled = tasks.cancel(cmdr, task.id)
    assert (cancelled.state, cancelled.error) == ("cancelled", "cancelled") and cancelled.finished_at is not None
    assert leases.claim(cmdr, join(cmdr).id, open_slots=4) == []


def test_cancelling_a_running_task_orders_its_node_to_stop_it(cmdr):
    node, task = join(cmdr), submit(cmdr)
    lease = lease_of(cmdr, node, task)
    tasks.cancel(cmdr, task.id)
    running = nodes.LeaseRef(task.id, lease["attempt"], lease["lease_token"])
    orders = nodes.heartbeat(cmdr, node, f"node {node.id}", open_slots=3, running=[running])["orders"]
    assert orders["cancel"] == [running._asdict()]


def test_a_final_task_cannot_be_cancelled(cmdr):
    node, task = join(cmdr), submit(cmdr)
    report(cmdr, node, lease_of(cmdr, node, task), output="done")
    with pytest.raises(Conflict) as refused:
        tasks.cancel(cmdr, task.id)
    assert refused.value.code == "already_final"
    assert (tasks.get(task.id).state, tasks.get(task.id).output) == ("succeeded", "done")
    with pytest.raises(NotFound) as missing:
        tasks.cancel(cmdr, 999)
    assert missing.value.code == "not_found"


# --- reading -----------------------------------------------------------------------------------

def test_listing_is_newest_first_filtered_by_state_and_node_and_paged(cmdr):
    node, idle = join(cmdr, "busy", slots=1), join(cmdr, "idle", slots=1)
    ids = [submit(cmdr, f"task {i}").id for i in range(5)]
    leased = lease_of(cmdr, node, Task.get_by_id(ids[0]))["task_id"]

    def listed(**filters) -> list[int]:
        return [task.id for task in tasks.listing(**filters)]

    assert listed() == ids[::-1]
    assert listed(state="leased") == [leased] and listed(state="queued") == [i for i in ids[::-1] if i != leased]
    assert listed(node_id=node.id) == [leased] and listed(node_id=idle.id) == []
    assert listed(state="succeeded") == []
    pages, before = [], None
    for _ in range(4):  # a fixed count: a page that repeats itself must fail, not loop
        pages.append(listed(limit=2, before_id=before))
        before = pages[-1][-1] if pages[-1] else before
    assert pages == [ids[4:2:-1], ids[2:0:-1], ids[:1], []]
    assert listed(state="queued", before_id=ids[3]) == [i for i in ids[2::-1] if i != leased]


def test_counts_say_how_many_tasks_are_in_each_state(cmdr):
    assert tasks.counts() == {}
    queued, _, _ = submit(cmdr), submit(cmdr), submit(cmdr, approval_required=True)
    tasks.cancel(cmdr, queued.id)
    assert tasks.counts() == {"queued": 1, "awaiting_approval": 1, "cancelled": 1}


def test_an_unknown_task_is_not_found(cmdr):
    with pytest.raises(NotFound) as missing:
        tasks.get(42)
    assert (missing.value.code, missing.value.message) == ("not_found", "task 42 does not exist")


def test_waiting_for_a_task_returns_it_final_or_as_it_stands_when_time_is_up(cmdr):
    done, open_ = submit(cmdr), submit(cmdr)
    tasks.cancel(cmdr, done.id)
    assert tasks.wait_final(cmdr, done.id, 30).state == "cancelled"
    assert tasks.wait_final(cmdr, open_.id, 0).state == "queued"


# --- why a queued task waits ---------------------------------------------------------------------

def setup_fleet(cmdr, fleet: str) -> None:
    if fleet in ("lacking", "paused"):
        join(cmdr, "cpu-box", capabilities=["cpu"])
    if fleet == "paused":
        nodes.set_state(cmdr, join(cmdr, "gpu-box", capabilities=["gpu", "arm"]).id, "paused", "user:ops")
    if fleet == "broken":
        join(cmdr, "a", capabilities=["gpu", "arm"], problem="claude is not logged in")
        join(cmdr, "b", capabilities=["gpu", "arm", "x"], problem="no API key")
        join(cmdr, "c", capabilities=["cpu"])  # fine, but it cannot run the task: not named
    if fleet == "able":
        join(cmdr, "a", capabilities=["gpu", "arm"], problem="claude is not logged in")
        join(cmdr, "b", capabilities=["gpu", "arm"])


@pytest.mark.parametrize("fleet, reason", [
    ("none", "no N0D3 is connected; start one with `m3shd n0d3 run` or `m3shd up`"),
    ("lacking", "no connected N0D3 has all of: arm, gpu"),
    ("paused", "no connected N0D3 has all of: arm, gpu"),  # a paused node is not taking work
    ("broken", "N0D3 a: claude is not logged in; N0D3 b: no API key"),
    ("able", "waiting for a free slot"),
])
def test_a_queued_task_says_why_it_waits(cmdr, fleet, reason):
    setup_fleet(cmdr, fleet)
    task = submit(cmdr, requires=["gpu", "arm"])
    waiting = tasks.WaitingReasons(cmdr)
    assert waiting(task) == reason
    assert waiting(submit(cmdr, approval_required=True)) is None  # only a queued task waits for a node
