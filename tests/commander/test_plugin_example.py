"""The example plugin of docs/plugins.md loads from a plugins directory and answers a tool call."""

from __future__ import annotations

from commander.plugins import calls
from commander.agents import service as agents
from commander.permissions import NODE_PERMISSIONS
from harness import ROOT
from mesh import join, lease_of, submit

PROFILE = """+++
name = "gambler"
plugin_tools = ["roll_dice"]
+++
Roll when asked.
"""


def test_the_dice_example_loads_and_rolls(make_app):
    app = make_app(plugins=("dice",), plugins_dir=str(ROOT / "docs" / "examples"))
    cmdr = app.extensions["m3shd"]
    [plugin] = cmdr.plugins.plugins
    assert (plugin.name, plugin.state, plugin.tools) == ("dice", "loaded", ["roll_dice"])
    with cmdr.db.connection_context():
        agents.put(cmdr, "gambler", PROFILE, "test")
        node = join(cmdr)
        lease = lease_of(cmdr, node, submit(cmdr, "roll three dice", agent="gambler"))

        def ask(args):
            return calls.run(cmdr, node.id, frozenset(NODE_PERMISSIONS), lease["task_id"], lease["attempt"],
                             lease["lease_token"], "roll_dice", args)

        rolled = ask({"dice": 3, "sides": 6})
        assert rolled.ok and len(rolled.result["rolled"]) == 3 and all(1 <= n <= 6 for n in rolled.result["rolled"])
        assert rolled.result["total"] == sum(rolled.result["rolled"])
        unlucky = ask({"sides": 13})
        assert (unlucky.ok, unlucky.error) == (False, "thirteen-sided dice bring bad luck: pick another number of sides")
