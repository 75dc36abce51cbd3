"""The spend ledger, caps and holds (commander/spend, commander/holds.py), in process on a real
SQLite file, driven as a N0D3 drives the services (tests/commander/mesh.py)."""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from commander import holds, leases, tasks
from commander.exceptions import Conflict, TooManyRequests
from commander.models import Event, Hold, SpendDay, SpendEntry, SpendTask, Task
from commander.spend import caps, days, fold
from m3shd import prices
from m3shd.config import ConfigError
from mesh import apply, configure, expire_now, join, join_signing, lease_of, report, result, submit

BERLIN = ZoneInfo("Europe/Berlin")


def spend(cmdr, node, task, cost=None, status="succeeded", **fields):
    """Run `task` on `node` to a result that cost `cost` (None: the runner sent no cost)."""
    fields.setdefault("usage", leases.Usage(input_tokens=1000, output_tokens=200))
    return apply(cmdr, node, result(lease_of(cmdr, node, task), status, cost_usd=cost, **fields))


def rows():
    return list(SpendEntry.select().order_by(SpendEntry.id))


def test_one_row_per_attempt_with_who_and_what_and_a_resent_result_counts_once(cmdr):
    node, task = join(cmdr, "pi1", capabilities=["os=linux"]), submit(cmdr, submitter="alice", requires=["os=linux"])
    sent = result(lease_of(cmdr, node, task), cost_usd=0.25, model="claude-sonnet-5-5",
                  usage=leases.Usage(input_tokens=100, output_tokens=50, cache_read_tokens=7, cache_write_tokens=3))
    apply(cmdr, node, sent)
    apply(cmdr, node, sent)  # the same result again: a duplicate, no second row
    [entry] = rows()
    assert (entry.task, entry.attempt, entry.kind, entry.agent, entry.node_name, entry.submitter) == (
        task.id, 1, "succeeded", "general", "pi1", "alice")
    assert entry.agent_version == task.agent_version and entry.capabilities == "os=linux"
    assert (entry.input_tokens, entry.output_tokens, entry.cache_read_tokens, entry.cache_write_tokens) == (100, 50, 7, 3)
    assert (entry.cost_usd, entry.cost_source, entry.priced_as, entry.model) == (0.25, "runner", None, "claude-sonnet-5-5")
    assert entry.day == days.day_of(entry.ts, ZoneInfo("UTC"))
    fold.up_to_date(cmdr)
    assert SpendDay.get().cost_usd == 0.25 and SpendDay.get().attempts == 1


def test_rows_are_folded_into_the_roll_ups_in_batches_and_before_every_read(cmdr, client, bearer, monkeypatch):
    from commander.models import SpendFold

    monkeypatch.setattr(fold, "EVERY", 3)
    configure(cmdr, best_node_wait=0.0)
    node = join(cmdr, slots=1)
    for _ in range(2):
        spend(cmdr, node, submit(cmdr), 0.5)
    assert SpendDay.select().count() == 0 and SpendFold.select().count() == 0  # two rows, not yet a batch
    assert caps.spent(rows()[0].day, caps.ALL, "") == 1.0  # a cap check counts them already
    spend(cmdr, node, submit(cmdr), 0.5)  # the third: this result folds all three
    assert SpendFold.get().entry == rows()[-1].id and SpendDay.get().attempts == 3
    spend(cmdr, node, submit(cmdr), 0.25)
    report = client.get("/api/spend", headers=bearer(permissions=["spend:read"])).get_json()  # a reader folds first
    assert report["total"]["cost_usd"] == 1.75 and SpendDay.get().cost_usd == 1.75
    with cmdr.writing():
        fold.fold(cmdr)  # nothing new: nothing added twice
    assert (SpendDay.get().attempts, SpendTask.select().count()) == (4, 4)

