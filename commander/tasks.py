"""Tasks: submit, read, list, cancel, approve or reject, and why a queued task is still waiting."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import peewee as pw

from commander import attachments, audit, events, holds
from commander.agents import service as agents
from commander.context import Commander
from commander.db import Compiled, CompiledInsert, Param
from commander.exceptions import Conflict, Forbidden, NotFound
from commander.models import ACTIVE, AWAITING_APPROVAL, CANCELLED, FINAL_STATES, LEASED, QUEUED, Node, Task, now
from commander.settings import CommanderSettings
from commander.signals import CANCEL, REJECT, TAKEN_BACK, AttemptEnded, TaskFinished
from m3shd.config import ConfigError

# [commander] approver_not_submitter: whose tasks awaiting approval need another principal's yes.
APPROVER_RULES = ("tokens", "all", "off")  # API tokens' tasks (the default) | everyone's, sessions too | nobody's

TASK_INSERT = CompiledInsert(Task)
TASK_BY_ID = Compiled(Task, lambda: Task.select().where(Task.id == Param("task_id")))


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """What a new task asks and where it may run, be it a task of its own or a pipeline step."""
    prompt: str
    requires: Sequence[str] = ()
    prefer: Sequence[str] = ()       # capabilities that make a node a better choice
    priority: int = 0
    model: str | None = None         # None: its agent's default model, else the node's
    max_attempts: int | None = None  # None: the Commander's max_attempts
    agent: str | None = None         # the agent it runs as (None: general); agents.chosen picks it for a caller
    attachments: Sequence[str] = ()  # SHA-256 of stored images (commander/attachments.py)
    memory: bool = True              # its agent's memories are added to its prompt (commander/memory)


def new_task_fields(cmdr: Commander, spec: TaskSpec, token_id: int | None, submitter: str) -> dict:
    """The columns a new task takes from its spec and from its agent's current version, whose
    required and preferred capabilities join the task's own. A scope held with `refuse`
    (commander/holds.py) refuses it: TooManyRequests."""
    assigned = agents.assign(cmdr, spec.agent or agents.GENERAL, spec.model)
    holds.check_submit(assigned.agent, submitter)
    return dict(
        prompt=spec.prompt, requires=sorted(set(spec.requires) | set(assigned.requires)),
        prefer=sorted(set(spec.prefer) | set(assigned.prefers)), priority=spec.priority, model=assigned.model,
        agent=assigned.agent, agent_version=assigned.version, submitted_by=token_id, submitter=submitter,
        max_attempts=spec.max_attempts or cmdr.settings.max_attempts, attachments=attachments.refs(list(spec.attachments)),
        memory=spec.memory,
    )


def approval_rule(settings: CommanderSettings) -> str:
    """The approver_not_submitter setting, checked: a typo must not turn the rule off."""
    rule = settings.approver_not_submitter
    if rule not in APPROVER_RULES:
        raise ConfigError(f"[commander] approver_not_submitter: expected one of {', '.join(APPROVER_RULES)}, "
                          f"got {rule!r}")
    return rule


def approver_must_differ(settings: CommanderSettings, token_id: int | None) -> bool:
    """Whether a task submitted now (with API token `token_id`, or None from a session) may be
    approved only by another token or user than its submitter."""
    rule = approval_rule(settings)
    return rule == "all" or (rule == "tokens" and token_id is not None)


def submit(cmdr: Commander, spec: TaskSpec, *, submitter: str, token_id: int | None = None,
           idempotency_key: str | None = None, retry_on_lost: bool = True, backoff: float | None = None,
           approval_required: bool = False) -> tuple[Task, bool]:
    """Store a new task, queued or awaiting approval; with an idempotency key, a repeat returns
    the first task (created=False). `backoff` None: the Commander's retry_backoff. The approval
    rule in force now (approver_must_differ) goes with the task."""
    fields = dict(
        new_task_fields(cmdr, spec, token_id, submitter),
        idempotency_key=idempotency_key, retry_on_lost=retry_on_lost,
        backoff=backoff if backoff is not None else cmdr.settings.retry_backoff,
        approval_required=approval_required,
        approver_must_differ=approval_required and approver_must_differ(cmdr.settings, token_id),
        state=AWAITING_APPROVAL if approval_required else QUEUED,
    )
    with cmdr.writing():
        if idempotency_key:
            existing = Task.get_or_none((Task.submitted_by == token_id) & (Task.idempotency_key == idempotency_key))
            if existing:
                return existing, False
        task = TASK_INSERT.create(**fields)
        events.publish(f"task.{task.state}", task=task.id, priority=task.priority, requires=task.requires,
                       submitter=task.submitter, agent=task.agent)
    return task, True


def decide(cmdr: Commander, task_id: int, approve: bool, actor: str, reason: str | None = None,
           token_id: int | None = None) -> Task:
    """Approve a task awaiting approval (it is queued) or reject it (it is cancelled). `actor`
    (and `token_id`, the API token deciding; None for a session) is who decides: a task marked
    approver_must_differ is not approved by the principal that submitted it. Rejecting is
    always allowed, as cancelling is."""
    verb = "approved" if approve else "rejected"
    with cmdr.writing():
        task = get(task_id)
        if task.state != AWAITING_APPROVAL:
            raise Conflict("not_awaiting_approval", f"task {task_id} is {task.state}, not awaiting approval")
        if approve and task.approver_must_differ and submitted_by(task, actor, token_id):
            raise Forbidden("approver_is_submitter",
                            f"task {task_id} was submitted by {task.submitter}, which may not approve it too: "
                            f"another token or user must ([commander] approver_not_submitter)")
        t = now()
        if approve:
            change = dict(state=QUEUED, decided_by=actor, updated_at=t)
        else:
            error = f"rejected by {actor}" + (f": {reason}" if reason else "")
            change = dict(state=CANCELLED, decided_by=actor, error=error, finished_at=t, updated_at=t)
        if Task.update(**change).where((Task.id == task_id) & (Task.state == AWAITING_APPROVAL)).execute():
            details = dict(by=actor, reason=reason)
            if approve:
                events.publish("task.approved", task=task_id, **details)
            else:
                cmdr.signals.task_finished.send(
                    cmdr, TaskFinished(get(task_id), AWAITING_APPROVAL, REJECT, details))
            audit.record(actor, f"task.{verb}", f"task {task_id}", reason=reason)
    return get(task_id)


def submitted_by(task: Task, actor: str, token_id: int | None) -> bool:
    """Whether this principal submitted `task`: the same API token (not merely one of the same
    name), or the same user's session."""
    if token_id is not None:
        return task.submitted_by_id == token_id
    return task.submitted_by_id is None and task.submitter == actor


