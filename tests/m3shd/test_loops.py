"""Guarded loops and full-jitter retries (m3shd/loops.py)."""

from __future__ import annotations

import logging
import random
import threading

import pytest

from m3shd import loops


@pytest.mark.parametrize("failures", [0, 1, 2, 5, 10, 1000])
def test_a_retry_delay_lies_between_zero_and_the_capped_exponential(failures):
    rng = random.Random(failures)
    ceiling = min(30.0, 1.0 * 2 ** failures) if failures < 64 else 30.0
    draws = [loops.retry_delay(failures, base=1.0, cap=30.0, rng=rng) for _ in range(2000)]
    assert all(0.0 <= d <= ceiling for d in draws)
    assert max(draws) > 0.9 * ceiling  # the whole window is used, not a fixed point in it


def test_a_thousand_nodes_failing_together_retry_spread_over_the_window_not_in_step():
    """What a Commander restart looks like: 1,000 nodes at their 6th failure in a row (window 30 s)."""
    rng = random.Random(18)
    delays = [loops.retry_delay(5, base=1.0, cap=30.0, rng=rng) for _ in range(1000)]
    assert len({round(d, 3) for d in delays}) > 950  # no two crowds retrying at the same instant
    per_second = [0] * 30
    for d in delays:
        per_second[min(int(d), 29)] += 1
    # Uniform: about 33 a second, never a burst (plain doubling would put all 1,000 at 32 s).
    assert max(per_second) < 60 and min(per_second) > 12
    assert 13.5 < sum(delays) / len(delays) < 16.5  # mean cap/2: half the un-jittered wait


def test_backoff_says_once_when_it_starts_failing_and_once_when_it_works_again(caplog):
    backoff = loops.Backoff("heartbeat", logging.getLogger("m3shd.test"), base=1.0, cap=4.0)
    with caplog.at_level("INFO", logger="m3shd.test"):
        delays = [backoff.failed(ConnectionError("refused")) for _ in range(6)]
        backoff.ok()
        backoff.ok()
        first_again = backoff.failed(ConnectionError("refused"))
    assert [m for m in caplog.messages] == ["heartbeat: refused; retrying with back-off", "heartbeat: works again",
                                            "heartbeat: refused; retrying with back-off"]
    assert all(0 <= d <= bound for d, bound in zip(delays, (1, 2, 4, 4, 4, 4)))
    assert 0 <= first_again <= 1.0  # success starts the window afresh


def test_backoff_says_so_again_when_the_failure_changes_kind(caplog):
    """A Commander that was down and now answers but cannot prove who it is: the second reason
    is the one to act on, so it is said too (once)."""
    backoff = loops.Backoff("heartbeat", logging.getLogger("m3shd.test"))
    with caplog.at_level("INFO", logger="m3shd.test"):
        for error in (ConnectionError("refused"), ConnectionError("refused"), PermissionError("untrusted"),
                      PermissionError("untrusted"), ConnectionError("refused")):
            backoff.failed(error)
    assert caplog.messages == ["heartbeat: refused; retrying with back-off",
                               "heartbeat: untrusted; retrying with back-off",
                               "heartbeat: refused; retrying with back-off"]


def test_a_guarded_loop_survives_its_failures_and_says_each_distinct_one_once(caplog, monkeypatch):
    waits = []
    monkeypatch.setattr(loops, "retry_delay", lambda failures, base, cap: waits.append(failures) or 0.0)
    stop = threading.Event()
    rounds = []

    def step():
        rounds.append(len(rounds))
        n = len(rounds)
        if n == 7:
            return  # a round that works
        if n == 9:
            stop.set()
            return
        # Rounds 1-5 and 8: the same failure (type and line); round 6: another one.
        raise ValueError("another failure") if n == 6 else KeyError("slot")

    with caplog.at_level("INFO", logger="m3shd.test"):
        loops.run_forever("claiming", step, stop=stop, logger=logging.getLogger("m3shd.test"))
    assert len(rounds) == 9  # it went on after every failure, and ended only on `stop`
    said = [(r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert said == [
        ("claiming failed (KeyError: 'slot'); it goes on after a back-off", True),
        ("claiming failed again (2 times so far): KeyError: 'slot'", False),
        ("claiming failed again (4 times so far): KeyError: 'slot'", False),
        ("claiming failed (ValueError: another failure); it goes on after a back-off", True),
    ]  # the 3rd, 5th and 6th KeyError are not said: a persistent failure is no flood
    assert waits == [0, 1, 2, 3, 4, 5, 0]  # failures in a row; the working round started afresh


def test_a_round_that_ran_longer_than_the_cap_before_failing_starts_the_back_off_afresh(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(loops.time, "monotonic", lambda: clock[0])
    waits = []
    monkeypatch.setattr(loops, "retry_delay", lambda failures, base, cap: waits.append(failures) or 0.0)
    stop = threading.Event()
    lengths = iter([1.0, 1.0, 120.0, 1.0])  # the third round followed an event stream for two minutes

    def step():
        length = next(lengths, None)
        if length is None:
            stop.set()
            return
        clock[0] += length
        raise ConnectionError("the Commander closed the event stream")

    loops.run_forever("relay", step, stop=stop, logger=logging.getLogger("m3shd.test"), cap=60.0)
    assert waits == [0, 1, 0, 1]


def test_start_runs_the_loop_in_a_named_daemon_thread():
    stop = threading.Event()
    ran = threading.Event()
    thread = loops.start("wake-listener", lambda: ran.set() or stop.wait(0.01), stop=stop)
    assert ran.wait(10) and thread.name == "wake-listener" and thread.daemon
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