def test_retries_and_failures_cost_too_and_an_attempt_without_a_result_costs_nothing(cmdr):
    node, task = join(cmdr), submit(cmdr, backoff=0.0, max_attempts=4)
    spend(cmdr, node, task, 0.10, "failed", infra_failure=True, error="runner broke")
    lease_of(cmdr, node, task)
    expire_now(cmdr, task)  # attempt 2 lost: no usage was ever reported
    spend(cmdr, node, task, 0.30, "failed", error="the task failed")
    assert [(e.attempt, e.kind, e.cost_usd) for e in rows()] == [(1, "infra", 0.10), (3, "failed", 0.30)]
    assert tasks.get(task.id).cost_usd == pytest.approx(0.40)  # the task's cost is all its attempts'
    fold.up_to_date(cmdr)
    assert SpendDay.get().cost_usd == pytest.approx(0.40)
    assert (SpendTask.get().attempts, SpendTask.get().cost_usd) == (2, pytest.approx(0.40))
    with pytest.raises(Conflict):  # a stale result after the task ended: refused, nothing counted
        apply(cmdr, node, result(dict(task_id=task.id, attempt=2, lease_token="ab" * 16, agent="general",
                                      agent_version=task.agent_version, prompt="hello", system_prompt=""),
                                 cost_usd=9.0))
    assert len(rows()) == 2


def test_a_cancelled_task_and_an_attempt_that_spent_nothing_write_no_row(cmdr):
    node, first, second = join(cmdr, slots=1), submit(cmdr), submit(cmdr)
    spend(cmdr, node, first, None, usage=leases.Usage())
    lease_of(cmdr, node, second)
    tasks.cancel(cmdr, second.id)
    assert rows() == []


def test_without_a_runner_cost_the_price_table_prices_it_and_an_unknown_model_its_family_with_a_warning(cmdr, caplog):
    node = join(cmdr)
    spend(cmdr, node, submit(cmdr), None, model="claude-sonnet-5-5-20261001",
          usage=leases.Usage(input_tokens=1_000_000, output_tokens=1_000_000, cache_read_tokens=1_000_000,
                             cache_write_tokens=1_000_000))
    with caplog.at_level(logging.WARNING, logger="m3shd.commander.spend"):
        spend(cmdr, node, submit(cmdr), None, model="claude-opus-9-1", usage=leases.Usage(output_tokens=1_000_000))
        spend(cmdr, node, submit(cmdr), None, model="gpt-5", usage=leases.Usage(input_tokens=1_000_000))
    listed, family, unknown = rows()
    assert (listed.cost_source, listed.priced_as) == ("prices", "claude-sonnet-5-5")
    assert listed.cost_usd == pytest.approx(2.0 + 10.0 + 0.10 + 2.50)
    assert (family.priced_as, family.cost_usd) == ("claude-opus-5", pytest.approx(25.0))
    assert unknown.priced_as == prices.UNKNOWN and unknown.cost_usd == pytest.approx(10.0)  # never zero
    warned = [r.getMessage() for r in caplog.records]
    assert any("'claude-opus-9-1'" in m and "claude-opus-5" in m for m in warned)
    assert any("'gpt-5'" in m for m in warned)


def test_configured_prices_override_the_shipped_ones(cmdr):
    configure(cmdr, spend_prices=("claude-haiku-4-5=2,4,0,0",))
    spend(cmdr, join(cmdr), submit(cmdr), None, model="claude-haiku-4-5",
          usage=leases.Usage(input_tokens=500_000, output_tokens=250_000))
    assert rows()[0].cost_usd == pytest.approx(1.0 + 1.0)


@pytest.mark.parametrize("key, value, says", [
    ("time_zone", "Mars/Olympus", "IANA"), ("spend_at_cap", "kill", "hold or refuse"),
    ("spend_caps", ("agent=3",), "SCOPE:NAME=USD"), ("spend_caps", ("agent:x=-1",), "above 0"),
    ("spend_prices", ("claude-x=1,2,3",), "INPUT,OUTPUT"),
])
def test_a_bad_spend_setting_stops_the_start(make_app, key, value, says):
    with pytest.raises(ConfigError, match=says):
        make_app(**{key: value})


