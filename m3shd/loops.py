"""Background loops that cannot die silently, and retries that do not march in step.

`run_forever(name, step)` calls `step()` (one round of a loop, including any waiting it does)
until `stop` is set. When a round raises, the loop logs it, sleeps a back-off and goes on: one
bad datagram or one bug in a rare branch must not end a thread nobody watches. Each distinct
failure (exception type and the line that raised it) is logged once with its traceback; its
repeats only at the 2nd, 4th, 8th, … time, with the count, so a failure that persists is
neither silent nor a flood.

`retry_delay(n)` is the back-off of every retry in M3SHD: "full jitter", a uniform draw from
[0, min(cap, base·2^n)] after the n-th failure in a row (n = 0 for the first). Without jitter
every N0D3 that lost the Commander at the same moment (a restart) retries at the same moments,
1, 2, 4, … s later: 1,000 requests at once each time, for a Commander that is just starting.
Full jitter spreads them over the whole window, so the load is even, and the expected wait is
half the plain exponential one (Marc Brooker, "Exponential Backoff and Jitter", AWS Architecture
Blog, 2015, simulates this and the other variants).

Standard library only: the N0D3 on a Raspberry Pi imports this.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import traceback
from collections.abc import Callable

log = logging.getLogger("m3shd")

_MAX_DOUBLINGS = 32  # 2**32 s outgrows any cap; a larger exponent would only overflow the float


def retry_delay(failures: int, base: float = 1.0, cap: float = 30.0, rng: random.Random | None = None) -> float:
    """Seconds to wait after `failures` failures in a row (0: the first): full jitter."""
    return (rng or random).uniform(0.0, min(cap, base * 2 ** min(failures, _MAX_DOUBLINGS)))


class Backoff:
    """Retries of one kind of request: the next delay (full jitter), and one log line when
    `what` starts failing, one each time it fails another way (a Commander that was down and
    is now refused), and one when it works again, however many retries lie between."""

    def __init__(self, what: str, logger: logging.Logger = log, base: float = 1.0, cap: float = 30.0):
        self.what, self.log, self.base, self.cap = what, logger, base, cap
        self.failures = 0
        self.failing_with: type | None = None

    def failed(self, error: Exception) -> float:
        if not self.failures or type(error) is not self.failing_with:
            self.log.warning("%s: %s; retrying with back-off", self.what, error)
            self.failing_with = type(error)
        delay = retry_delay(self.failures, self.base, self.cap)
        self.failures += 1
        return delay

    def ok(self) -> None:
        if self.failures:
            self.log.info("%s: works again", self.what)
        self.failures = 0


def run_forever(name: str, step: Callable[[], object], stop: threading.Event | None = None,
                logger: logging.Logger = log, base: float = 1.0, cap: float = 30.0) -> None:
    """Call `step()` until `stop` is set (never, without one), surviving whatever it raises.

    After a failure it waits retry_delay(failures in a row, base, cap); a round that returns,
    or that ran longer than `cap` before it failed, starts the count afresh."""
    failures = 0
    seen: dict[tuple, int] = {}
    while not (stop is not None and stop.is_set()):
        started = time.monotonic()
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - the point of this loop: log it and carry on
            if time.monotonic() - started > cap:
                failures = 0
            key = _failure_key(exc)
            seen[key] = count = seen.get(key, 0) + 1
            if count == 1:
                logger.exception("%s failed (%s: %s); it goes on after a back-off", name, type(exc).__name__, exc)
            elif count & (count - 1) == 0:  # a power of two: logarithmically few lines
                logger.error("%s failed again (%d times so far): %s: %s", name, count, type(exc).__name__, exc)
            delay = retry_delay(failures, base, cap)
            failures += 1
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)
        else:
            failures = 0


def start(name: str, step: Callable[[], object], **options) -> threading.Thread:
    """run_forever(name, step, **options) in a daemon thread of that name."""
    thread = threading.Thread(target=run_forever, args=(name, step), kwargs=options, name=name, daemon=True)
    thread.start()
    return thread


def _failure_key(exc: BaseException) -> tuple:
    """What makes two failures the same: the exception's type and the line that raised it."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = (frames[-1].filename, frames[-1].lineno) if frames else None
    return type(exc).__qualname__, where
