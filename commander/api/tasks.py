from __future__ import annotations

from dataclasses import fields

from flask import Blueprint

from commander import provenance, tasks
from commander.auth import principal
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
    return tasks.submit(commander(), tasks.TaskSpec(**body.model_dump(include=SPEC_FIELDS)),
                        **body.model_dump(exclude=SPEC_FIELDS), submitter=caller.actor, token_id=caller.token_id)


@api_route(bp, "POST", "/tasks", permission="tasks:submit", body=TaskSubmit, response=TaskOut, status=201, also=(200,))
def submit(body: TaskSubmit):
    """Queue a prompt for the mesh; an idempotency key makes a retried submit return the first task."""
    task, created = submit_task(body)
    return task_out(task), 201 if created else 200


@api_route(bp, "GET", "/tasks", permission="tasks:read", query=TaskQuery, response=TaskList)
def list_tasks(query: TaskQuery):
    """Tasks, newest first, filtered by state or node; page with `before_id`."""
    reasons = tasks.WaitingReasons(commander())
    return TaskList(tasks=[task_out(task, reasons) for task in tasks.listing(**query.model_dump())])


@api_route(bp, "GET", "/tasks/<id:task_id>", permission="tasks:read", query=TaskWaitQuery, response=TaskOut)
def get_task(task_id: int, query: TaskWaitQuery):
    """One task; with `wait`, hold the request up to that many seconds until the task is final."""
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


@api_route(bp, "POST", "/tasks/<id:task_id>/cancel", permission="tasks:cancel", response=TaskOut)
def cancel(task_id: int):
    """Cancel a task; a running one is stopped (its whole process group) at the node's next heartbeat."""
    return task_out(tasks.cancel(commander(), task_id))


@api_route(bp, "GET", "/tasks/<id:task_id>/provenance", permission="tasks:read", response=ProvenanceOut)
def task_provenance(task_id: int):
    """The task's chain from its roots, with a verdict per link: a bundle `m3shd provenance verify` checks offline."""
    return ProvenanceOut(**provenance.bundle(commander(), tasks.get(task_id)))
