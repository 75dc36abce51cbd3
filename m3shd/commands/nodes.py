"""`m3shd nodes`: the machines in the mesh (list, show, pause/drain/disable/resume, rotate a key)
and the machines asking to join without a token (pending, approve, reject)."""

from __future__ import annotations

import argparse
import time

from m3shd.cli import api, duration, emit, say
from m3shd.components import CommandLine
from m3shd.wire import NodeState


def cmd_nodes_list(args) -> int:
    found = api(args).list_nodes()

    def table(items):
        print(f"{'ID':>4}  {'NAME':<20} {'STATE':<9} {'SLOTS':>7}  {'SEEN':>7}  RUNNER / CAPABILITIES")
        for n in items:
            runner = n["runner"] or f"none: {n['problem']}"
            print(f"{n['id']:>4}  {n['name'][:20]:<20} {n['state']:<9} {n['slots'] - n['open_slots']:>3}/{n['slots']:<3}  "
                  f"{n['heartbeat_age']:>6.1f}s  {runner}; {', '.join(n['capabilities'])}")

    emit(args, found, table)
    return 0


def cmd_nodes_show(args) -> int:
    def detail(n):
        b, r = n["breaker"], n["reputation"]
        print(f"node {n['id']} {n['name']}: {n['state']}, {n['slots'] - n['open_slots']}/{n['slots']} slots busy, "
              f"heartbeat {n['heartbeat_age']:.1f}s ago, priority {n['priority']}")
        print(f"capabilities: {', '.join(n['capabilities']) or 'none'}")
        if n["requested_capabilities"] is not None:
            print(f"asks for: {', '.join(n['requested_capabilities'])} "
                  f"(`m3shd nodes approve-capabilities {n['id']}` approves)")
        until = f" until {time.strftime('%H:%M:%S', time.localtime(b['until']))}" if b["until"] else ""
        print(f"breaker: {b['state']}{until}, {b['failures']} failures in a row")
        ucb = "untried" if r["ucb"] is None else f"ucb {r['ucb']:.3f}"
        score = "-" if r["score"] is None else f"{r['score']:.3f}"
        print(f"reputation: mean {r['mean']:.3f} over {r['count']:.1f} outcomes, {ucb}, score {score}")
        for o in r["window"]:
            reward = "-" if o["reward"] is None else f"{o['reward']:.2f}"
            print(f"  task {o['task_id']:>6}  {o['kind']:<9} reward {reward}")

    emit(args, api(args).get_node(args.id), detail)
    return 0


NODE_ORDERS = {"pause": NodeState.PAUSED, "drain": NodeState.DRAINING, "disable": NodeState.DISABLED,
               "resume": NodeState.ACTIVE}


def cmd_nodes_order(args) -> int:
    node = api(args).set_node_state(args.id, NODE_ORDERS[args.sub], getattr(args, "deadline", None))
    emit(args, node, lambda n: say(f"node {n['id']} {n['name']} is now {n['state']}"))
    return 0


def cmd_nodes_rotate_key(args) -> int:
    reply = api(args).rotate_node_key(args.id)
    emit(args, reply, lambda r: say(f"node {r['node_id']} gets a new signing key at its next heartbeat; "
                                    "the old key stops working once the node uses the new one"))
    return 0


# A machine asking to join has an id of its own, unrelated to the node it becomes: shown as
# p1, p2, … so "pending 1" is never read as node 1. --json keeps the number.
PENDING_PREFIX = "p"


def pending_label(pending_id: int) -> str:
    return f"{PENDING_PREFIX}{pending_id}"


def pending_id(text: str) -> int:
    """A pending machine's id as `nodes pending` shows it (p3), or the bare number (3)."""
    digits = text.removeprefix(PENDING_PREFIX)
    if not (digits.isascii() and digits.isdigit() and int(digits) > 0):
        raise argparse.ArgumentTypeError(f"not a pending machine's id (p3, or 3): {text!r}")
    return int(digits)


def cmd_nodes_pending(args) -> int:
    found = api(args).list_pending()

    def table(items):
        print(f"{'ID':>5}  {'NAME':<20} {'FROM':<16} {'WAITING':>8}  STATE     {'KEY':<50} CAPABILITIES")
        for p in items:
            waiting = duration(max(0.0, time.time() - p["requested_at"]))
            print(f"{pending_label(p['id']):>5}  {p['name'][:20]:<20} {(p['address'] or '?')[:16]:<16} {waiting:>8}  "
                  f"{'approved' if p['approved'] else 'pending':<9} {p['key_fingerprint'] or '-':<50} "
                  f"{', '.join(p['capabilities'])}")

    emit(args, found, table)
    return 0


def cmd_nodes_approve(args) -> int:
    emit(args, api(args).approve_pending(args.id),
         lambda p: say(f"approved {p['name']} (pending {pending_label(p['id'])}); it registers at its next poll"))
    return 0


def cmd_nodes_reject(args) -> int:
    api(args).reject_pending(args.id)
    say(f"turned away pending machine {pending_label(args.id)}")
    return 0


def register(line: CommandLine) -> None:
    client = line.client
    nodes = line.group("nodes", help="the machines in the mesh")
    p = nodes.add_parser("list", parents=[client], help="list nodes with state, slots and runner")
    p.set_defaults(func=cmd_nodes_list)
    p = nodes.add_parser("show", parents=[client], help="one node: breaker, reputation and recent outcomes")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_nodes_show)
    for order, text in (("pause", "take nothing new; finish running tasks"),
                        ("drain", "finish running tasks and take nothing new (optionally by a deadline)"),
                        ("disable", "out of service: running tasks go back to the queue now"),
                        ("resume", "make a paused, draining or disabled node active again")):
        p = nodes.add_parser(order, parents=[client], help=text)
        p.add_argument("id", type=int)
        if order == "drain":
            p.add_argument("--deadline", type=float, metavar="SECONDS",
                           help="after this long, work still running is queued elsewhere")
        p.set_defaults(func=cmd_nodes_order)
    p = nodes.add_parser("rotate-key", parents=[client],
                         help="give a node a fresh request-signing key (it switches at its next heartbeat)")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_nodes_rotate_key)
    p = nodes.add_parser("pending", parents=[client], help="list machines that asked to join without a token")
    p.set_defaults(func=cmd_nodes_pending)
    for name, func, text in (("approve", cmd_nodes_approve, "let a pending machine join (it registers as a node)"),
                             ("reject", cmd_nodes_reject, "turn a pending machine away")):
        p = nodes.add_parser(name, parents=[client], help=text)
        p.add_argument("id", type=pending_id, metavar="PENDING_ID", help="its id in `m3shd nodes pending` (p3, or 3)")
        p.set_defaults(func=func)
