from __future__ import annotations

from flask import Blueprint

from commander import pipelines
from commander.routing import api_route, commander, principal
from commander.schemas import PipelineOut, PipelineSubmit

bp = Blueprint("pipelines", __name__)


@api_route(bp, "POST", "/pipelines", permission="tasks:submit", body=PipelineSubmit, response=PipelineOut, status=201)
def submit(body: PipelineSubmit):
    """Submit a graph of steps in one call; a step runs once its parents are final and acceptable."""
    caller = principal()
    return PipelineOut(**pipelines.as_dict(pipelines.submit(commander(), body, caller.token_id, caller.actor))), 201


@api_route(bp, "GET", "/pipelines/<id:pipeline_id>", permission="tasks:read", response=PipelineOut)
def get_pipeline(pipeline_id: int):
    """A pipeline: its state, and each step with its parents and state, in dependency order."""
    return PipelineOut(**pipelines.as_dict(pipelines.get(pipeline_id)))


@api_route(bp, "POST", "/pipelines/<id:pipeline_id>/cancel", permission="tasks:cancel", response=PipelineOut)
def cancel(pipeline_id: int):
    """Cancel a pipeline: blocked and queued steps end now, running ones at their node's next heartbeat."""
    return PipelineOut(**pipelines.as_dict(pipelines.cancel(commander(), pipeline_id)))
