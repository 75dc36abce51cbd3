"""An example m3shd plugin (docs/plugins.md): a `roll_dice` tool.

Drop this file into the Commander's plugins directory (`<config dir>/plugins/dice.py`, or
[commander] plugins_dir), add "dice" to [commander] plugins, restart the Commander, and list
`roll_dice` in an agent's `plugin_tools`.
"""

from __future__ import annotations

import random
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from commander.plugins.manager import ToolError


class Roll(BaseModel):
    """The tool's arguments: the model is shown this model's JSON schema."""

    model_config = ConfigDict(extra="forbid")

    dice: Annotated[int, Field(ge=1, le=20, description="how many dice")] = 1
    sides: Annotated[int, Field(ge=2, le=1000, description="sides of each die")] = 6


def roll(call, args: Roll) -> dict:
    """`call` says which task asks (call.task_id, call.agent) and how long the tool has (call.timeout)."""
    if args.sides == 13:
        raise ToolError("thirteen-sided dice bring bad luck: pick another number of sides")  # the model is told this
    rolled = [random.randint(1, args.sides) for _ in range(args.dice)]
    return {"rolled": rolled, "total": sum(rolled)}


def setup(manager) -> None:
    manager.tool("roll_dice", "Roll dice: answers each die and the total.", Roll, roll, timeout=5)
