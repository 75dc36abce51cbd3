"""`m3shd nodes remove` and `m3shd nodes approve-capabilities`: the operator's say over which
machines are nodes and what each may take (commander/capabilities.py)."""

from __future__ import annotations

from m3shd import cli
from m3shd.components import CommandLine


def cmd_nodes_remove(args) -> int:
    cli.api(args).remove_node(args.id)
    cli.say(f"removed node {args.id}: its token stopped working and the tasks it held went back to the queue")
    return 0


def cmd_nodes_approve_capabilities(args) -> int:
    """Approve what the node asks for, as shown here (the Commander refuses if it changed meanwhile)."""
    client = cli.api(args)
    node = client.get_node(args.id)
    requested = node["requested_capabilities"]
    if requested is None:
        cli.say(f"node {args.id} {node['name']} asks for no capabilities beyond those approved")
        return 0
    approved = client.approve_node_capabilities(args.id, requested)
    added = sorted(set(requested) - set(node["capabilities"]))
    cli.emit(args, approved, lambda n: cli.say(
        f"node {n['id']} {n['name']}: capabilities {', '.join(node['capabilities']) or 'none'} → "
        f"{', '.join(n['capabilities'])} (approved {', '.join(added)})"))
    return 0


def register(line: CommandLine) -> None:
    nodes = line.groups["nodes"]
    p = nodes.add_parser("remove", parents=[line.client],
                         help="forget a node: its token stops working, its tasks go back to the queue")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_nodes_remove)
    p = nodes.add_parser("approve-capabilities", parents=[line.client],
                         help="approve the capabilities a node asks for (shown as old → new)",
                         description="A capability label a node adds (other than facts of the machine such as "
                                     "os=, arch=, runner=) waits for an operator; until then tasks that require "
                                     "it go elsewhere. This approves exactly what the node asks for now.")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_nodes_approve_capabilities)
