"""An agent profile as text: Markdown with TOML front matter (the body is the system prompt), or
TOML alone with a `system_prompt` key; parsed and validated into a `Profile`.

    +++
    name = "code-reviewer"
    title = "Code reviewer"
    model = "claude-sonnet-5-5"
    allowed_tools = ["Read", "Grep", "Glob"]
    +++
    ## Role
    ...

docs/agents.md describes every key. A profile that does not parse raises ProfileError with one
line per problem, so a file's author (or `m3shd agents edit`) is told exactly what to fix.
"""

from __future__ import annotations

import tomllib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from commander.errors import describe_validation
from commander.schemas import Capability
from m3shd import tool_calls

FENCE = "+++"
MAX_PROFILE_CHARS = 100_000
SLUG = r"^[a-z][a-z0-9-]{1,39}$"
Slug = Annotated[str, StringConstraints(pattern=SLUG)]
ModelId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@/-]+$")]
# A Claude Code tool or permission rule: `Read`, `Bash(git diff:*)`, `mcp__github__get_issue`.
Tool = Annotated[str, StringConstraints(max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_-]*(\([^()\n]*\))?$")]
PluginTool = Annotated[str, StringConstraints(pattern=tool_calls.NAME)]
# The sections a shipped (bench) profile's prompt must have; a user's profile may be free-form.
BENCH_SECTIONS = ("## Role", "## How you work", "## Output", "## Boundaries")


class ProfileError(ValueError):
    """The profile text does not parse or validate; the message says what to fix."""


class Profile(BaseModel):
    """A profile's settings; `system_prompt` is the Markdown body (or the TOML key)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: Slug
    title: Annotated[str, StringConstraints(max_length=80)] = ""
    description: Annotated[str, StringConstraints(max_length=300)] = ""
    model: ModelId | None = None
    allowed_models: Annotated[list[ModelId], Field(max_length=32)] = []
    requires: Annotated[list[Capability], Field(max_length=32)] = []
    prefers: Annotated[list[Capability], Field(max_length=32)] = []
    allowed_tools: Annotated[list[Tool], Field(max_length=128)] = []
    disallowed_tools: Annotated[list[Tool], Field(max_length=128)] = []
    plugin_tools: Annotated[list[PluginTool], Field(max_length=32)] = []  # [TOOL_CALL] tools (commander/plugins)
    max_turns: Annotated[int, Field(ge=1, le=500)] | None = None
    timeout: Annotated[int, Field(ge=1, le=86_400)] | None = None
    memory: Literal["own", "shared", "off"] = "own"
    system_prompt: Annotated[str, StringConstraints(max_length=MAX_PROFILE_CHARS)] = ""

    @model_validator(mode="after")
    def model_is_allowed(self) -> Profile:
        if self.model and self.allowed_models and self.model not in self.allowed_models:
            raise ValueError(f"model {self.model!r} is not among allowed_models {self.allowed_models}")
        return self

    @property
    def restricts(self) -> bool:
        """Whether running it means more than running the bare prompt (what a N0D3 from before
        profiles could not have honoured): a system prompt, tools or a turn bound."""
        return bool(self.system_prompt or self.allowed_tools or self.disallowed_tools or self.max_turns
                    or self.plugin_tools)


def parse(text: str, name: str | None = None) -> Profile:
    """The profile in `text`; `name`, when given (a file's stem, a URL's name), must be the one
    it declares. Raises ProfileError."""
    if len(text) > MAX_PROFILE_CHARS:
        raise ProfileError(f"the profile is {len(text):,} characters; at most {MAX_PROFILE_CHARS:,}")
    settings, body = split(text)
    if body is not None:
        if "system_prompt" in settings:
            raise ProfileError("system_prompt is the Markdown body after the front matter; remove the key")
        settings["system_prompt"] = body
    try:
        profile = Profile.model_validate(settings)
    except ValidationError as exc:
        raise ProfileError(describe_validation(exc)) from None
    if name is not None and profile.name != name:
        raise ProfileError(f"the profile says name = {profile.name!r} but it is {name!r} here (they must match)")
    return profile


def split(text: str) -> tuple[dict, str | None]:
    """(front matter or TOML settings, Markdown body or None for a TOML-only profile)."""
    lines = text.lstrip("\ufeff").splitlines(keepends=True)
    if lines and lines[0].strip() == FENCE:
        closing = next((i for i, line in enumerate(lines[1:], 1) if line.strip() == FENCE), None)
        if closing is None:
            raise ProfileError(f"the front matter opened with {FENCE} is never closed by a {FENCE} line")
        return _toml("".join(lines[1:closing]), "the front matter"), "".join(lines[closing + 1:]).strip()
    return _toml(text, "the profile"), None


def _toml(text: str, what: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        hint = f" (a Markdown profile starts with a {FENCE} line)" if what == "the profile" else ""
        raise ProfileError(f"{what} is not valid TOML: {exc}{hint}") from None
