"""The `file_summary` tool: a summary of a text file under the Commander's `file_roots`, or of
one of the task's attached images, written by the small model (`summary_model`, Haiku) through
the anthropic SDK.

A file is named relative to a root (`notes/week.md`); a path holding `..`, an absolute path, or one
that resolves (symlinks followed) outside every root is refused, as is anything but a regular file.
A long text is cut into chunks of `summary_chunk_chars` (at line ends where it can), each summarised
on its own, then the summaries combined in one more call: a file of any size within
`summary_max_bytes` fits the model's context. The key is the one the Commander holds for its
N0D3S (`m3shd runners set-key`, the mesh-wide one), else the Commander's ANTHROPIC_API_KEY.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path, PurePosixPath
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from commander import attachments, credentials
from commander.models import Task
from commander.plugins.manager import ToolError

SUMMARY_TOKENS = 600
CHUNK_PROMPT = "Summarise this part ({n} of {total}) of the file {name} in a few sentences; keep names, numbers and dates:\n\n"
COMBINE_PROMPT = "These are summaries of the consecutive parts of the file {name}. Combine them into one summary:\n\n"
IMAGE_PROMPT = "Summarise what this image shows in a few sentences; keep any text, names and numbers in it."


class SummaryArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: Annotated[str, StringConstraints(min_length=1, max_length=1000)] | None = Field(
        None, description="a text file, relative to one of the Commander's file roots")
    attachment: int | None = Field(None, ge=1, le=20, description="or: the task's Nth attached image (from 1)")

    @model_validator(mode="after")
    def one_source(self):
        if (self.path is None) == (self.attachment is None):
            raise ValueError("give either path or attachment")
        return self


def located(roots: tuple[str, ...], name: str) -> Path:
    """The regular file `name` names under one of `roots`, symlinks followed; ToolError otherwise."""
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise ToolError("name a file relative to a file root, without ..")
    if not roots:
        raise ToolError("the Commander has no file roots to read from (file_roots)")
    for root in roots:
        base = Path(root).resolve()
        candidate = (base / relative).resolve()
        if not candidate.is_relative_to(base):
            raise ToolError(f"{name} leads outside the file roots")
        if candidate.is_file():
            return candidate
    raise ToolError(f"no file {name} under the file roots")


def chunks(text: str, size: int) -> list[str]:
    """`text` in pieces of at most `size` characters, cut after a line end when one is in the piece's second half."""
    pieces = []
    while len(text) > size:
        cut = text.rfind("\n", size // 2, size)
        cut = size if cut < 0 else cut + 1
        pieces.append(text[:cut])
        text = text[cut:]
    return [*pieces, text]  # the rest: never empty after a cut (an empty file is one empty piece)


def api_key(cmdr) -> str:
    stored = credentials.mesh_key(cmdr)
    key = stored or os.environ.get("ANTHROPIC_API_KEY")
    if not key:
        raise ToolError("the Commander has no API key for summaries: `m3shd runners set-key`")
    return key


def ask_model(client, model: str, content) -> str:
    from anthropic import APIError

    try:
        answer = client.messages.create(model=model, max_tokens=SUMMARY_TOKENS,
                                        messages=[{"role": "user", "content": content}])
    except APIError as exc:
        raise ToolError(f"the summary model failed: {exc}") from None
    return "".join(block.text for block in answer.content if block.type == "text").strip()


def file_summary(call, args: SummaryArgs) -> dict:
    from anthropic import Anthropic

    cmdr, settings = call.cmdr, call.cmdr.settings
    with cmdr.db.connection_context():
        key = api_key(cmdr)
        if args.attachment is not None:
            refs = Task.get_by_id(call.task_id).attachments
            if args.attachment > len(refs):
                raise ToolError(f"the task has {len(refs)} attachment(s), not {args.attachment}")
            ref = refs[args.attachment - 1]
            image = attachments.path_of(cmdr, ref["sha256"]).read_bytes()
    client = Anthropic(api_key=key, timeout=call.timeout, max_retries=1)
    if args.attachment is not None:
        source = {"type": "base64", "media_type": ref["media_type"], "data": base64.b64encode(image).decode()}
        summary = ask_model(client, settings.summary_model,
                            [{"type": "image", "source": source}, {"type": "text", "text": IMAGE_PROMPT}])
        return {"attachment": args.attachment, "summary": summary, "chunks": 1}
    path = located(settings.file_roots, args.path)
    if path.stat().st_size > settings.summary_max_bytes:
        raise ToolError(f"{args.path} is larger than summary_max_bytes ({settings.summary_max_bytes} bytes)")
    text = path.read_bytes().decode("utf-8", errors="replace")
    if "\x00" in text:
        raise ToolError(f"{args.path} is not a text file")
    pieces = chunks(text, settings.summary_chunk_chars)
    summaries = [ask_model(client, settings.summary_model,
                           CHUNK_PROMPT.format(n=n, total=len(pieces), name=args.path) + piece)
                 for n, piece in enumerate(pieces, 1)]
    summary = summaries[0] if len(summaries) == 1 else ask_model(
        client, settings.summary_model, COMBINE_PROMPT.format(name=args.path) + "\n\n".join(summaries))
    return {"path": args.path, "summary": summary, "chunks": len(pieces)}


def setup(manager) -> None:
    manager.tool("file_summary", "Summarise a text file under the Commander's file roots (path relative to a "
                                 "root), or one of this task's attached images (attachment: 1 for the first).",
                 SummaryArgs, file_summary, timeout=120)