def expire_approvals(cmdr: Commander) -> int:
    """With `approval_timeout` set, approvals nobody answered in time are rejected."""
    timeout = cmdr.settings.approval_timeout
    if not timeout:
        return 0
    stale = [t.id for t in Task.select(Task.id).where(
        (Task.state == AWAITING_APPROVAL) & (Task.updated_at < now() - timeout))]
    for task_id in stale:
        decide(cmdr, task_id, False, "commander", f"no answer within {timeout:g} s")
    return len(stale)


def get(task_id: int) -> Task:
    found = TASK_BY_ID.rows(task_id=task_id)
    if not found:
        raise NotFound("not_found", f"task {task_id} does not exist")
    return found[0]


def wait_final(cmdr: Commander, task_id: int, timeout: float) -> Task:
    """The task once it is final, or as it stands when `timeout` runs out."""
    deadline = now() + min(timeout, cmdr.settings.max_wait)
    while True:
        generation = cmdr.notifier.generation
        task = get(task_id)
        remaining = deadline - now()
        if task.state in FINAL_STATES or remaining <= 0:
            return task
        cmdr.db.close()  # hold no connection while waiting
        cmdr.notifier.wait(generation, remaining)


def listing(state: str | None = None, node_id: int | None = None, before_id: int | None = None,
            limit: int = 50, agent: str | None = None, token_id: int | None = None) -> list[Task]:
    """Tasks, newest first, in `state`, of `node_id`, run as `agent`, submitted with the token
    `token_id`, older than `before_id`."""
    select = Task.select().order_by(Task.id.desc()).limit(limit)
    if agent:
        select = select.where(Task.agent == agent)
    if token_id:
        select = select.where(Task.submitted_by == token_id)
    if state:
        select = select.where(Task.state == state)
    if node_id:
        select = select.where(Task.node == node_id)
    if before_id:
        select = select.where(Task.id < before_id)
    return list(select)


