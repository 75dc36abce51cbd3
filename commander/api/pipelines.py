from __future__ import annotations

from flask import Blueprint

from commander import pipelines, tasks
from commander.agents import service as agents
from commander.auth import principal
from commander.models import Pipeline
from commander.routes import api_route, commander
from commander.schemas import PipelineOut, PipelineStep, PipelineSubmit

bp = Blueprint("pipelines", __name__)


def step_of(step: PipelineStep, token_agent: str | None) -> pipelines.Step:
    edges = tuple(pipelines.Edge(dep) if isinstance(dep, str) else pipelines.Edge(dep.step, dep.allow_failure)
                  for dep in step.depends_on)
    notify = step.notify.model_dump() if step.notify else None
    # A notify step's task holds its message template as its prompt, so the template is checked
    # like a prompt's (each placeholder names a parent) and rendered like one when it is due.
    return pipelines.Step(**step.model_dump(exclude={"depends_on", "agent", "prompt", "notify"}), depends_on=edges,
                          agent=agents.chosen(step.agent, token_agent), prompt=notify["message"] if notify else step.prompt,
                          notify=notify)


def pipeline_out(pipeline: Pipeline) -> PipelineOut:
    return PipelineOut.of(pipeline, pipelines.steps_of(pipeline.id).values(), tasks.WaitingReasons(commander()))


@api_route(bp, "POST", "/pipelines", permission="tasks:submit", body=PipelineSubmit, response=PipelineOut, status=201)
def submit(body: PipelineSubmit):
    """Submit a graph of steps in one call; a step runs once its parents are final and acceptable."""
    caller = principal()
    agents.check_files(commander())
    pipeline = pipelines.submit(commander(), [step_of(step, caller.agent) for step in body.steps], name=body.name,
                                submitter=caller.actor, token_id=caller.token_id)
    return pipeline_out(pipeline), 201


@api_route(bp, "GET", "/pipelines/<id:pipeline_id>", permission="tasks:read", response=PipelineOut)
def get_pipeline(pipeline_id: int):
    """A pipeline: its state, and each step with its parents and state, in dependency order."""
    return pipeline_out(pipelines.get(pipeline_id))


@api_route(bp, "POST", "/pipelines/<id:pipeline_id>/cancel", permission="tasks:cancel", response=PipelineOut)
def cancel(pipeline_id: int):
    """Cancel a pipeline: blocked and queued steps end now, running ones at their node's next heartbeat."""
    return pipeline_out(pipelines.cancel(commander(), pipeline_id))
