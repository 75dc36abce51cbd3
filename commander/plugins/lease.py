"""What a lease carries for the tools its agent may call, and what provenance recomputes from it.

A task whose agent lists `plugin_tools` gets, in its lease, the tools section (the [TOOL_CALL]
grammar and each tool's schema, m3shd/tool_calls.py) after the agent's system prompt, the
tools' names and the round bound. The section is stored with the task (TaskTools) when it is
leased, because the plugins loaded may differ by the time the result is checked: the result is
bound to the system prompt its node ran (wire.run_sha256), which `system_prompt` rebuilds.
"""

from __future__ import annotations

import math

from commander.models import TaskTools
from m3shd import tool_calls


def section(cmdr, agent: str, version: int, plugin_tools: list[str]) -> tuple[str, tuple[str, ...]]:
    """The tools section for an agent version and the tool names in it ("" and () when none of
    its tools is loaded), cached per worker: the loaded plugins change only with a restart."""
    def load():
        offered = [cmdr.plugins.tools[name] for name in plugin_tools if name in cmdr.plugins.tools]
        if not offered:
            return "", ()
        return tool_calls.section([tool.described() for tool in offered]), tuple(tool.name for tool in offered)

    return cmdr.cached(f"tools-section:{agent}:{version}", math.inf, load)


def combined(system_prompt: str | None, tools_section: str | None) -> str:
    """The system prompt a N0D3 runs: the agent's, then the tools section."""
    return "\n\n".join(part for part in (system_prompt, tools_section) if part)


def extend(cmdr, task_id: int, lease: dict, plugin_tools: list[str]) -> dict:
    """Inside the claim's write transaction: add the tools to a lease, and keep its section."""
    if not plugin_tools:
        return lease
    text, names = section(cmdr, lease["agent"], lease["agent_version"], plugin_tools)
    if not text:
        return lease
    TaskTools.insert(task=task_id, section=text).on_conflict(
        conflict_target=[TaskTools.task], update={TaskTools.section: text}).execute()
    return dict(lease, system_prompt=combined(lease["system_prompt"], text), tools=list(names),
                tool_rounds=cmdr.settings.tool_rounds)


def system_prompt(profile_prompt: str | None, task_id: int) -> str:
    """The system prompt a task's lease carried: its agent's, with the tools section if it had one."""
    found = TaskTools.get_or_none(TaskTools.task == task_id)
    return combined(profile_prompt, found.section if found else None)
