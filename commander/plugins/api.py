"""The plugin routes: what loaded (`tasks:read`, as agents are read), a task's tool calls
(`tasks:read`), and a N0D3's tool call under its lease (`work:execute`, signed)."""

from __future__ import annotations

from flask import Blueprint, g

from commander import tasks
from commander.auth import principal
from commander.plugins import calls
from commander.routes import api_route, commander
from commander.schemas import (
    PluginList, PluginOut, ToolCallIn, ToolCallList, ToolCallOut, ToolCallRecord, ToolOut,
)

bp = Blueprint("plugins", __name__)


@api_route(bp, "GET", "/plugins", permission="tasks:read", response=PluginList)
def list_plugins():
    """Every enabled plugin: loaded with its tools, or failed with the reason."""
    manager = commander().plugins
    return PluginList(plugins=[PluginOut(
        name=plugin.name, source=plugin.source, state=plugin.state, error=plugin.error,
        tools=[ToolOut(name=tool.name, description=tool.description, permission=tool.permission, timeout=tool.timeout,
                       max_result_chars=tool.max_result_chars, args_schema=tool.schema())
               for tool in (manager.tools[name] for name in plugin.tools)]) for plugin in manager.plugins])


@api_route(bp, "GET", "/tasks/<id:task_id>/tool-calls", permission="tasks:read", response=ToolCallList)
def task_tool_calls(task_id: int):
    """The [TOOL_CALL]s a task's model made, oldest first: arguments, outcome, result digest and time."""
    tasks.get(task_id)
    return ToolCallList(tool_calls=[ToolCallRecord(**row) for row in calls.listing(commander(), task_id)])


@api_route(bp, "POST", "/nodes/<id:node_id>/tool-calls", permission="work:execute", signed=True,
           body=ToolCallIn, response=ToolCallOut)
def call_tool(node_id: int, body: ToolCallIn):
    """Run a tool for a task this node holds a lease on; a refused or failed call answers ok=false and why."""
    answer = calls.run(commander(), g.node.id, principal().permissions, body.task_id, body.attempt, body.lease_token,
                       body.tool, body.args)
    return ToolCallOut(tool=answer.tool, ok=answer.ok, result=answer.result, error=answer.error)