def test_an_agents_cap_holds_its_queued_and_new_work_with_the_reason_and_a_higher_cap_releases_it(cmdr):
    configure(cmdr, spend_caps=("agent:general=0.50",), time_zone="Europe/Berlin")
    node = join(cmdr, slots=1)
    spend(cmdr, node, submit(cmdr), 0.60)
    waiting = submit(cmdr)
    assert leases.claim(cmdr, node.id, 1) == []
    reason = tasks.WaitingReasons(cmdr)(tasks.get(waiting.id))
    assert reason == "daily cap of $0.50 for agent general reached; resets at 00:00 Europe/Berlin"
    assert Event.select().where(Event.kind == "spend.cap_reached").count() == 1
    caps.set_cap(cmdr, "agent", "general", 1.00, "alice")
    assert [lease["task_id"] for lease in leases.claim(cmdr, node.id, 1)] == [waiting.id]
    assert Event.select().where(Event.kind == "spend.released").count() == 1
    listed = caps.listing(cmdr)
    assert listed == [dict(scope="agent", name="general", cap_usd=1.0, spent_usd=0.60, left_usd=pytest.approx(0.40),
                           source="runtime", held=False)]
    assert caps.clear_cap(cmdr, "agent", "general", "alice")  # the configured $0.50 is back: held again
    assert caps.listing(cmdr)[0]["source"] == "config" and Hold.select().count() == 1


def test_a_submitters_cap_holds_only_that_submitter(cmdr):
    configure(cmdr, spend_caps=("submitter:alice=0.10",))
    node = join(cmdr, slots=1)
    spend(cmdr, node, submit(cmdr, submitter="alice"), 0.20)
    alices, bobs = submit(cmdr, submitter="alice"), submit(cmdr, submitter="bob")
    assert [lease["task_id"] for lease in leases.claim(cmdr, node.id, 1)] == [bobs.id]
    assert "for submitter alice reached" in tasks.WaitingReasons(cmdr)(tasks.get(alices.id))


def test_a_nodes_cap_stops_that_node_taking_work_and_others_take_it(cmdr):
    configure(cmdr, spend_caps=("node:pi1=0.10",))
    pi1, pi2 = join(cmdr, "pi1", slots=1), join(cmdr, "pi2", slots=1)
    spend(cmdr, pi1, submit(cmdr), 0.20)
    waiting = submit(cmdr)
    assert leases.claim(cmdr, pi1.id, 1) == []
    cmdr._cache.clear()  # the fleet a worker's plans share is read again after planning.FLEET_TTL (0.1 s)
    assert [lease["task_id"] for lease in leases.claim(cmdr, pi2.id, 1)] == [waiting.id]


def test_refuse_at_cap_refuses_new_tasks_with_429_and_when_it_resets(cmdr):
    configure(cmdr, spend_cap=0.10, spend_at_cap="refuse")
    spend(cmdr, join(cmdr), submit(cmdr, submitter="alice"), 0.10)  # reaching the cap is enough
    with pytest.raises(TooManyRequests) as refused:
        submit(cmdr, submitter="bob")
    assert refused.value.message == "daily cap of $0.10 for the mesh reached; resets at 00:00 UTC"
    assert 0 < refused.value.retry_after <= 86400
    assert Task.select().count() == 1


def test_running_work_is_never_stopped_by_a_cap_and_its_cost_still_counts(cmdr):
    configure(cmdr, spend_cap=0.10)
    node = join(cmdr, slots=2)
    submit(cmdr), submit(cmdr)
    one, two = leases.claim(cmdr, node.id, 2)
    apply(cmdr, node, result(one, cost_usd=0.20, usage=leases.Usage(input_tokens=1)))
    finished, _ = apply(cmdr, node, result(two, cost_usd=0.30, usage=leases.Usage(input_tokens=1)))
    assert finished.state == "succeeded"  # the overshoot: what was running when the cap was reached
    assert caps.listing(cmdr)[0]["spent_usd"] == pytest.approx(0.50)


