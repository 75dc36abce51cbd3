"""Tasks: submit, read, list, cancel, approve or reject, and why a queued task is still waiting."""

from __future__ import annotations

import peewee as pw

from commander import audit, events, pipelines
from commander.context import Commander
from commander.db import Compiled, CompiledInsert
from commander.errors import ApiError
from commander.models import ACTIVE, AWAITING_APPROVAL, CANCELLED, FINAL_STATES, QUEUED, Node, Task, now
from commander.schemas import PipelineStep, TaskQuery, TaskSubmit

TASK_INSERT = CompiledInsert(Task)
TASK_BY_ID = Compiled(Task, lambda: Task.select().where(Task.id == 0))  # (task id)


def new_task_fields(cmdr: Commander, spec: TaskSubmit | PipelineStep, token_id: int | None, submitter: str) -> dict:
    """What a new task takes from its request, be it a task of its own or a pipeline step."""
    return dict(
        prompt=spec.prompt, requires=sorted(set(spec.requires)), prefer=sorted(set(spec.prefer)),
        priority=spec.priority, model=spec.model, submitted_by=token_id, submitter=submitter,
        max_attempts=spec.max_attempts or cmdr.settings["max_attempts"],
    )


def submit(cmdr: Commander, body: TaskSubmit, token_id: int | None, submitter: str) -> tuple[Task, bool]:
    """Store a new task, queued or awaiting approval; with an idempotency key, a repeat returns
    the first task (created=False)."""
    fields = dict(
        new_task_fields(cmdr, body, token_id, submitter),
        idempotency_key=body.idempotency_key, retry_on_lost=body.retry_on_lost,
        backoff=body.backoff if body.backoff is not None else cmdr.settings["retry_backoff"],
        approval_required=body.approval_required,
        state=AWAITING_APPROVAL if body.approval_required else QUEUED,
    )
    with cmdr.writing():
        if body.idempotency_key:
            existing = Task.get_or_none((Task.submitted_by == token_id) & (Task.idempotency_key == body.idempotency_key))
            if existing:
                return existing, False
        task = TASK_INSERT.create(**fields)
        events.publish(f"task.{task.state}", task=task.id, priority=task.priority, requires=task.requires,
                       submitter=task.submitter)
    return task, True


def decide(cmdr: Commander, task_id: int, approve: bool, actor: str, reason: str | None = None) -> Task:
    """Approve a task awaiting approval (it is queued) or reject it (it is cancelled)."""
    verb = "approved" if approve else "rejected"
    with cmdr.writing():
        task = get(task_id)
        if task.state != AWAITING_APPROVAL:
            raise ApiError(409, "not_awaiting_approval", f"task {task_id} is {task.state}, not awaiting approval")
        t = now()
        if approve:
            change = dict(state=QUEUED, decided_by=actor, updated_at=t)
        else:
            error = f"rejected by {actor}" + (f": {reason}" if reason else "")
            change = dict(state=CANCELLED, decided_by=actor, error=error, finished_at=t, updated_at=t)
        Task.update(**change).where((Task.id == task_id) & (Task.state == AWAITING_APPROVAL)).execute()
        events.publish(f"task.{verb}", task=task_id, by=actor, reason=reason)
        audit.record(actor, f"task.{verb}", f"task {task_id}", reason=reason)
    return get(task_id)


def expire_approvals(cmdr: Commander) -> int:
    """With `approval_timeout` set, approvals nobody answered in time are rejected."""
    timeout = cmdr.settings["approval_timeout"]
    if not timeout:
        return 0
    stale = [t.id for t in Task.select(Task.id).where(
        (Task.state == AWAITING_APPROVAL) & (Task.updated_at < now() - timeout))]
    for task_id in stale:
        decide(cmdr, task_id, False, "commander", f"no answer within {timeout:g} s")
    return len(stale)


def get(task_id: int) -> Task:
    found = TASK_BY_ID.rows(task_id)
    if not found:
        raise ApiError(404, "not_found", f"task {task_id} does not exist")
    return found[0]


