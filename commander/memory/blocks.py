"""[REMEMBER] blocks: what an agent asks to remember, written into its answer.

The grammar (docs/memory.md says it for agent authors):

    [REMEMBER]value[/REMEMBER]
    [REMEMBER]key: value[/REMEMBER]
    [REMEMBER tags=deploy,pi scope=shared]key: value
    that may run over several lines[/REMEMBER]

- The tags are upper case, as written; a block ends at the first `[/REMEMBER]`.
- The opening tag is `[REMEMBER]`, or `[REMEMBER` and attributes `name=value` separated by spaces,
  then `]`, on one line. Attributes: `tags` (comma-separated, each 1–40 letters, digits, `_.-`, at
  most 10) and `scope` (only `shared`: every agent's memories; without it the task's agent's own).
- The key is the text before the first `:` of the body's first line, when that is 1–80
  characters; else the block has no key. A body starting with `:` has no key either (so a value
  whose first line holds a colon is written `[REMEMBER]: ratio 3:2[/REMEMBER]`). Key and value are
  trimmed; the value may not be empty.
- Storing a key the scope holds already replaces its value.

Malformed blocks (an unknown attribute, an empty value, a block opened inside another, one never
closed) are reported, never raised. A well-formed block is cut from the answer shown to people
even when it is not stored (too long, over the per-task count): it was meant for the memory, not
them. A block never closed is left in the answer, with everything after it.

One pass over the text with str.find: linear in its length, whatever it holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

OPEN, CLOSE = "[REMEMBER", "[/REMEMBER]"
TAG_LINE = 300    # an opening tag longer than this is not one
KEY_LONGEST = 80
TAG = re.compile(r"^[\w.-]{1,40}$")
MOST_TAGS = 10
SCOPES = ("shared",)


@dataclass(frozen=True)
class Block:
    key: str | None
    value: str
    tags: tuple[str, ...] = ()
    scope: str | None = None  # None: the task's agent


@dataclass
class Found:
    blocks: list[Block] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    shown: str = ""           # the text with its well-formed blocks cut out


def parse(text: str, value_max: int, most: int) -> Found:
    """The blocks of `text` (at most `most`, each value at most `value_max` characters), the
    problems met, and the text without them."""
    found, kept, start, at, number = Found(), [], 0, 0, 0
    while (at := text.find(OPEN, at)) >= 0:
        after = at + len(OPEN)
        if after < len(text) and text[after] not in "] \t":
            at = after  # [REMEMBERED …: not a tag
            continue
        number += 1
        closing_bracket = text.find("]", after, after + TAG_LINE)
        if closing_bracket < 0 or "\n" in text[after:closing_bracket]:
            found.problems.append(f"block {number}: its opening tag has no `]` on its line")
            at = after
            continue
        end = text.find(CLOSE, closing_bracket)
        if end < 0:
            found.problems.append(f"block {number}: no [/REMEMBER] closes it (it stays in the answer)")
            break
        inner = text.find(OPEN, closing_bracket, end)
        if inner >= 0:
            found.problems.append(f"block {number}: another [REMEMBER opens before it is closed")
            at = inner
            continue
        block, problem = _block(text[after:closing_bracket], text[closing_bracket + 1:end])
        if problem is None and len(block.value) > value_max:
            problem = f"its value has {len(block.value)} characters; at most {value_max} are stored"
        if problem is None and len(found.blocks) == most:
            problem = f"only {most} blocks of a task are stored"
        if problem:
            found.problems.append(f"block {number}: {problem}")
        else:
            found.blocks.append(block)
        stop = end + len(CLOSE)
        if (at == 0 or text[at - 1] == "\n") and text.startswith("\n", stop):
            stop += 1  # a block on lines of its own takes its line break with it
        kept.append(text[start:at])
        start = at = stop
    kept.append(text[start:])
    found.shown = "".join(kept) if start else text
    return found


def _block(attributes: str, body: str) -> tuple[Block | None, str | None]:
    tags, scope = (), None
    for attribute in attributes.split():
        name, equals, value = attribute.partition("=")
        if name == "tags" and equals:
            tags = tuple(tag for tag in value.split(",") if tag)
            if len(tags) > MOST_TAGS or not all(TAG.match(tag) for tag in tags):
                return None, f"tags must be at most {MOST_TAGS} words of letters, digits, `_`, `.` or `-`"
        elif name == "scope" and value in SCOPES:
            scope = value
        else:
            return None, f"unknown attribute {attribute[:40]!r} (known: tags=a,b and scope=shared)"
    first_line = body.lstrip().split("\n", 1)[0]
    colon = first_line.find(":")
    key = None
    if 0 <= colon <= KEY_LONGEST:
        key = first_line[:colon].strip() or None
        body = body.lstrip()[colon + 1:]
    value = body.strip()
    if not value:
        return None, "its value is empty"
    return Block(key, value, tags, scope), None


def shown(text: str | None) -> str | None:
    """An answer as people see it: without its well-formed [REMEMBER] blocks."""
    if not text or OPEN not in text:
        return text
    return parse(text, len(text), len(text)).shown
