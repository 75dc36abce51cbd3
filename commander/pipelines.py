"""Pipelines: a graph of steps submitted in one call, each step a task.

A step with parents is stored `blocked`. Whenever a step becomes final, `advance` runs in the
same write transaction (it receives the task_finished signal, commander/signals.py): steps
whose parents are all final and acceptable (succeeded, or the edge allows failure) are queued
with their parents' outputs rendered into their prompts, after the parents' signatures and
chain hashes have been verified; steps that a parent rules out become `skipped` (a final state
of its own: they never ran, nobody cancelled them); a chain that fails verification stops the
pipeline. The pipeline is final once every step is.
"""

from __future__ import annotations

from dataclasses import dataclass

from commander import events, provenance, tasks, templates
from commander.context import Commander
from commander.exceptions import Conflict, Invalid, NotFound
from commander.models import (
    BLOCKED, CANCELLED, FAILED, FINAL_STATES, QUEUED, RUNNING, SKIPPED, SUCCEEDED, Pipeline, StepAction, Task, now,
)
from commander.signals import PIPELINE, TaskFinished
from commander.tasks import TaskSpec

# `{{ steps.KEY.FIELD }}`: the only thing a step's prompt can pull from another step.
TEMPLATE = templates.placeholder("steps", r"([A-Za-z0-9_-]+)\.(output|error|state)")


@dataclass(frozen=True)
class Edge:
    """A step's parent, and whether the step runs even if that parent does not succeed."""
    step: str
    allow_failure: bool = False


@dataclass(frozen=True, kw_only=True)
class Step(TaskSpec):
    key: str
    depends_on: tuple[Edge, ...] = ()
    notify: dict | None = None  # a notify step (commander/plugins/steps.py): run by the Commander, no model


def init(cmdr: Commander) -> None:
    cmdr.signals.task_finished.connect(on_task_finished)


def invalid(message: str) -> Invalid:
    return Invalid("invalid_pipeline", message)


def dependency_order(steps: list[Step]) -> list[Step]:
    """The steps with every one after its parents; raises Invalid naming the first problem found."""
    by_key: dict[str, Step] = {}
    for step in steps:
        if step.key in by_key:
            raise invalid(f"duplicate step key {step.key!r}")
        by_key[step.key] = step
    for step in steps:
        if not step.prompt.strip():
            raise invalid(f"step {step.key!r} has an empty prompt")
        parents = [dep.step for dep in step.depends_on]
        for parent in parents:
            if parent not in by_key:
                raise invalid(f"step {step.key!r} depends on unknown step {parent!r}")
        if len(set(parents)) != len(parents):
            raise invalid(f"step {step.key!r} names the same parent twice")
        for match in TEMPLATE.finditer(step.prompt):
            if match[1] not in parents:
                raise invalid(f"step {step.key!r} uses {match[0]} but does not depend on {match[1]!r}")
    order: list[Step] = []
    done: set[str] = set()
    path: list[str] = []  # the steps being visited: meeting one again closes a cycle

    def visit(key: str) -> None:
        if key in done:
            return
        if key in path:
            cycle = path[path.index(key):] + [key]
            raise invalid(f"the steps form a cycle: {' → '.join(cycle)}")
        path.append(key)
        for dep in by_key[key].depends_on:
            visit(dep.step)
        path.pop()
        done.add(key)
        order.append(by_key[key])

    for key in by_key:
        visit(key)
    return order


def submit(cmdr: Commander, steps: list[Step], *, submitter: str, token_id: int | None = None,
           name: str = "") -> Pipeline:
    """Store the pipeline and its steps (roots queued, the rest blocked) in one transaction."""
    order = dependency_order(steps)
    with cmdr.writing():
        pipeline = Pipeline.create(name=name, submitter=submitter, submitted_by=token_id)
        task_ids: dict[str, int] = {}
        for step in order:
            parents = [dict(task_id=task_ids[dep.step], step=dep.step, allow_failure=dep.allow_failure)
                       for dep in step.depends_on]
            task = Task.create(**tasks.new_task_fields(cmdr, step, token_id, submitter),
                               backoff=cmdr.settings.retry_backoff,
                               pipeline=pipeline.id, step_key=step.key, depends_on=parents,
                               state=BLOCKED if parents else QUEUED)
            task_ids[step.key] = task.id
            if step.notify:
                StepAction.create(task=task.id, kind="notify", spec=step.notify)
            events.publish(f"task.{task.state}", task=task.id, priority=task.priority, requires=task.requires,
                           submitter=submitter, pipeline=pipeline.id, step=step.key)
        events.publish("pipeline.submitted", pipeline=pipeline.id, name=name, steps=len(order))
    return pipeline


def get(pipeline_id: int) -> Pipeline:
    pipeline = Pipeline.get_or_none(Pipeline.id == pipeline_id)
    if pipeline is None:
        raise NotFound("not_found", f"pipeline {pipeline_id} does not exist")
    return pipeline


def listing(limit: int = 50) -> list[Pipeline]:
    """The latest pipelines, newest first."""
    return list(Pipeline.select().order_by(Pipeline.id.desc()).limit(limit))


def steps_of(pipeline_id: int) -> dict[int, Task]:
    """The pipeline's steps by task id; ids follow dependency order, as `submit` created them."""
    return {task.id: task for task in Task.select().where(Task.pipeline == pipeline_id).order_by(Task.id)}


