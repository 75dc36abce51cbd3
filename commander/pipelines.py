"""Pipelines: a graph of steps submitted in one call, each step a task.

A step with parents is stored `blocked`. Whenever a step becomes final, `advance` runs in the
same write transaction: steps whose parents are all final and acceptable (succeeded, or the
edge allows failure) are queued with their parents' outputs rendered into their prompts, after
the parents' signatures and chain hashes have been verified; steps that a parent rules out
become `skipped` (a final state of its own: they never ran, nobody cancelled them); a chain
that fails verification stops the pipeline. The pipeline is final once every step is.
"""

from __future__ import annotations

import re

from commander import events, provenance, tasks
from commander.context import Commander
from commander.errors import ApiError
from commander.models import BLOCKED, CANCELLED, FAILED, FINAL_STATES, QUEUED, RUNNING, SKIPPED, SUCCEEDED, Pipeline, Task, now
from commander.schemas import Dependency, PipelineStep, PipelineSubmit

# `{{ steps.KEY.FIELD }}`: the only thing a step's prompt can pull from another step.
TEMPLATE = re.compile(r"\{\{\s*steps\.([A-Za-z0-9_-]+)\.(output|error|state)\s*\}\}")


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_pipeline", message)


def edges(step: PipelineStep) -> list[Dependency]:
    return [Dependency(step=dep) if isinstance(dep, str) else dep for dep in step.depends_on]


def dependency_order(body: PipelineSubmit) -> list[PipelineStep]:
    """The steps with every one after its parents; raises a 400 naming the first problem found."""
    steps: dict[str, PipelineStep] = {}
    for step in body.steps:
        if step.key in steps:
            raise invalid(f"duplicate step key {step.key!r}")
        steps[step.key] = step
    for step in body.steps:
        if not step.prompt.strip():
            raise invalid(f"step {step.key!r} has an empty prompt")
        parents = [dep.step for dep in edges(step)]
        for parent in parents:
            if parent not in steps:
                raise invalid(f"step {step.key!r} depends on unknown step {parent!r}")
        if len(set(parents)) != len(parents):
            raise invalid(f"step {step.key!r} names the same parent twice")
        for match in TEMPLATE.finditer(step.prompt):
            if match[1] not in parents:
                raise invalid(f"step {step.key!r} uses {match[0]} but does not depend on {match[1]!r}")
    order: list[PipelineStep] = []
    done: set[str] = set()
    path: list[str] = []  # the steps being visited: meeting one again closes a cycle

    def visit(key: str) -> None:
        if key in done:
            return
        if key in path:
            cycle = path[path.index(key):] + [key]
            raise invalid(f"the steps form a cycle: {' → '.join(cycle)}")
        path.append(key)
        for dep in edges(steps[key]):
            visit(dep.step)
        path.pop()
        done.add(key)
        order.append(steps[key])

    for key in steps:
        visit(key)
    return order


def submit(cmdr: Commander, body: PipelineSubmit, token_id: int | None, submitter: str) -> Pipeline:
    """Store the pipeline and its steps (roots queued, the rest blocked) in one transaction."""
    order = dependency_order(body)
    with cmdr.writing():
        pipeline = Pipeline.create(name=body.name, submitter=submitter, submitted_by=token_id)
        task_ids: dict[str, int] = {}
        for step in order:
            parents = [dict(task_id=task_ids[dep.step], step=dep.step, allow_failure=dep.allow_failure)
                       for dep in edges(step)]
            task = Task.create(**tasks.new_task_fields(cmdr, step, token_id, submitter), backoff=cmdr.settings["retry_backoff"],
                               pipeline=pipeline.id, step_key=step.key, depends_on=parents,
                               state=BLOCKED if parents else QUEUED)
            task_ids[step.key] = task.id
            events.publish(f"task.{task.state}", task=task.id, priority=task.priority, requires=task.requires,
                           submitter=submitter, pipeline=pipeline.id, step=step.key)
        events.publish("pipeline.submitted", pipeline=pipeline.id, name=body.name, steps=len(order))
    return pipeline


