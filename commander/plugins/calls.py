"""A [TOOL_CALL] from a running task (m3shd/tool_calls.py), sent by its node under the lease.

The call is answered only while the lease holds (the same fence as results: node, attempt and
lease token), and is refused, with the reason as the answer, when the attempt has used its
`tool_rounds`, the tool is not one the task's agent may use (its profile's `plugin_tools`),
no loaded plugin offers it, the node's token lacks the tool's permission, or the arguments do
not fit the tool's schema. Otherwise the handler runs, bounded by the tool's timeout, and its
result (as JSON) is cut to the tool's size cap. Every call, refused or not, is kept on the task
(ToolCall: arguments encrypted, the result as a SHA-256 and a size) with an event.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass

from peewee import fn
from pydantic import ValidationError

from commander import events, templates
from commander.agents import service as agents
from commander.db import Compiled, CompiledInsert, Param
from commander.errors import describe_validation
from commander.exceptions import Conflict
from commander.models import LEASED, Task, ToolCall
from commander.plugins.manager import Call, Tool, ToolError
from m3shd import wire

log = logging.getLogger("m3shd.commander.plugins")


@dataclass(frozen=True)
class Answer:
    tool: str
    ok: bool
    result: object = None
    error: str | None = None


# A call's queries, compiled once (db.Compiled): building their SQL cost more than running them.
HELD = Compiled(Task, lambda: Task.select(Task.id, Task.agent, Task.agent_version).where(
    (Task.id == Param("task_id")) & (Task.node == Param("node_id")) & (Task.state == LEASED)
    & (Task.attempt == Param("attempt")) & (Task.lease_token == Param("lease_token"))))
ROUNDS = Compiled(ToolCall, lambda: ToolCall.select(fn.COUNT(ToolCall.id)).where(
    (ToolCall.task == Param("task_id")) & (ToolCall.attempt == Param("attempt"))))
RECORD = CompiledInsert(ToolCall)


def holding(node_id: int, task_id: int, attempt: int, lease_token: str) -> Task:
    """The task (id, agent, version) whose lease this node holds, or Conflict (stale_lease) as for a result."""
    found = HELD.rows(task_id=task_id, node_id=node_id, attempt=attempt, lease_token=lease_token)
    if not found:
        raise Conflict("stale_lease", f"attempt {attempt} of task {task_id} does not hold a lease on this node")
    return found[0]


def allowed_tools(cmdr, task: Task) -> list[str]:
    if task.agent is None:
        return []
    return list(agents.version_of(cmdr, task.agent, task.agent_version).profile.plugin_tools)


def refusal(cmdr, task: Task, attempt: int, name: str, permissions: frozenset[str]) -> str | None:
    """Why this call may not run, or None."""
    if ROUNDS.tuples(task_id=task.id, attempt=attempt)[0][0] >= cmdr.settings.tool_rounds:
        return f"this attempt has used its {cmdr.settings.tool_rounds} tool calls; answer without tools"
    if name not in allowed_tools(cmdr, task):
        return f"agent {task.agent} may not use the tool {name!r}"
    tool = cmdr.plugins.tools.get(name)
    if tool is None:
        return f"no loaded plugin offers the tool {name!r}"
    if tool.permission not in permissions:
        return f"this node may not use {name!r}: it needs the {tool.permission} permission"
    return None


def run(cmdr, node_id: int, permissions: frozenset[str], task_id: int, attempt: int, lease_token: str,
        name: str, args: dict) -> Answer:
    started = time.monotonic()
    task = holding(node_id, task_id, attempt, lease_token)
    error = refusal(cmdr, task, attempt, name, permissions)
    answer = Answer(name, False, error=error) if error else execute(cmdr, cmdr.plugins.tools[name], task, args)
    text = json.dumps(answer.result, ensure_ascii=False, separators=(",", ":")) if answer.ok else ""
    with cmdr.writing(wake=False):
        holding(node_id, task_id, attempt, lease_token)  # again under the lock: the lease may have moved on
        RECORD.create(task=task.id, attempt=attempt, tool=name[:64], args=cmdr.box.encrypt(json.dumps(args).encode()),
                        ok=answer.ok, error=answer.error, result_sha256=wire.sha256_hex(text.encode()) if answer.ok else None,
                        result_chars=len(text), duration_ms=int((time.monotonic() - started) * 1000))
        events.publish("task.tool_call", task=task.id, attempt=attempt, tool=name[:64], ok=answer.ok)
    return answer


def execute(cmdr, tool: Tool, task: Task, args: dict) -> Answer:
    """Run the handler with the checked arguments, in a thread bounded by the tool's timeout."""
    try:
        parsed = tool.args.model_validate(args)
    except ValidationError as exc:
        return Answer(tool.name, False, error=f"invalid arguments: {describe_validation(exc)}")
    done: dict = {}

    def work():
        try:
            done["result"] = tool.handler(Call(cmdr, task.id, task.agent, tool.timeout), parsed)
        except ToolError as exc:
            done["error"] = str(exc)
        except Exception as exc:  # a plugin's bug: the model hears that it failed, the log hears why
            log.exception("tool %s (plugin %s) failed on task %s", tool.name, tool.plugin, task.id)
            done["error"] = f"the tool failed ({type(exc).__name__})"

    worker = threading.Thread(target=work, name=f"tool-{tool.name}", daemon=True)
    worker.start()
    worker.join(tool.timeout)
    if worker.is_alive():
        return Answer(tool.name, False, error=f"the tool took longer than {tool.timeout:g} s")
    if "error" in done:
        return Answer(tool.name, False, error=done["error"])
    try:
        text = json.dumps(done.get("result"), ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return Answer(tool.name, False, error="the tool's result is not JSON")
    if len(text) > tool.max_result_chars:
        return Answer(tool.name, True, templates.cut(text, tool.max_result_chars))
    return Answer(tool.name, True, done.get("result"))


def listing(cmdr, task_id: int) -> list[dict]:
    """A task's tool calls, oldest first, their arguments decrypted."""
    return [dict(attempt=row.attempt, tool=row.tool, args=json.loads(cmdr.box.decrypt(row.args)), ok=row.ok,
                 error=row.error, result_sha256=row.result_sha256, result_chars=row.result_chars,
                 duration_ms=row.duration_ms, created_at=row.created_at)
            for row in ToolCall.select().where(ToolCall.task == task_id).order_by(ToolCall.id)]