def counts() -> dict[str, int]:
    """How many tasks are in each state."""
    return dict(Task.select(Task.state, pw.fn.COUNT(Task.id)).group_by(Task.state).tuples())


def cancel(cmdr: Commander, task_id: int) -> Task:
    """Cancel a task that has not finished; a running one is stopped by its node's next heartbeat."""
    with cmdr.writing():
        task = get(task_id)
        if not end_cancelled(cmdr, task, "cancelled", CANCEL):
            raise Conflict("already_final", f"task {task_id} is already {task.state}")
    return get(task_id)


def end_cancelled(cmdr: Commander, task: Task, error: str | None, cause: str, **details) -> bool:
    """Inside the caller's write transaction, in which `task` was read: cancel it unless it is
    final already. An attempt it was running ends (taken back: its node's next heartbeat orders
    it stopped). Returns whether it was cancelled here."""
    t = now()
    if not Task.update(state=CANCELLED, error=error, finished_at=t, updated_at=t).where(
            (Task.id == task.id) & Task.state.not_in(FINAL_STATES)).execute():
        return False
    ended = get(task.id)
    if task.state == LEASED:
        cmdr.signals.attempt_ended.send(cmdr, AttemptEnded(ended, task.node_id, task.attempt, TAKEN_BACK, t))
    cmdr.signals.task_finished.send(cmdr, TaskFinished(ended, task.state, cause,
                                                       dict(previous=task.state, node=task.node_id, **details)))
    return True


class WaitingReasons:
    """Why queued tasks are not running, from one look at the live nodes (derived, never stored;
    the look is reused for a second, so a fleet of a thousand is not read on every submit)."""

    def __init__(self, cmdr: Commander):
        self.cmdr = cmdr
        self.nodes = cmdr.cached("active-nodes", 1.0, lambda: [
            (node.name, set(node.capabilities), node.problem)
            for node in Node.select(Node.name, Node.capabilities, Node.problem).where(Node.state == ACTIVE)
        ])
        self.held = holds.active()

    def __call__(self, task: Task) -> str | None:
        if task.state != QUEUED:
            return None
        if hold := holds.reason_for(self.held, task.agent, task.submitter):
            return hold.reason
        needed = set(task.requires)
        able = [(name, problem) for name, capabilities, problem in self.nodes if needed <= capabilities]
        if not self.nodes:
            return "no N0D3 is connected; start one with `m3shd n0d3 run` or `m3shd up`"
        if not able:
            return f"no connected N0D3 has all of: {', '.join(sorted(needed))}" + self.agent_needs(task, needed)
        able = [(name, problem or getattr(holds.reason_for(self.held, None, None, name), "reason", None))
                for name, problem in able]
        if all(problem for _, problem in able):
            return "; ".join(f"N0D3 {name}: {problem}" for name, problem in able)
        return "waiting for a free slot"

    def agent_needs(self, task: Task, needed: set[str]) -> str:
        """Which of the missing capabilities the task's agent asks for, if any."""
        if task.agent is None:
            return ""
        wanted = set(agents.version_of(self.cmdr, task.agent, task.agent_version).profile.requires) & needed
        return f" (agent {task.agent} requires {', '.join(sorted(wanted))})" if wanted else ""