def get(pipeline_id: int) -> Pipeline:
    pipeline = Pipeline.get_or_none(Pipeline.id == pipeline_id)
    if pipeline is None:
        raise ApiError(404, "not_found", f"pipeline {pipeline_id} does not exist")
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
            raise ApiError(409, "already_final", f"pipeline {pipeline_id} is already {pipeline.state}")
        end(pipeline, steps_of(pipeline_id), CANCELLED, "pipeline cancelled")
    return get(pipeline_id)


def end(pipeline: Pipeline, steps: dict[int, Task], state: str, reason: str | None) -> None:
    """Finish the pipeline in `state`, cancelling the steps that are not final yet."""
    t = now()
    for step in steps.values():
        if step.state not in FINAL_STATES:
            Task.update(state=CANCELLED, error=reason, finished_at=t, updated_at=t).where(
                (Task.id == step.id) & Task.state.not_in(FINAL_STATES)).execute()
            events.publish("task.cancelled", task=step.id, previous=step.state, node=step.node_id,
                           pipeline=pipeline.id, step=step.step_key)
    Pipeline.update(state=state, error=reason, finished_at=t).where(
        Pipeline.id == pipeline.id).execute()
    events.publish(f"pipeline.{state}", pipeline=pipeline.id, reason=reason)


def advance(cmdr: Commander, finished: Task) -> None:
    """Run inside the transaction that just made `finished` final: move its pipeline on."""
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
                move(pipeline, step, SKIPPED, error=f"skipped: parent step {', '.join(refused)} did not succeed")
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
                end(pipeline, steps, FAILED, reason)
                return
            move(pipeline, step, QUEUED, prompt=render(step.prompt, {p.step_key: p for p, _ in parents},
                                                      cmdr.settings["pipeline_inject_limit"]))
    if all(step.state in FINAL_STATES for step in steps.values()):
        state = SUCCEEDED if all(step.state == SUCCEEDED for step in steps.values()) else FAILED
        not_done = sorted(step.step_key for step in steps.values() if step.state != SUCCEEDED)
        end(pipeline, steps, state, f"steps that did not succeed: {', '.join(not_done)}" if not_done else None)


def move(pipeline: Pipeline, step: Task, state: str, **fields) -> None:
    """Change a blocked step's state, here and in the `steps` the caller is walking."""
    t = now()
    final = dict(finished_at=t) if state in FINAL_STATES else {}
    Task.update(state=state, updated_at=t, **final, **fields).where((Task.id == step.id) & (Task.state == BLOCKED)).execute()
    step.state = state
    events.publish(f"task.{state}", task=step.id, priority=step.priority, requires=step.requires,
                   submitter=step.submitter, pipeline=pipeline.id, step=step.step_key)
    events.publish("pipeline.step", task=step.id, pipeline=pipeline.id, step=step.step_key, state=state)


def render(template: str, parents: dict[str, Task], limit: int) -> str:
    """The prompt with each `{{ steps.KEY.FIELD }}` replaced in one pass (so text a parent wrote
    is never expanded again), each value cut to `limit` characters with a marker saying so."""

    def value(match: re.Match) -> str:
        parent = parents[match[1]]
        text = parent.state if match[2] == "state" else (getattr(parent, match[2]) or "")
        if len(text) <= limit:
            return text
        return text[:limit] + f"\n[m3shd: cut to {limit} of {len(text)} characters]"

    return TEMPLATE.sub(value, template)


def as_dict(pipeline: Pipeline) -> dict:
    return dict(
        id=pipeline.id, name=pipeline.name, state=pipeline.state, submitter=pipeline.submitter,
        error=pipeline.error, created_at=pipeline.created_at, finished_at=pipeline.finished_at,
        steps=[dict(key=step.step_key, task_id=step.id, state=step.state, node_id=step.node_id, attempt=step.attempt,
                    output=step.output, error=step.error,
                    depends_on=[dict(step=dep["step"], task_id=dep["task_id"], allow_failure=dep["allow_failure"])
                                for dep in step.depends_on])
               for step in steps_of(pipeline.id).values()],
    )