def berlin(*when) -> float:
    return datetime(*when, tzinfo=BERLIN).timestamp()


@pytest.mark.parametrize("day, hours", [("2026-03-29", 23), ("2026-10-25", 25), ("2026-06-01", 24)])
def test_local_days_follow_the_calendar_across_dst(day, hours):
    start = days.start_of(day, BERLIN)
    assert days.next_midnight(start, BERLIN) - start == hours * 3600
    assert days.day_of(start, BERLIN) == day and days.day_of(start - 1, BERLIN) != day


def test_held_work_starts_by_itself_at_local_midnight_on_a_dst_day(cmdr, monkeypatch):
    """Pinned clock: the cap is reached at 23:30 on the eve of the autumn DST change in Berlin,
    the hold lapses at 00:00 local (22:00 UTC), and the next reset is 25 hours later."""
    clock = [berlin(2026, 10, 24, 23, 30)]
    for module in ("commander.leases", "commander.holds", "commander.spend.caps", "commander.tasks"):
        monkeypatch.setattr(f"{module}.now", lambda: clock[0])
    configure(cmdr, spend_cap=1.0, time_zone="Europe/Berlin")
    node = join(cmdr, slots=1)
    spend(cmdr, node, submit(cmdr), 1.5)
    waiting = submit(cmdr)
    [hold] = holds.active(clock[0])
    assert hold.until == berlin(2026, 10, 25, 0, 0) == datetime(2026, 10, 24, 22, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    clock[0] = hold.until - 1
    assert holds.lapse(cmdr) == 0 and leases.claim(cmdr, node.id, 1) == []
    clock[0] = hold.until + 1
    assert holds.lapse(cmdr) == 1
    lease = leases.claim(cmdr, node.id, 1)[0]
    assert lease["task_id"] == waiting.id
    apply(cmdr, node, result(lease, cost_usd=2.0, usage=leases.Usage(input_tokens=1)))  # the new day's spend
    [hold] = holds.active(clock[0])
    assert hold.until - clock[0] == pytest.approx(25 * 3600 - 1)
    fold.up_to_date(cmdr)
    assert SpendDay.select(SpendDay.day).order_by(SpendDay.day).tuples()[:] == [("2026-10-24",), ("2026-10-25",)]


def test_a_cap_crossed_mid_pipeline_holds_its_next_steps_with_the_reason_the_pipeline_shows(cmdr, client, bearer):
    from commander import pipelines
    from commander.pipelines import Edge, Step

    configure(cmdr, spend_caps=("agent:general=0.10",))
    node, signer = join_signing(cmdr, slots=1)  # a pipeline checks its steps' signed results
    pipeline = pipelines.submit(cmdr, [Step(key="first", prompt="one"),
                                       Step(key="second", prompt="two", depends_on=(Edge("first", False),))],
                                submitter="alice")
    first, second = (step.id for step in pipelines.steps_of(pipeline.id).values())
    report(cmdr, node, lease_of(cmdr, node, tasks.get(first)), signer=signer, cost_usd=0.20,
           usage=dict(input_tokens=10))
    assert tasks.get(second).state == "queued" and leases.claim(cmdr, node.id, 1) == []
    shown = client.get(f"/api/pipelines/{pipeline.id}", headers=bearer()).get_json()
    assert [(s["key"], s["state"], s["waiting_reason"]) for s in shown["steps"]] == [
        ("first", "succeeded", None),
        ("second", "queued", "daily cap of $0.10 for agent general reached; resets at 00:00 UTC")]
    assert "daily cap of $0.10 for agent general" in client.get(
        f"/pipelines/{pipeline.id}", headers=bearer()).get_data(as_text=True)


@pytest.mark.parametrize("seed", range(6))
def test_the_ledger_sums_to_what_every_accepted_result_cost_for_any_sequence(cmdr, seed):
    """A property over random sequences of results (seeded): retries, failures, re-sent and stale
    results, lost leases, priced by the runner or by the table; every roll-up agrees with the ledger."""
    import random

    from commander.models import SpendAgentDay

    rng = random.Random(seed)
    configure(cmdr, retry_backoff=0.0)
    node = join(cmdr, slots=1)
    expected: dict[int, float] = {}
    accepted = []
    for _ in range(40):
        task = submit(cmdr, max_attempts=3)
        while tasks.get(task.id).state == "queued":
            [lease] = leases.claim(cmdr, node.id, 1)
            if rng.random() < 0.15:
                expire_now(cmdr, tasks.get(task.id))  # lost: no usage ever reported
                continue
            cost = rng.choice([None, round(rng.uniform(0, 0.5), 6)])
            usage = leases.Usage(input_tokens=rng.randint(0, 5000), output_tokens=rng.randint(0, 2000))
            status = rng.choice(["succeeded", "failed"])
            sent = result(lease, status, cost_usd=cost, usage=usage, model="claude-haiku-4-5",
                          infra_failure=status == "failed" and rng.random() < 0.5)
            apply(cmdr, node, sent)
            if rng.random() < 0.3:  # re-sent: a duplicate of a final result, or stale once retried; counted once
                if tasks.get(task.id).state == "queued":
                    with pytest.raises(Conflict):
                        apply(cmdr, node, sent)
                else:
                    assert apply(cmdr, node, sent)[1] is True
            if cost is None:
                cost = prices.cost_usd(prices.PRICES["claude-haiku-4-5"], usage.input_tokens, usage.output_tokens, 0, 0)
            if cost or usage.input_tokens or usage.output_tokens:
                expected[task.id] = expected.get(task.id, 0.0) + cost
                accepted.append(task.id)
        if accepted and rng.random() < 0.2:
            with pytest.raises(Conflict):  # a result for an attempt long over
                apply(cmdr, node, result(dict(lease, attempt=1, lease_token="cd" * 16), cost_usd=1.0))
    total = sum(expected.values())
    # Before the last rows are folded, a cap check already counts them (roll-up + the rows after the mark).
    assert caps.spent(SpendEntry.get().day, caps.ALL, "") == pytest.approx(total)
    fold.up_to_date(cmdr)
    assert SpendEntry.select().count() == len(accepted)
    assert sum(e.cost_usd for e in SpendEntry.select()) == pytest.approx(total)
    for table in (SpendDay, SpendAgentDay, SpendTask):
        assert sum(row.cost_usd for row in table.select()) == pytest.approx(total), table.__name__
        assert sum(row.attempts for row in table.select()) == len(accepted), table.__name__
    assert {row.task: row.cost_usd for row in SpendTask.select()} == pytest.approx(expected)
    # Each task's own cost is what all its attempts cost, as the ledger priced them.
    assert {task.id: task.cost_usd for task in Task.select() if task.cost_usd is not None} == pytest.approx(expected)


def test_a_cap_taken_out_of_the_config_lifts_its_hold_at_the_next_start(make_app):
    from commander.spend import caps as spend_caps

    app = make_app(spend_caps=("agent:general=0.10",))
    cmdr = app.extensions["m3shd"]
    with cmdr.db.connection_context():
        spend(cmdr, join(cmdr, slots=1), submit(cmdr), 0.20)
        assert [hold.name for hold in holds.active()] == ["general"]
        configure(cmdr, spend_caps=())
        spend_caps.refresh(cmdr)  # what init does as the Commander starts
        assert holds.active() == []
