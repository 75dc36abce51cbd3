"""The scheduler's pure parts on fixed inputs: rewards, UCB, breaker transitions, ranking, fairness."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import replace

import pytest

from commander import breakers, reputation, scheduler
from commander.breakers import Breaker
from commander.scheduler import Candidate, Ranking, TaskView
from commander.settings import CommanderSettings

SETTINGS = CommanderSettings()


def node(node_id, mean=0.0, count=0.0, free=1, slots=1, caps=(), age=0.0, priority=0) -> Candidate:
    return Candidate(node_id=node_id, capabilities=frozenset(caps), slots=slots, free=free, heartbeat_age=age,
                     priority=priority, mean=mean, count=count)


def task(task_id=1, requires=(), prefer=(), priority=0, submitter="a", waited=0.0, created_at=0.0, tried=()) -> TaskView:
    return TaskView(id=task_id, requires=frozenset(requires), prefer=frozenset(prefer), priority=priority,
                    submitter=submitter, waited=waited, created_at=created_at or float(task_id),
                    tried_nodes=frozenset(tried))


# --- rewards and UCB -------------------------------------------------------------------------

@pytest.mark.parametrize("kind, duration, reference, expected", [
    ("succeeded", 1000, 1000, 1.0),      # as fast as typical
    ("succeeded", 4000, 1000, 0.625),    # four times slower
    ("succeeded", 500, 1000, 1.0),       # faster than typical earns no more than 1
    ("succeeded", 1000, None, 1.0),      # no reference yet
    ("infra", 1000, 1000, 0.0),
    ("lost", None, 1000, 0.0),
    ("failed", 1000, 1000, None),        # the task failed on its merits: says nothing of the node
])
def test_reward(kind, duration, reference, expected):
    assert reputation.reward(kind, duration, reference) == expected


def test_older_outcomes_weigh_less():
    half_life = 100.0
    mean, count = reputation.summarize([(0.0, 0.0), (100.0, 1.0)], now=100.0, half_life=half_life)
    assert count == pytest.approx(1.5)          # 0.5 + 1
    assert mean == pytest.approx(1 / 1.5)       # the recent success outweighs the old failure
    assert reputation.count_now(1.5, since=100.0, now=200.0, half_life=half_life) == pytest.approx(0.75)


def test_ucb_explores_the_untried_and_the_barely_tried():
    assert reputation.ucb(0.0, 0.0, 10, 0.5) == math.inf
    well_known = reputation.ucb(0.8, 50.0, 52.0, 0.5)
    barely = reputation.ucb(0.7, 2.0, 52.0, 0.5)
    assert barely > well_known  # a slightly worse mean with few samples still gets looked at
    assert reputation.ucb(0.7, 50.0, 100.0, 0.5) < reputation.ucb(0.8, 50.0, 100.0, 0.5)  # equal counts: exploit


def test_ranking_puts_untried_first_then_exploits_the_better_mean():
    ranking = Ranking([node(1, mean=0.9, count=20), node(2, mean=0.4, count=20), node(3)], SETTINGS)
    assert [n.node_id for n in ranking.ranked(task())] == [3, 1, 2]
    ranking = Ranking([node(1, mean=0.9, count=20), node(2, mean=0.4, count=20)], SETTINGS)
    assert ranking.best(task()).node_id == 1


def test_a_retry_avoids_the_nodes_it_broke_on_but_may_use_them_if_nothing_else_can():
    nodes = [node(1, mean=1.0, count=20), node(2, mean=0.2, count=20)]
    assert Ranking(nodes, SETTINGS).best(task(tried=[1])).node_id == 2
    assert Ranking([node(1, mean=1.0, count=20)], SETTINGS).best(task(tried=[1])).node_id == 1
    # The only free node is the one it broke on, another able node is busy: wait for that one.
    assert Ranking([node(1, count=20), node(2, count=20, free=0)], SETTINGS).best(task(tried=[1])) is None


def test_capabilities_must_match_and_prefer_earns_a_bonus():
    nodes = [node(1, mean=0.8, count=10, caps=["os=linux"]), node(2, mean=0.8, count=10, caps=["os=linux", "gpu"]),
             node(3, mean=1.0, count=10, caps=["os=darwin"])]
    ranking = Ranking(nodes, SETTINGS)
    assert {n.node_id for n in ranking.ranked(task(requires=["os=linux"]))} == {1, 2}
    assert ranking.best(task(requires=["os=linux"], prefer=["gpu"])).node_id == 2
    assert ranking.best(task(requires=["arch=riscv"])) is None


def test_a_task_waits_a_while_for_a_clearly_better_busy_node():
    nodes = [node(1, mean=0.95, count=10, free=0), node(2, mean=0.6, count=10)]
    margin_wait = SETTINGS.better_node_wait
    assert Ranking(nodes, SETTINGS).best(task(waited=0.0)) is None
    assert Ranking(nodes, SETTINGS).best(task(waited=margin_wait)).node_id == 2  # waited long enough
    close = [node(1, mean=0.95, count=10, free=0), node(2, mean=0.9, count=10)]
    assert Ranking(close, SETTINGS).best(task()).node_id == 2  # not clearly better: no waiting


def test_priority_breaks_ties_and_free_slots_are_used_up():
    ranking = Ranking([node(1, mean=0.5, count=5, priority=0), node(2, mean=0.5, count=5, priority=3)], SETTINGS)
    assert ranking.place(task(1)) == 2   # equal scores: the higher priority
    assert ranking.place(task(2)) == 1   # node 2's only slot is taken
    assert ranking.place(task(3)) is None


def test_a_late_heartbeat_and_full_slots_lower_the_score_an_on_time_one_does_not():
    fresh = Ranking([node(1, mean=0.5, count=5, age=0.0)], SETTINGS).base[1]
    on_time = Ranking([node(1, mean=0.5, count=5, age=SETTINGS.heartbeat_interval)], SETTINGS).base[1]
    late = Ranking([node(1, mean=0.5, count=5, age=3 * SETTINGS.heartbeat_interval)], SETTINGS).base[1]
    stale = Ranking([node(1, mean=0.5, count=5, age=SETTINGS.lost_after)], SETTINGS).base[1]
    busy = Ranking([node(1, mean=0.5, count=5, free=1, slots=4)], SETTINGS).base[1]
    assert on_time == fresh and stale < late < fresh and busy < fresh


# --- fairness and priorities -----------------------------------------------------------------

def test_one_submitters_burst_is_interleaved_with_anothers_later_task():
    burst = [task(i, submitter="alice") for i in range(1, 6)]
    late = task(6, submitter="bob")
    order = [t.id for t in scheduler.fair_order([*burst, late], Counter(), aging=60)]
    assert order[:3] == [1, 6, 2]


def test_higher_priority_first_but_waiting_ages_a_low_priority_task_up():
    urgent = task(2, priority=5, waited=0)
    old = task(1, priority=0, waited=0)
    assert [t.id for t in scheduler.fair_order([old, urgent], Counter(), aging=60)] == [2, 1]
    starving = task(1, priority=0, waited=6 * 60)  # six levels up after six minutes
    assert [t.id for t in scheduler.fair_order([starving, urgent], Counter(), aging=60)] == [1, 2]


def test_recent_service_decides_between_submitters():
    order = scheduler.fair_order([task(1, submitter="alice"), task(2, submitter="bob")], Counter(alice=3), aging=60)
    assert [t.id for t in order] == [2, 1]


# --- circuit breakers ------------------------------------------------------------------------

def feed(outcomes: list[bool], start: Breaker = Breaker(), now: float = 0.0) -> Breaker:
    breaker, history = start, []
    for failed in outcomes:
        history.append(failed)
        breaker = breakers.after_outcome(breaker, failed, history, now, SETTINGS)
    return breaker


def test_three_infrastructure_failures_in_a_row_open_the_breaker():
    assert feed([True, True]).state == "closed"
    opened = feed([True, True, True], now=100.0)
    assert (opened.state, opened.until, opened.cooldown) == ("open", 160.0, 60.0)


def test_half_of_the_last_ten_opens_it_once_there_are_five():
    assert feed([True, False, True, False]).state == "closed"       # too few outcomes yet
    assert feed([True, False, True, False, True]).state == "open"   # 3 of 5 ≥ 50 %
    assert feed([False] * 6 + [True, False, True, False]).state == "closed"  # 2 of 10


def test_a_success_resets_the_consecutive_count():
    recovered = feed([False] * 5 + [True, True, False, True, True])  # 4 of 10, and the streak is 2
    assert (recovered.state, recovered.failures) == ("closed", 2)
    assert feed([False] * 5 + [True, True, False, True, True, True]).state == "open"  # a third in a row


def test_open_admits_nothing_then_one_probe_whose_result_decides():
    opened = feed([True, True, True], now=0.0)
    assert breakers.admits(opened, 59.0)[0] == 0
    limit, half = breakers.admits(opened, 60.0)
    assert (limit, half.state) == (1, "half_open")
    probing = Breaker(**{**half.__dict__, "probe": 7})
    assert breakers.admits(probing, 61.0)[0] == 0          # one probe at a time
    closed = breakers.after_outcome(probing, False, [], 70.0, SETTINGS)
    assert (closed.state, closed.failures) == ("closed", 0)
    reopened = breakers.after_outcome(probing, True, [], 70.0, SETTINGS)
    assert (reopened.state, reopened.cooldown, reopened.until) == ("open", 120.0, 190.0)


def test_the_cooldown_doubles_up_to_its_cap():
    breaker = feed([True, True, True])
    cooldowns = []
    for _ in range(8):
        _, breaker = breakers.admits(breaker, breaker.until)
        breaker = breakers.after_outcome(breaker, True, [], breaker.until or 0.0, SETTINGS)
        cooldowns.append(breaker.cooldown)
    assert cooldowns == [120, 240, 480, 960, 1800, 1800, 1800, 1800]


def test_tasks_that_fail_on_their_own_merits_never_open_a_breaker():
    assert feed([False] * 20).state == "closed"


def test_a_shared_ranking_with_leases_applied_ranks_as_a_fresh_one_would():
    """What every claim plans with (the worker's idle ranking, its moment's leases applied)
    must order, score and fill nodes exactly as a ranking made from scratch with those leases."""
    rng = random.Random(7)
    for _ in range(20):
        idle = [node(i, mean=rng.random(), count=rng.choice([0.0, rng.random() * 20]), slots=(slots := rng.randint(1, 3)),
                     free=slots, caps=rng.choice([(), ("gpu",)]), age=rng.random() * 5, priority=rng.randint(0, 1))
                for i in range(1, 60)]
        running = {n.node_id: rng.randint(1, n.slots) for n in rng.sample(idle, 15)}
        running[999] = 1  # a node that is not a candidate (lost, or its breaker open) changes nothing
        shared = Ranking(idle, SETTINGS).with_leases(running)
        fresh = Ranking([replace(n, free=n.free - running.get(n.node_id, 0)) for n in idle], SETTINGS)
        assert [n.node_id for n in shared.nodes] == [n.node_id for n in fresh.nodes]
        assert shared.free == fresh.free and shared.base == fresh.base
        tasks = [task(requires=rng.choice([(), ("gpu",)])) for _ in range(30)]
        assert [shared.place(t) for t in tasks] == [fresh.place(t) for t in tasks]


def test_best_is_the_able_node_with_the_highest_key_however_many_tie():
    """`best` walks the ranking only as far as a better node could come; on fleets of many equal
    nodes (the walk's stopping rules matter most there), with and without `prefer` and tried
    nodes, it must find what comparing every able node would."""
    rng = random.Random(11)
    patient = dict(waited=1e6)  # past every wait for a better or untried node: best never holds a task
    for _ in range(40):
        nodes = [node(i, mean=rng.choice([0.5, 0.9]), count=rng.choice([0.0, 0.0, 3.0]), free=rng.randint(0, 2),
                      slots=2, caps=rng.sample(["gpu", "arm", "big"], rng.randint(0, 2)), priority=rng.randint(0, 1))
                 for i in range(1, 120)]
        ranking = Ranking(nodes, SETTINGS)
        for _ in range(10):
            t = task(requires=rng.choice([(), ("gpu",)]), prefer=rng.choice([(), ("arm",), ("arm", "big")]),
                     tried=rng.sample(range(1, 120), rng.choice([0, 3, 60])), **patient)
            able = [n for n in nodes if ranking.free[n.node_id] > 0 and t.requires <= n.capabilities]
            expected = max(able, key=lambda n: ranking.key(n, t), default=None)
            found = ranking.best(t)
            assert (found and found.node_id) == (expected and expected.node_id)