def wait_final(cmdr: Commander, task_id: int, timeout: float) -> Task:
    """The task once it is final, or as it stands when `timeout` runs out."""
    deadline = now() + min(timeout, cmdr.settings["max_wait"])
    while True:
        generation = cmdr.notifier.generation
        task = get(task_id)
        remaining = deadline - now()
        if task.state in FINAL_STATES or remaining <= 0:
            return task
        cmdr.db.close()  # hold no connection while waiting
        cmdr.notifier.wait(generation, remaining)


def listing(query: TaskQuery) -> list[Task]:
    select = Task.select().order_by(Task.id.desc()).limit(query.limit)
    if query.state:
        select = select.where(Task.state == query.state)
    if query.node_id:
        select = select.where(Task.node == query.node_id)
    if query.before_id:
        select = select.where(Task.id < query.before_id)
    return list(select)


def counts() -> dict[str, int]:
    """How many tasks are in each state."""
    return dict(Task.select(Task.state, pw.fn.COUNT(Task.id)).group_by(Task.state).tuples())


def cancel(cmdr: Commander, task_id: int) -> Task:
    """Cancel a task that has not finished; a running one is stopped by its node's next heartbeat."""
    with cmdr.writing():
        task = get(task_id)
        if task.state in FINAL_STATES:
            raise ApiError(409, "already_final", f"task {task_id} is already {task.state}")
        Task.update(state=CANCELLED, finished_at=now(), updated_at=now(), error="cancelled").where(
            (Task.id == task_id) & Task.state.not_in(FINAL_STATES)
        ).execute()
        events.publish("task.cancelled", task=task_id, previous=task.state, node=task.node_id)
        pipelines.advance(cmdr, task)
    return get(task_id)


class WaitingReasons:
    """Why queued tasks are not running, from one look at the live nodes (derived, never stored;
    the look is reused for a second, so a fleet of a thousand is not read on every submit)."""

    def __init__(self, cmdr: Commander):
        self.nodes = cmdr.cached("active-nodes", 1.0, lambda: [
            (node.name, set(node.capabilities), node.problem)
            for node in Node.select(Node.name, Node.capabilities, Node.problem).where(Node.state == ACTIVE)
        ])

    def __call__(self, task: Task) -> str | None:
        if task.state != QUEUED:
            return None
        needed = set(task.requires)
        able = [(name, problem) for name, capabilities, problem in self.nodes if needed <= capabilities]
        if not self.nodes:
            return "no N0D3 is connected; start one with `m3shd n0d3 run` or `m3shd up`"
        if not able:
            return f"no connected N0D3 has all of: {', '.join(sorted(needed))}"
        if all(problem for _, problem in able):
            return "; ".join(f"N0D3 {name}: {problem}" for name, problem in able)
        return "waiting for a free slot"


def as_dict(task: Task, reason: str | None = None) -> dict:
    return dict(
        id=task.id, state=task.state, prompt=task.prompt, requires=task.requires, priority=task.priority,
        model=task.model, attempt=task.attempt, max_attempts=task.max_attempts, node_id=task.node_id,
        runner=task.runner, output=task.output, error=task.error,
        usage=dict(input_tokens=task.input_tokens, output_tokens=task.output_tokens,
                   cache_read_tokens=task.cache_read_tokens, cache_write_tokens=task.cache_write_tokens),
        prefer=task.prefer, submitter=task.submitter, retry_on_lost=task.retry_on_lost, backoff=task.backoff,
        not_before=task.not_before, tried_nodes=task.tried_nodes, approval_required=task.approval_required,
        decided_by=task.decided_by, cost_usd=task.cost_usd, created_at=task.created_at, updated_at=task.updated_at,
        started_at=task.started_at, finished_at=task.finished_at, duration_ms=task.duration_ms,
        waiting_reason=reason, pipeline_id=task.pipeline_id, step_key=task.step_key, chain_hash=task.chain_hash,
    )
