"""task_finished and attempt_ended (commander/signals.py): sent exactly once per final transition
and per ended attempt, on every path, inside the transaction that made the change.

In process, on a real SQLite file: the services are called as the routes call them, with the
Commander wired as app.build_commander wires it.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from commander import leases, nodes, pipelines, tasks
from commander.app import FEATURES, build_commander
from commander.exceptions import Conflict
from commander.models import Event, Node, Outcome, Task, now
from mesh import apply, expire_now, join, lease_of, result, submit

FINAL_EVENTS = ("task.succeeded", "task.failed", "task.cancelled", "task.skipped", "task.rejected")


class Heard:
    """What the signals sent, as (task id, …) tuples, in order."""

    def __init__(self, cmdr):
        self.finished, self.ended = [], []
        cmdr.signals.task_finished.connect(
            lambda _, m: self.finished.append((m.task.id, m.task.state, m.cause, m.previous)))
        cmdr.signals.attempt_ended.connect(lambda _, m: self.ended.append((m.task.id, m.attempt, m.kind, m.node_id)))


@pytest.fixture
def heard(cmdr) -> Heard:
    return Heard(cmdr)


def final_events(task: Task) -> list[str]:
    return [kind for (kind,) in Event.select(Event.kind).where(
        (Event.task == task.id) & Event.kind.in_(FINAL_EVENTS)).order_by(Event.id).tuples()]


def test_each_commander_wires_its_own_receivers(cmdr, tmp_path):
    other = build_commander(replace(cmdr.settings, data_dir=str(tmp_path / "other"),
                                 database_url=f"sqlite:///{tmp_path / 'other.db'}"))
    assert other.signals is not cmdr.signals
    # Wired by each feature's init, in FEATURES order: the final state's event first; memories are
    # learned before a pipeline's next steps are queued.
    assert [r.__module__ for r in other.signals.task_finished.receivers] == [
        "commander.events", "commander.memory.remember", "commander.pipelines"]
    assert [r.__module__ for r in other.signals.attempt_ended.receivers] == ["commander.outcomes",
                                                                            "commander.spend.ledger"]
    assert [feature.__name__ for feature in FEATURES] == ["commander.events", "commander.outcomes", "commander.spend",
                                                          "commander.memory", "commander.pipelines", "commander.agents", "commander.webhooks",
                                                          "commander.plugins"]
    other.db.close_all()


def test_a_result_finishes_its_task_once_and_a_resent_or_stale_result_fires_nothing(cmdr, heard):
    node, task = join(cmdr), submit(cmdr)
    lease = lease_of(cmdr, node, task)
    sent = result(lease, output="done", duration_ms=1200, cost_usd=0.01,
                  usage=leases.Usage(input_tokens=10, output_tokens=5))
    finished, duplicate = apply(cmdr, node, sent)
    assert (finished.state, duplicate) == ("succeeded", False)
    assert heard.finished == [(task.id, "succeeded", "result", "leased")]
    assert heard.ended == [(task.id, 1, "succeeded", node.id)]

    # The same accepted result again: 200 with the stored outcome, and no second signal.
    again, duplicate = apply(cmdr, node, sent)
    assert (again.id, duplicate) == (task.id, True)
    # A stale one (another attempt, another token): 409, and nothing fires either.
    for stale in (result(dict(lease, attempt=2)), result(dict(lease, lease_token="cd" * 16))):
        with pytest.raises(Conflict) as refused:
            apply(cmdr, node, stale)
        assert refused.value.code == "stale_lease"
    assert len(heard.finished) == 1 and len(heard.ended) == 1
    assert final_events(task) == ["task.succeeded"]
    assert Outcome.select().where(Outcome.task == task.id).count() == 1


def test_each_attempt_ends_once_across_retries(cmdr, heard):
    node, task = join(cmdr), submit(cmdr, backoff=0.0)
    first = lease_of(cmdr, node, task)
    apply(cmdr, node, result(first, "failed", infra_failure=True, error="runner crashed"))  # back to the queue
    assert Task.get_by_id(task.id).state == "queued" and heard.finished == []

    second = lease_of(cmdr, node, task)
    assert expire_now(cmdr, task) == 1          # lost: back to the queue (retry_on_lost)
    assert expire_now(cmdr, task) == 0          # nothing left to expire, nothing sent
    third = lease_of(cmdr, node, task)
    apply(cmdr, node, result(third, output="at last"))
    # A late result from the first attempt is stale and ends nothing.
    with pytest.raises(Conflict):
        apply(cmdr, node, result(first))

    assert (first["attempt"], second["attempt"], third["attempt"]) == (1, 2, 3)
    assert heard.ended == [(task.id, 1, "infra", node.id), (task.id, 2, "lost", node.id),
                           (task.id, 3, "succeeded", node.id)]
    assert heard.finished == [(task.id, "succeeded", "result", "leased")]
    assert [kind for (kind,) in Outcome.select(Outcome.kind).where(Outcome.task == task.id).order_by(Outcome.id).tuples()
            ] == ["infra", "lost", "succeeded"]


def test_a_lease_that_expires_on_its_last_attempt_finishes_the_task(cmdr, heard):
    node, task = join(cmdr), submit(cmdr, max_attempts=1)
    lease = lease_of(cmdr, node, task)
    assert expire_now(cmdr, task) == 1
    assert expire_now(cmdr, task) == 0
    with pytest.raises(Conflict):              # the node comes back from the dead: too late
        apply(cmdr, node, result(lease))
    assert heard.ended == [(task.id, 1, "lost", node.id)]
    assert heard.finished == [(task.id, "failed", "lease_expired", "leased")]
    assert final_events(task) == ["task.failed"]


def test_cancelling_finishes_once_and_ends_a_running_attempt(cmdr, heard):
    node, waiting = join(cmdr), submit(cmdr, "waiting")
    tasks.cancel(cmdr, waiting.id)
    assert heard.finished == [(waiting.id, "cancelled", "cancel", "queued")] and heard.ended == []

    running = submit(cmdr, "running")
    lease = lease_of(cmdr, node, running)
    tasks.cancel(cmdr, running.id)
    assert heard.ended == [(running.id, 1, "taken_back", node.id)]
    assert heard.finished[-1] == (running.id, "cancelled", "cancel", "leased")

    with pytest.raises(Conflict) as refused:   # cancelled twice: 409, nothing fires
        tasks.cancel(cmdr, running.id)
    assert refused.value.code == "already_final"
    with pytest.raises(Conflict):              # the cancelled attempt's result is stale
        apply(cmdr, node, result(lease))
    assert expire_now(cmdr, running) == 0      # and its lease cannot expire into a second end
    assert len(heard.finished) == 2 and len(heard.ended) == 1
    assert final_events(waiting) == final_events(running) == ["task.cancelled"]
    # Taking a lease back says nothing about the node: no outcome is recorded.
    assert Outcome.select().count() == 0


def test_rejections_finish_once_whoever_makes_them(cmdr, heard):
    rejected, approved, forgotten = (submit(cmdr, name, approval_required=True) for name in ("a", "b", "c"))
    tasks.decide(cmdr, rejected.id, False, "user:ops", "not today")
    tasks.decide(cmdr, approved.id, True, "user:ops")
    with pytest.raises(Conflict):
        tasks.decide(cmdr, rejected.id, False, "user:ops")
    cmdr.settings = replace(cmdr.settings, approval_timeout=60.0)
    Task.update(updated_at=now() - 120).where(Task.id == forgotten.id).execute()
    assert tasks.expire_approvals(cmdr) == 1
    assert tasks.expire_approvals(cmdr) == 0
    assert heard.finished == [(rejected.id, "cancelled", "reject", "awaiting_approval"),
                              (forgotten.id, "cancelled", "reject", "awaiting_approval")]
    assert final_events(rejected) == final_events(forgotten) == ["task.rejected"]
    assert final_events(approved) == []
    assert Event.get((Event.task == rejected.id) & (Event.kind == "task.rejected")).data == {
        "by": "user:ops", "reason": "not today"}


def test_a_failed_step_skips_its_descendants_each_once(cmdr, heard):
    node = join(cmdr)
    steps = [pipelines.Step(key="a", prompt="first"),
             pipelines.Step(key="b", prompt="then {{ steps.a.output }}", depends_on=(pipelines.Edge("a"),)),
             pipelines.Step(key="c", prompt="last", depends_on=(pipelines.Edge("b"),))]
    pipeline = pipelines.submit(cmdr, steps, submitter="test")
    a, b, c = pipelines.steps_of(pipeline.id).values()
    apply(cmdr, node, result(lease_of(cmdr, node, a), "failed", error="no"))
    # (b's skip is sent while a's is being received, so a recorder connected last hears it first)
    assert sorted(heard.finished) == [(a.id, "failed", "result", "leased"), (b.id, "skipped", "pipeline", "blocked"),
                                      (c.id, "skipped", "pipeline", "blocked")]
    assert pipelines.get(pipeline.id).state == "failed"
    assert [final_events(step) for step in (a, b, c)] == [["task.failed"], ["task.skipped"], ["task.skipped"]]
    # and the pipeline walked each step's end once
    steps_announced = [event.task for event in Event.select(Event.task).where(Event.kind == "pipeline.step")]
    assert sorted(steps_announced) == [a.id, b.id, c.id]


def test_cancelling_a_step_moves_its_pipeline_on(cmdr, heard):
    pipeline = pipelines.submit(cmdr, [pipelines.Step(key="a", prompt="first"),
                                       pipelines.Step(key="b", prompt="then", depends_on=(pipelines.Edge("a"),))],
                                submitter="test")
    a, b = pipelines.steps_of(pipeline.id).values()
    tasks.cancel(cmdr, a.id)
    assert sorted(heard.finished) == [(a.id, "cancelled", "cancel", "queued"), (b.id, "skipped", "pipeline", "blocked")]
    assert pipelines.get(pipeline.id).state == "failed"


def test_cancelling_a_pipeline_finishes_each_open_step_once(cmdr, heard):
    node = join(cmdr)
    pipeline = pipelines.submit(cmdr, [pipelines.Step(key="a", prompt="first"),
                                       pipelines.Step(key="b", prompt="then", depends_on=(pipelines.Edge("a"),))],
                                submitter="test")
    a, b = pipelines.steps_of(pipeline.id).values()
    lease = lease_of(cmdr, node, a)
    pipelines.cancel(cmdr, pipeline.id)
    with pytest.raises(Conflict):
        pipelines.cancel(cmdr, pipeline.id)
    with pytest.raises(Conflict):
        apply(cmdr, node, result(lease))
    assert heard.ended == [(a.id, 1, "taken_back", node.id)]
    assert heard.finished == [(a.id, "cancelled", "pipeline", "leased"), (b.id, "cancelled", "pipeline", "blocked")]
    assert pipelines.get(pipeline.id).state == "cancelled"


@pytest.mark.parametrize("take_back", ["remove", "disable", "drain deadline"])
def test_taking_a_lease_back_ends_the_attempt_not_the_task(cmdr, heard, take_back):
    node, task = join(cmdr), submit(cmdr)
    lease = lease_of(cmdr, node, task)
    if take_back == "remove":
        nodes.remove(cmdr, node.id, "user:ops")
    elif take_back == "disable":
        nodes.set_state(cmdr, node.id, "disabled", "user:ops")
    else:
        nodes.set_state(cmdr, node.id, "draining", "user:ops", deadline=60)
        Node.update(drain_deadline=now() - 1).where(Node.id == node.id).execute()
        assert nodes.enforce_drain_deadlines(cmdr) == 1
    assert heard.ended == [(task.id, 1, "taken_back", node.id)] and heard.finished == []
    assert Task.get_by_id(task.id).state == "queued"
    assert expire_now(cmdr, task) == 0          # its lease is gone: it cannot also expire
    if take_back != "remove":
        with pytest.raises(Conflict):
            apply(cmdr, node, result(lease))
    assert len(heard.ended) == 1


def test_a_receiver_that_raises_rolls_the_transition_back(cmdr, heard):
    node, task = join(cmdr), submit(cmdr)
    lease = lease_of(cmdr, node, task)

    def broken(_cmdr, _message):
        raise RuntimeError("the ledger could not record the cost")

    cmdr.signals.task_finished.connect(broken)
    with pytest.raises(RuntimeError):
        apply(cmdr, node, result(lease, output="done"))
    stored = Task.get_by_id(task.id)
    assert (stored.state, stored.output, stored.attempt) == ("leased", None, 1)
    assert final_events(task) == [] and Outcome.select().count() == 0  # the receivers' writes went too

    cmdr.signals.task_finished.receivers.remove(broken)
    heard.finished.clear(), heard.ended.clear()
    assert apply(cmdr, node, result(lease, output="done"))[0].state == "succeeded"  # the lease still holds
    assert len(heard.finished) == 1 and len(heard.ended) == 1
