"""Prompt templates: `{{ ROOT.a.b }}` placeholders filled in one pass, each value size-capped.

One engine for the two places a prompt is written before its data exists: a pipeline step's
`{{ steps.KEY.output }}` (commander/pipelines.py) and a webhook rule's `{{ event.pull_request.title }}`
(commander/webhooks/). There is nothing to evaluate: a placeholder is a dotted path, looked up by
the caller's `value`, never an attribute or a call; text a value brings is never expanded again,
because the substitution is one pass over the template.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

SEGMENT = r"[A-Za-z0-9_-]+"


class RenderError(Exception):
    """A placeholder names something the data does not have."""


def placeholder(root: str, path: str = rf"({SEGMENT}(?:\.{SEGMENT})*)") -> re.Pattern:
    """`{{ root.PATH }}`, spaces inside the braces optional; `path`'s groups are the match's."""
    return re.compile(r"\{\{\s*" + re.escape(root) + r"\." + path + r"\s*\}\}")


def cut(text: str, limit: int) -> str:
    """`text`, or its first `limit` characters and a marker saying how much there was."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[m3shd: cut to {limit} of {len(text)} characters]"


def render(template: str, pattern: re.Pattern, value: Callable[[re.Match], str], limit: int) -> str:
    """The template with every match of `pattern` replaced by `value(match)` cut to `limit`, in one pass."""
    return pattern.sub(lambda match: cut(value(match), limit), template)


def json_value(document, path: str) -> str:
    """The value at dotted `path` in a JSON document (object keys; list indexes as numbers), as
    text: a string as it is, null as nothing, anything else as compact JSON."""
    found = document
    for key in path.split("."):
        if isinstance(found, dict) and key in found:
            found = found[key]
        elif isinstance(found, list) and key.isdigit() and int(key) < len(found):
            found = found[int(key)]
        else:
            raise RenderError(f"the event has no {path!r}")
    if isinstance(found, str):
        return found
    return "" if found is None else json.dumps(found, separators=(",", ":"), ensure_ascii=False)