def cancel(cmdr: Commander, pipeline_id: int) -> Pipeline:
    """Cancel every step not yet final; running ones are stopped through their nodes' heartbeats."""
    with cmdr.writing():
        pipeline = get(pipeline_id)
        if pipeline.state != RUNNING:
            raise Conflict("already_final", f"pipeline {pipeline_id} is already {pipeline.state}")
        end(cmdr, pipeline, steps_of(pipeline_id), CANCELLED, "pipeline cancelled")
    return get(pipeline_id)


def end(cmdr: Commander, pipeline: Pipeline, steps: dict[int, Task], state: str, reason: str | None) -> None:
    """Finish the pipeline in `state`, cancelling the steps that are not final yet."""
    for step in steps.values():
        if step.state not in FINAL_STATES:
            tasks.end_cancelled(cmdr, step, reason, PIPELINE, pipeline=pipeline.id, step=step.step_key)
    Pipeline.update(state=state, error=reason, finished_at=now()).where(
        Pipeline.id == pipeline.id).execute()
    events.publish(f"pipeline.{state}", pipeline=pipeline.id, reason=reason)


def on_task_finished(cmdr: Commander, finished: TaskFinished) -> bool:
    """A step became final: move its pipeline on, unless this pipeline's own walk made it final
    (a skip or a cancel by `advance` or `end`, which go on by themselves)."""
    if finished.task.pipeline_id is None or finished.cause == PIPELINE:
        return False
    advance(cmdr, finished.task)
    return True


def advance(cmdr: Commander, finished: Task) -> None:
    """Inside the transaction that just made `finished` final: move its pipeline on."""
    if finished.pipeline_id is None:
        return
    pipeline = Pipeline.get_by_id(finished.pipeline_id)
    if pipeline.state != RUNNING:
        return
    steps = steps_of(pipeline.id)
    events.publish("pipeline.step", task=finished.id, pipeline=pipeline.id, step=finished.step_key,
                   state=steps[finished.id].state)
    changed = True
    while changed:  # a skip can rule out further steps, so go round until nothing moves
        changed = False
        for step in steps.values():
            if step.state != BLOCKED:
                continue
            parents = [(steps[dep["task_id"]], dep["allow_failure"]) for dep in step.depends_on]
            if any(parent.state not in FINAL_STATES for parent, _ in parents):
                continue
            refused = [parent.step_key for parent, allowed in parents if parent.state != SUCCEEDED and not allowed]
            if refused:
                move(cmdr, pipeline, step, SKIPPED, error=f"skipped: parent step {', '.join(refused)} did not succeed")
                changed = True
                continue
            chain = provenance.ancestry(step, steps.__getitem__)[:-1]
            links, _ = provenance.verify(cmdr, chain)
            broken = [entry for entry in links if entry["problems"]]
            if broken:
                first = broken[0]
                reason = (f"provenance check failed at step {first['step']!r} (task {first['task_id']}): "
                          f"{'; '.join(first['problems'])}")
                events.publish("pipeline.tampered", task=first["task_id"], pipeline=pipeline.id,
                               step=first["step"], problems=first["problems"], blocked_step=step.step_key)
                end(cmdr, pipeline, steps, FAILED, reason)
                return
            prompt = render(step.prompt, {p.step_key: p for p, _ in parents}, cmdr.settings.pipeline_inject_limit)
            if not make_due(cmdr, step, prompt):
                move(cmdr, pipeline, step, QUEUED, prompt=prompt)
    if all(step.state in FINAL_STATES for step in steps.values()):
        state = SUCCEEDED if all(step.state == SUCCEEDED for step in steps.values()) else FAILED
        not_done = sorted(step.step_key for step in steps.values() if step.state != SUCCEEDED)
        end(cmdr, pipeline, steps, state, f"steps that did not succeed: {', '.join(not_done)}" if not_done else None)


def make_due(cmdr: Commander, step: Task, message: str) -> bool:
    """For a step the Commander carries out itself (a StepAction: a notify step), make it due
    with its rendered message; it stays blocked until commander/plugins/steps.py has done it.
    False for a step a node runs."""
    action = StepAction.get_or_none(StepAction.task == step.id)
    if action is None:
        return False
    StepAction.update(state="due", message=cmdr.box.encrypt(message.encode())).where(
        (StepAction.id == action.id) & (StepAction.state == "waiting")).execute()
    return True


def move(cmdr: Commander, pipeline: Pipeline, step: Task, state: str, **fields) -> None:
    """Change a blocked step's state (queued, or skipped: final), here and in the `steps` the
    caller is walking."""
    t = now()
    final = dict(finished_at=t) if state in FINAL_STATES else {}
    moved = Task.update(state=state, updated_at=t, **final, **fields).where(
        (Task.id == step.id) & (Task.state == BLOCKED)).execute()
    step.state = state
    if not moved:  # it always moves under the write lock; checked so a signal follows only a change made here
        return
    details = dict(priority=step.priority, requires=step.requires, submitter=step.submitter, pipeline=pipeline.id,
                   step=step.step_key)
    if final:
        cmdr.signals.task_finished.send(
            cmdr, TaskFinished(tasks.get(step.id), BLOCKED, PIPELINE, details))
    else:
        events.publish(f"task.{state}", task=step.id, **details)
    events.publish("pipeline.step", task=step.id, pipeline=pipeline.id, step=step.step_key, state=state)


def render(template: str, parents: dict[str, Task], limit: int) -> str:
    """The prompt with each `{{ steps.KEY.FIELD }}` replaced (commander/templates.py: one pass, so
    text a parent wrote is never expanded again; each value cut to `limit` characters)."""

    def value(match) -> str:
        parent = parents[match[1]]
        return parent.state if match[2] == "state" else (getattr(parent, match[2]) or "")

    return templates.render(template, TEMPLATE, value, limit)
