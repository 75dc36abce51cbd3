"""What an event starts: the first rule it matches, its templates rendered from the event's
JSON (commander/templates.py: `{{ event.a.b }}` paths, nothing else), and the task or pipeline.

The rendered prompts are checked as a submitted one would be (not blank, not over the schema's
200,000 characters); a rendering that fails starts nothing and says why (RenderError).
"""

from __future__ import annotations

from commander import pipelines, tasks, templates
from commander.agents import service as agents
from commander.api.pipelines import step_of
from commander.context import Commander
from commander.models import Webhook
from commander.schemas import PipelineStep
from commander.templates import RenderError

EVENT = templates.placeholder("event")
MAX_PROMPT = 200_000  # commander/schemas.py's Prompt


def matching(rules: list[dict], event: str, action: str | None, document: dict) -> dict | None:
    """The first rule for `event` whose actions (if any) include `action` and whose `when` paths
    all hold the values it names."""
    for rule in rules:
        if rule["event"] != event or (rule.get("actions") and action not in rule["actions"]):
            continue
        if all(found(document, path) == value for path, value in rule.get("when", {}).items()):
            return rule
    return None


def found(document, path: str):
    """The value at a dotted path, or None where there is none."""
    for key in path.split("."):
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def render(template: str, document: dict, limit: int) -> str:
    prompt = templates.render(template, EVENT, lambda match: templates.json_value(document, match[1]), limit)
    if not prompt.strip():
        raise RenderError("the rendered prompt is blank")
    if len(prompt) > MAX_PROMPT:
        raise RenderError(f"the rendered prompt has {len(prompt):,} characters, more than {MAX_PROMPT:,}")
    return prompt


def start(cmdr: Commander, hook: Webhook, rule: dict, document: dict) -> tuple[list[int], int | None]:
    """Start the rule's task or pipeline for this event; returns (task ids, pipeline id). Raises
    RenderError, or the domain's errors a submit raises (an unknown agent, a spend cap that refuses)."""
    limit, submitter = cmdr.settings.webhook_value_limit, f"webhook:{hook.name}"
    agents.check_files(cmdr)
    if "task" in rule:
        given = rule["task"]
        spec = tasks.TaskSpec(prompt=render(given["prompt"], document, limit), requires=given.get("requires", ()),
                              priority=given.get("priority", 0), agent=given.get("agent"))
        task, _ = tasks.submit(cmdr, spec, submitter=submitter, approval_required=given.get("approval_required", False))
        return [task.id], None
    given = rule["pipeline"]
    steps = [step_of(PipelineStep.model_validate({**step, "prompt": render(step["prompt"], document, limit)}), None)
             for step in given["steps"]]
    pipeline = pipelines.submit(cmdr, steps, submitter=submitter, name=given.get("name", ""))
    return sorted(pipelines.steps_of(pipeline.id)), pipeline.id
