"""`m3shd plugins`: the Commander's plugins and the tools agents may call with [TOOL_CALL]."""

from __future__ import annotations

from m3shd.cli import api, emit
from m3shd.components import CommandLine


def cmd_list(args) -> int:
    found = api(args).plugins()

    def table(r):
        for plugin in r["plugins"]:
            if plugin["state"] == "failed":
                print(f"{plugin['name']:<20} FAILED  {plugin['error']}")
                continue
            tools = ", ".join(tool["name"] for tool in plugin["tools"]) or "(no tools)"
            print(f"{plugin['name']:<20} loaded  {tools}")

    emit(args, found, table)
    return 1 if any(plugin["state"] == "failed" for plugin in found["plugins"]) else 0


def register(line: CommandLine) -> None:
    plugins = line.group("plugins", help="the Commander's plugins and the tools they offer agents")
    p = plugins.add_parser("list", parents=[line.client], help="every enabled plugin: its tools, or why it did not load "
                                                               "(exit status 1 if one did not)")
    p.set_defaults(func=cmd_list)
