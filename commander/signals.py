"""What follows a task's end hangs on two signals here; no service calls another's follow-up.

- `task_finished`: a task reached a final state (succeeded, failed, cancelled, skipped). Sent
  exactly once per task, by whichever path made it final: a result, a lease that expired on its
  last attempt, a cancel, a rejection (by an operator, or an approval nobody answered in time),
  a pipeline skipping or cancelling its steps. Pipelines advance on it and the final state's
  event is published from it; the spend ledger, memory extraction and agent statistics will hang
  on it too.
- `attempt_ended`: one attempt on a node ended, whether or not the task is final: a result
  applied (final, or an infrastructure failure given back to the queue), a lease that expired, a
  lease taken back (the task cancelled, its node removed or disabled, a drain deadline passed).
  Sent exactly once per attempt. Outcomes (reputation and breakers) hang on it, as will the
  spend ledger: a retried attempt costs money too.

Both are sent inside the write transaction that made the change, right after the conditional
UPDATE that made it, and only if that UPDATE changed the row. That is what makes "exactly
once" hold: the UPDATE is fenced on the state it leaves (`state = 'leased' AND attempt = …`,
`state NOT IN (final states)`), writers take turns at the write lock, so of two paths racing to
end the same task or attempt only one changes the row and only that one sends. A receiver's
writes commit with the transition or not at all: a crash before the commit loses both (the task
is not final, nothing was sent, the next path to end it sends), after the commit both are there,
so no receiver sees a transition twice or misses one. Sending after the commit instead would
leave a window where the transition is stored and its follow-up lost.

The price: receivers run under the write lock, so they must be short and must not wait on
anything (network, sleeps, threads; see Commander.writing). A receiver that raises rolls the
transition back with its own writes: the request that caused it fails and the task stays as it
was, to be ended again later. Only what must hold with the transition belongs here.

A receiver is `receiver(cmdr, message)` and returns True when its writes may give a waiting
node work (a breaker moved, a pipeline step queued), so the sender wakes the dispatchers to plan
after the commit. Receivers are connected by each feature's `init(cmdr)`, called by
app.build_commander, never at import: every Commander in a process (tests build many) has its
own, explicit wiring. They run in the order connected; one that ends other tasks (a pipeline
skipping steps) sends their signals from within, before the outer send has reached the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from commander.leases import Result
    from commander.models import Task

# Why a task became final (TaskFinished.cause).
RESULT, LEASE_EXPIRED, CANCEL, REJECT, PIPELINE = "result", "lease_expired", "cancel", "reject", "pipeline"
# How an attempt ended (AttemptEnded.kind): on its node's account (commander/outcomes.py records
# those), or taken back by the Commander (the node is told to stop), which says nothing of the node.
OUTCOME_KINDS = ("succeeded", "failed", "infra", "lost")
TAKEN_BACK = "taken_back"


@dataclass(frozen=True)
class TaskFinished:
    task: Task              # the row as the transition left it
    previous: str           # the state it left
    cause: str              # RESULT, LEASE_EXPIRED, CANCEL, REJECT or PIPELINE
    details: dict           # the data of the event that announces it (events.on_task_finished)


@dataclass(frozen=True)
class AttemptEnded:
    task: Task              # the row as the end left it: final, or back in the queue
    node_id: int | None     # None once the node is removed
    attempt: int
    kind: str               # one of OUTCOME_KINDS, or TAKEN_BACK
    at: float
    result: Result | None = None  # as the node reported it (duration, usage, cost); None if none came


class Signal:
    def __init__(self, name: str):
        self.name = name
        self.receivers: list[Callable[[Any, Any], bool | None]] = []

    def connect(self, receiver: Callable[[Any, Any], bool | None]) -> None:
        self.receivers.append(receiver)

    def send(self, cmdr, message) -> bool:
        """Call every receiver in turn; True if any may have given a waiting node work."""
        moved = False
        for receiver in self.receivers:
            moved = bool(receiver(cmdr, message)) or moved
        return moved


@dataclass
class Signals:
    """One Commander's signals (Commander.signals)."""

    task_finished: Signal = field(default_factory=lambda: Signal("task_finished"))
    attempt_ended: Signal = field(default_factory=lambda: Signal("attempt_ended"))
