from __future__ import annotations

from dataclasses import fields

from flask import Blueprint

from commander import provenance, tasks
from commander.agents import service as agents
from commander.auth import principal
from commander.exceptions import Invalid, NotFound
from commander.models import Task
from commander.routes import api_route, commander
from commander.schemas import ProvenanceOut, RejectIn, TaskList, TaskOut, TaskQuery, TaskSubmit, TaskWaitQuery

bp = Blueprint("tasks", __name__)

SPEC_FIELDS = {field.name for field in fields(tasks.TaskSpec)}


def task_out(task: Task, reasons: tasks.WaitingReasons | None = None) -> TaskOut:
    return TaskOut.of(task, (reasons or tasks.WaitingReasons(commander()))(task))


def submit_task(body: TaskSubmit) -> tuple[Task, bool]:
    """Store the task a TaskSubmit body asks for, as the caller (the API and the dashboard's form)."""
    caller = principal()
    if body.on_behalf_of and caller.token_id is None:
        raise Invalid("invalid_on_behalf_of", "a signed-in user submits as themself; on_behalf_of is for tokens")
    agents.check_files(commander())
    spec = tasks.TaskSpec(**body.model_dump(include=SPEC_FIELDS) | {"agent": agents.chosen(body.agent, caller.agent)})
    submitter = f"{caller.actor} for {body.on_behalf_of}" if body.on_behalf_of else caller.actor
    return tasks.submit(commander(), spec, **body.model_dump(exclude=SPEC_FIELDS | {"on_behalf_of"}),
                        submitter=submitter, token_id=caller.token_id)


def own(task: Task) -> Task:
    """The task, unless the caller is a token scoped to an agent and did not submit it (then it
    does not exist, as far as that token can tell)."""
    caller = principal()
    if caller.agent is not None and task.submitted_by_id != caller.token_id:
        raise NotFound("not_found", f"task {task.id} does not exist")
    return task


@api_route(bp, "POST", "/tasks", permission="tasks:submit", body=TaskSubmit, response=TaskOut, status=201, also=(200,),
           agent_scoped=True)
def submit(body: TaskSubmit):
    """Queue a prompt for the mesh; an idempotency key makes a retried submit return the first task."""
    task, created = submit_task(body)
    return task_out(task), 201 if created else 200


@api_route(bp, "GET", "/tasks", permission="tasks:read", query=TaskQuery, response=TaskList, agent_scoped=True)
def list_tasks(query: TaskQuery):
    """Tasks, newest first, filtered by state, node or agent; page with `before_id`."""
    reasons = tasks.WaitingReasons(commander())
    caller = principal()
    mine = dict(token_id=caller.token_id) if caller.agent is not None else {}
    return TaskList(tasks=[task_out(task, reasons) for task in tasks.listing(**query.model_dump(), **mine)])


@api_route(bp, "GET", "/tasks/<id:task_id>", permission="tasks:read", query=TaskWaitQuery, response=TaskOut,
           agent_scoped=True)
def get_task(task_id: int, query: TaskWaitQuery):
    """One task; with `wait`, hold the request up to that many seconds until the task is final."""
    own(tasks.get(task_id))
    return task_out(tasks.wait_final(commander(), task_id, query.wait))


@api_route(bp, "POST", "/tasks/<id:task_id>/approve", permission="tasks:approve", response=TaskOut)
def approve(task_id: int):
    """Approve a task awaiting approval: it joins the queue (its submitter may not approve it, by default, if a token)."""
    caller = principal()
    return task_out(tasks.decide(commander(), task_id, True, caller.actor, token_id=caller.token_id))


@api_route(bp, "POST", "/tasks/<id:task_id>/reject", permission="tasks:approve", body=RejectIn, response=TaskOut)
def reject(task_id: int, body: RejectIn):
    """Reject a task awaiting approval, with an optional reason: it is cancelled."""
    caller = principal()
    return task_out(tasks.decide(commander(), task_id, False, caller.actor, body.reason, token_id=caller.token_id))


@api_route(bp, "POST", "/tasks/<id:task_id>/cancel", permission="tasks:cancel", response=TaskOut, agent_scoped=True)
def cancel(task_id: int):
    """Cancel a task; a running one is stopped (its whole process group) at the node's next heartbeat."""
    own(tasks.get(task_id))
    return task_out(tasks.cancel(commander(), task_id))


@api_route(bp, "GET", "/tasks/<id:task_id>/provenance", permission="tasks:read", response=ProvenanceOut,
           agent_scoped=True)
def task_provenance(task_id: int):
    """The task's chain from its roots, with a verdict per link: a bundle `m3shd provenance verify` checks offline."""
    return ProvenanceOut(**provenance.bundle(commander(), own(tasks.get(task_id))))
