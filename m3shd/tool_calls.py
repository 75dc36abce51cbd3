"""The [TOOL_CALL] grammar: how a model asks the mesh to run a tool mid-task, and how the answer
goes back to it. Shared by the Commander (which puts the grammar in the system prompt a lease
carries) and the N0D3 (which finds calls in a model's output); standard library only.

A call is one marker in the model's answer:

    [TOOL_CALL]{"tool": "web_search", "args": {"query": "raspberry pi 5 power"}}[/TOOL_CALL]

The text between the markers is one JSON object with `tool` (a name) and `args` (an object,
may be omitted for a tool that takes none). Only the first call of an answer runs; the model
gets its result as the next user turn:

    [TOOL_RESULT]{"tool": "web_search", "ok": true, "result": ...}[/TOOL_RESULT]

or, for a call that was refused, failed or did not parse, `"ok": false` and an `error` saying
why, so the model can correct itself. An answer with no marker is the task's final answer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

OPEN, CLOSE = "[TOOL_CALL]", "[/TOOL_CALL]"
RESULT_OPEN, RESULT_CLOSE = "[TOOL_RESULT]", "[/TOOL_RESULT]"
NAME = r"^[a-z][a-z0-9_]{0,63}$"
_NAME = re.compile(NAME)

GRAMMAR = f"""## Tools
You may call a tool of the mesh by writing, as the last thing in your answer, exactly one marker:
{OPEN}{{"tool": "NAME", "args": {{...}}}}{CLOSE}
The text between the markers must be one JSON object: "tool" is a tool name below and "args" an
object matching that tool's JSON schema. Stop writing after the marker. The result comes back as
{RESULT_OPEN}{{"tool": "NAME", "ok": true, "result": ...}}{RESULT_CLOSE} (or "ok": false with an
"error"); then carry on. Without a marker, your answer is final."""


@dataclass(frozen=True)
class Call:
    tool: str
    args: dict


class Malformed(ValueError):
    """The answer has a marker, but no call in it can be run; the message is for the model."""


def find(text: str) -> Call | None:
    """The first call in a model's answer, None if it has no marker; raises Malformed when the
    marker is there but what it holds is not a call."""
    start = text.find(OPEN)
    if start < 0:
        return None
    end = text.find(CLOSE, start)
    if end < 0:
        raise Malformed(f"{OPEN} is never closed by {CLOSE}")
    body = text[start + len(OPEN):end].strip()
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise Malformed(f"the text between the markers is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tool"), str):
        raise Malformed('the call must be a JSON object with a "tool" name')
    if not _NAME.fullmatch(data["tool"]):
        raise Malformed(f"{data['tool']!r} is not a tool name")
    args = data.get("args", {})
    if not isinstance(args, dict):
        raise Malformed('"args" must be a JSON object')
    unknown = set(data) - {"tool", "args"}
    if unknown:
        raise Malformed(f"unknown keys in the call: {', '.join(sorted(unknown))}")
    return Call(data["tool"], args)


def result_text(tool: str | None, ok: bool, result=None, error: str | None = None) -> str:
    """The next user turn: the tool's answer, or why there is none."""
    body = {"tool": tool, "ok": ok, **({"result": result} if ok else {"error": error})}
    return RESULT_OPEN + json.dumps(body, ensure_ascii=False, separators=(",", ":")) + RESULT_CLOSE


def section(tools: list[dict]) -> str:
    """The system prompt's tools section: the grammar, then each tool with its schema.
    `tools`: [{name, description, schema}], in the order to show them."""
    lines = [GRAMMAR, "", "Tools you may call:"]
    for tool in tools:
        schema = json.dumps(tool["schema"], sort_keys=True, separators=(",", ":"))
        lines.append(f"- {tool['name']}: {tool['description']} Arguments (JSON schema): {schema}")
    return "\n".join(lines)
