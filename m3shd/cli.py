"""`m3shd`: start the mesh, run its parts, and use it from a terminal.

The commands here are the Commander API's clients (task, pipeline, provenance, nodes, token, mcp);
the Commander, the N0D3, the bridge and the image builder add their own (m3shd/components.py),
using the helpers below: say, CliError and the exit statuses, emit (--json), api.

Exit status: 0 ok, 1 the task failed or was cancelled, 2 bad usage or configuration,
3 the Commander is unreachable, 4 gave up waiting, 141 the output's reader stopped early (`| head`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time

from m3shd import __version__, config
from m3shd.components import CommandLine, assemble
from m3shd.errors import CommanderError, CommanderUnreachable, CommanderUntrusted
from m3shd.wire import FINAL_STATES, NodeState, PipelineState, Role, TaskState

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_TIMEOUT = 1, 2, 3, 4


class CliError(Exception):
    def __init__(self, message: str, status: int = EXIT_USAGE):
        super().__init__(message)
        self.status = status


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def for_terminal(text: str, stream=sys.stdout) -> str:
    """Task output and node-reported text are untrusted: on a terminal, escape sequences in them
    could rewrite the screen or the title, so control characters are shown, not obeyed."""
    if not stream.isatty():
        return text
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def say(*parts) -> None:
    """Progress and summaries go to stderr, so stdout carries only the answer or the JSON."""
    print(*(for_terminal(str(part), sys.stderr) for part in parts), file=sys.stderr, flush=True)


# --- helpers ---------------------------------------------------------------------------------

def api(args):
    # Imported here: `commander serve` must not load requests (and ssl) before gevent patches.
    from m3shd.client import ApiClient

    settings = config.load("client", args.config, url=args.url, token=args.token)
    if not settings["token"]:
        raise CliError("no API token: pass --token, set M3SHD_CLIENT_TOKEN, or run `m3shd up` (it saves one)")
    return ApiClient(settings["url"], settings["token"], ca_file=settings["ca_file"])


def emit(args, document, human) -> None:
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        human(document)


def describe_usage(task: dict) -> str:
    usage = task["usage"]
    cost = "unknown" if task["cost_usd"] is None else f"${task['cost_usd']:.4f}"
    return (f"tokens: {usage['input_tokens']:,} in · {usage['output_tokens']:,} out · "
            f"{usage['cache_read_tokens']:,} cache read · {usage['cache_write_tokens']:,} cache write · cost {cost}")


def print_task(task: dict) -> None:
    where = f" on node {task['node_id']}" if task["node_id"] else ""
    took = f", {task['duration_ms'] / 1000:.1f} s" if task["duration_ms"] is not None else ""
    say(f"task {task['id']} {task['state']}{where} (attempt {task['attempt']}/{task['max_attempts']}{took})")
    if task["state"] == TaskState.SUCCEEDED:
        print(for_terminal(task["output"]))
    elif task["error"]:
        say(f"error: {task['error']}")
    if task["waiting_reason"]:
        say(f"waiting: {task['waiting_reason']}")
    if task["state"] in FINAL_STATES:
        say(describe_usage(task))


def wait_for(client, task_id: int, timeout: float | None) -> dict:
    said = None

    def report(task):
        nonlocal said
        if task["waiting_reason"] and task["waiting_reason"] != said:
            said = task["waiting_reason"]
            say(f"task {task_id} is {task['state']}: {said}")

    task = client.wait_task(task_id, timeout, on_poll=report)
    if task["state"] not in FINAL_STATES:
        raise CliError(f"task {task_id} is still {task['state']} after {timeout:g} s; "
                       f"`m3shd task wait {task_id}` to keep waiting", EXIT_TIMEOUT)
    return task


def finish(args, task: dict) -> int:
    emit(args, task, print_task)
    return 0 if task["state"] == TaskState.SUCCEEDED else EXIT_FAILED


# --- commands --------------------------------------------------------------------------------

def cmd_mcp_serve(args) -> int:
    host, _, port = (args.http or "").rpartition(":")
    if args.http and not (host and port.isdigit()):
        raise CliError(f"--http takes HOST:PORT, e.g. 127.0.0.1:8471 (got {args.http!r})")
    client = api(args)  # checked before the MCP SDK loads, so a missing token is said at once
    try:
        from m3shd.mcp.server import build_server
    except ImportError as exc:
        raise CliError(f"the MCP server needs the mcp extra: pip install 'm3shd[mcp]' ({exc})") from None
    server = build_server(client)
    if not args.http:
        server.run()
        return 0
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        say(f"warning: the MCP endpoint has no authentication of its own; anyone who can reach {args.http} "
            "acts on the mesh with this server's token")
    say(f"MCP over streamable HTTP at http://{args.http}/mcp")
    server.run("streamable-http", host=host.strip("[]"), port=int(port))
    return 0


def cmd_mcp_install(args) -> int:
    from m3shd.mcp.install import InstallError, claude_code_config, claude_desktop_config, install, server_entry

    if not (args.claude_code or args.claude_desktop):
        raise CliError("say where: --claude-code, --claude-desktop, or both")
    settings = config.load("client", args.config, url=args.url, token=args.token)
    if not settings["token"]:
        raise CliError("no API token to give the MCP server: pass --token, set M3SHD_CLIENT_TOKEN, or run "
                       "`m3shd up` (it saves one); `m3shd token create claude --role mobile` makes one for it")
    targets = [(claude_code_config(), True, "Claude Code")] if args.claude_code else []
    targets += [(claude_desktop_config(), False, "Claude Desktop")] if args.claude_desktop else []
    for path, stdio_type, app in targets:
        try:
            outcome, backup = install(path, args.name, server_entry(settings["url"], settings["token"], stdio_type,
                                                                     settings["ca_file"]))
        except InstallError as exc:
            raise CliError(str(exc)) from None
        kept = f"; the previous file is {backup}" if backup else ""
        say(f"{app}: {args.name} {outcome} in {path}{kept}"
            + ("" if outcome == "unchanged" else f"; restart {app} to load it"))
    return 0


def cmd_task_submit(args) -> int:
    client = api(args)
    task = client.submit_task(args.prompt, requires=listed(args.requires), prefer=listed(args.prefer),
                              priority=args.priority, model=args.model, idempotency_key=args.idempotency_key,
                              max_attempts=args.max_attempts, backoff=args.backoff,
                              approval_required=args.approval or None,
                              retry_on_lost=False if args.no_retry_on_lost else None)
    if task["state"] == TaskState.AWAITING_APPROVAL:
        emit(args, task, lambda t: say(f"task {t['id']} awaits approval: `m3shd task approve {t['id']}` or `reject`"))
        return 0
    if args.no_wait:
        emit(args, task, lambda t: print(t["id"]))
        return 0
    say(f"task {task['id']} {task['state']}; waiting for the answer (Ctrl-C stops waiting, not the task)")
    return finish(args, wait_for(client, task["id"], args.timeout))


def listed(text: str | None) -> list[str] | None:
    """A comma-separated option as a list (None when not given)."""
    return [item.strip() for item in text.split(",") if item.strip()] or None if text else None


def cmd_task_decide(args) -> int:
    client = api(args)
    if args.sub == "approve":
        task = client.approve_task(args.id)
    else:
        task = client.reject_task(args.id, args.reason)
    emit(args, task, lambda t: say(f"task {t['id']} {args.sub}d: now {t['state']}"))
    return 0


def cmd_task_get(args) -> int:
    emit(args, api(args).get_task(args.id), print_task)
    return 0


def cmd_task_wait(args) -> int:
    return finish(args, wait_for(api(args), args.id, args.timeout))


def cmd_task_cancel(args) -> int:
    task = api(args).cancel_task(args.id)
    emit(args, task, lambda t: say(f"task {t['id']} cancelled"))
    return 0


def cmd_task_list(args) -> int:
    found = api(args).list_tasks(state=args.state, node_id=args.node, limit=args.limit)

    def table(items):
        print(f"{'ID':>6}  {'STATE':<10} {'NODE':>5}  {'COST':>9}  PROMPT")
        for t in items:
            cost = "" if t["cost_usd"] is None else f"${t['cost_usd']:.4f}"
            prompt = " ".join(t["prompt"].split())
            print(f"{t['id']:>6}  {t['state']:<10} {t['node_id'] or '':>5}  {cost:>9}  {prompt[:60]}")

    emit(args, found, table)
    return 0


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


def cmd_nodes_pending(args) -> int:
    found = api(args).list_pending()

    def table(items):
        print(f"{'ID':>4}  {'NAME':<20} {'FROM':<16} {'WAITING':>8}  STATE     {'KEY':<50} CAPABILITIES")
        for p in items:
            waiting = f"{max(0.0, time.time() - p['requested_at']) / 60:.0f} min"
            print(f"{p['id']:>4}  {p['name'][:20]:<20} {(p['address'] or '?')[:16]:<16} {waiting:>8}  "
                  f"{'approved' if p['approved'] else 'pending':<9} {p['key_fingerprint'] or '-':<50} "
                  f"{', '.join(p['capabilities'])}")

    emit(args, found, table)
    return 0


def cmd_nodes_approve(args) -> int:
    emit(args, api(args).approve_pending(args.id),
         lambda p: say(f"approved {p['name']} (pending {p['id']}); it registers at its next poll"))
    return 0


def cmd_nodes_reject(args) -> int:
    api(args).reject_pending(args.id)
    say(f"rejected pending node {args.id}")
    return 0


def cmd_token_create(args) -> int:
    created = api(args).create_token(args.name, kind=args.kind, role=args.role, permissions=token_permissions(args),
                                     expires_in=args.expires_in)
    return show_token(args, created)


def token_permissions(args) -> list[str] | None:
    return [p.strip() for p in args.permissions.split(",")] if args.permissions else None


def show_token(args, created: dict) -> int:
    """A new token: the secret alone on stdout (for scripts), what it may do on stderr. A join
    token shows as its join string, TOKEN#sha256:HASH, which pins the Commander's CA."""
    def human(t):
        print(t.get("join") or t["token"])
        say(f"{t['kind']} token {t['id']} `{t['name']}`: {', '.join(t['permissions'])}; shown once, store it now")
        if t.get("join") and t["join"] != t["token"]:
            say("after the # is the hash of the Commander's CA: `m3shd n0d3 join URL` with all of it pins that CA")

    emit(args, created, human)
    return 0


def cmd_token_list(args) -> int:
    found = api(args).list_tokens()

    def table(items):
        print(f"{'ID':>4}  {'KIND':<5} {'NAME':<24} {'PREFIX':<9} {'STATE':<8} PERMISSIONS")
        for t in items:
            state = "revoked" if t["revoked_at"] else "expired" if t["expires_at"] and t["expires_at"] < time.time() else "active"
            print(f"{t['id']:>4}  {t['kind']:<5} {t['name'][:24]:<24} {t['prefix']:<9} {state:<8} "
                  f"{', '.join(t['permissions'])}")

    emit(args, found, table)
    return 0


def cmd_token_revoke(args) -> int:
    emit(args, api(args).revoke_token(args.id), lambda t: say(f"token {t['id']} `{t['name']}` revoked"))
    return 0


def read_json(path: str) -> dict:
    """A JSON document from a file, or from standard input for `-`."""
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
        return json.loads(text)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise CliError(f"{path} is not JSON: {exc}") from None


def print_pipeline(pipeline: dict) -> None:
    name = f" {pipeline['name']}" if pipeline["name"] else ""
    print(f"pipeline {pipeline['id']}{name}: {pipeline['state']}")
    for step in pipeline["steps"]:
        parents = ", ".join(dep["step"] + ("?" if dep["allow_failure"] else "") for dep in step["depends_on"])
        where = f" on node {step['node_id']}" if step["node_id"] else ""
        print(f"  {step['key']:<20} task {step['task_id']:<6} {step['state']:<10}{where}"
              + (f"  ← {parents}" if parents else ""))
        if step["error"] and step["state"] != TaskState.SUCCEEDED:
            print(f"  {'':<20} {for_terminal(step['error'])}")
    if pipeline["error"]:
        print(f"  {for_terminal(pipeline['error'])}")


def cmd_pipeline_submit(args) -> int:
    client = api(args)
    pipeline = client.submit_pipeline(read_json(args.file))
    if not args.wait:
        emit(args, pipeline, print_pipeline)
        return 0
    say(f"pipeline {pipeline['id']} submitted; waiting for it (Ctrl-C stops waiting, not the pipeline)")
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    while pipeline["state"] == PipelineState.RUNNING:
        if deadline is not None and time.monotonic() >= deadline:
            raise CliError(f"pipeline {pipeline['id']} is still running after {args.timeout:g} s; "
                           f"`m3shd pipeline show {pipeline['id']}` to look again", EXIT_TIMEOUT)
        time.sleep(1.0)  # no long-poll for pipelines: a look a second is plenty for a person
        pipeline = client.get_pipeline(pipeline["id"])
    emit(args, pipeline, print_pipeline)
    return 0 if pipeline["state"] == PipelineState.SUCCEEDED else EXIT_FAILED


def cmd_pipeline_show(args) -> int:
    emit(args, api(args).get_pipeline(args.id), print_pipeline)
    return 0


def cmd_pipeline_cancel(args) -> int:
    emit(args, api(args).cancel_pipeline(args.id), print_pipeline)
    return 0


def cmd_provenance_export(args) -> int:
    bundle = json.dumps(api(args).task_provenance(args.id), indent=2)
    if args.output == "-":
        print(bundle)
    else:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(bundle + "\n")
        say(f"provenance of task {args.id} written to {args.output}")
    return 0


def cmd_provenance_verify(args) -> int:
    """Offline: only the bundle and the public keys in it, never the Commander."""
    # Imported here: PyNaCl is not part of the base install the other commands need.
    from m3shd.provenance import verify_bundle

    bundle = read_json(args.file)
    try:
        verdict = verify_bundle(bundle)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:  # whatever an edited file holds
        raise CliError(f"{args.file} is not a provenance bundle: {exc!r}") from None
    steps = {link["task_id"]: link.get("step") for link in bundle["links"]}

    def report(result):
        for task_id, problems in result["links"].items():
            label = f"task {task_id}" + (f" ({steps[task_id]})" if steps.get(task_id) else "")
            print(f"{label}: " + ("verified" if not problems else "BROKEN: " + "; ".join(problems)))
        print("chain verified" if result["ok"] else "chain BROKEN")

    emit(args, verdict, report)
    return 0 if verdict["ok"] else EXIT_FAILED


# --- the parser ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="read settings from this TOML file only")
    connection = argparse.ArgumentParser(add_help=False, parents=[common])
    connection.add_argument("--url", help="Commander URL (default: [client] url, M3SHD_CLIENT_URL)")
    connection.add_argument("--token", help="API token (default: [client] token, M3SHD_CLIENT_TOKEN)")
    client = argparse.ArgumentParser(add_help=False, parents=[connection])
    client.add_argument("--json", action="store_true", help="print JSON instead of text")

    parser = TopParser(prog="m3shd", description="A mesh of your own machines running Claude agents.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"m3shd {__version__}")
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=argparse.ArgumentParser)
    line = CommandLine(top, common, connection, client)

    mcp = top.add_parser(
        "mcp", parents=[connection], help="the mesh as tools in Claude Code and Claude Desktop (MCP server)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="m3shd mcp [--http HOST:PORT] [--url URL] [--token TOKEN] [--config FILE]\n"
              "       m3shd mcp install [--claude-code] [--claude-desktop] [--name NAME] [--url URL] [--token TOKEN]",
        description="Serve the Model Context Protocol over stdio (what Claude Code and Claude Desktop start)\n"
                    "or over streamable HTTP with --http.\n\n"
                    "tools:      dispatch_task, get_task, wait_for_task, list_tasks, cancel_task,\n"
                    "            approve_task, reject_task, create_pipeline, get_pipeline, list_nodes\n"
                    "resources:  m3shd://tasks/{id}, m3shd://nodes/{id}\n\n"
                    "It calls the Commander at [client] url with [client] token (or M3SHD_CLIENT_URL,\n"
                    "M3SHD_CLIENT_TOKEN) and keeps no state of its own.",
        epilog="examples:\n"
               "  m3shd mcp install --claude-code          add it to Claude Code (all projects)\n"
               "  m3shd mcp install --claude-desktop       add it to Claude Desktop\n"
               "  m3shd mcp --http 127.0.0.1:8471          serve http://127.0.0.1:8471/mcp")
    mcp.add_argument("--http", metavar="HOST:PORT", help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio")
    mcp.set_defaults(func=cmd_mcp_serve)
    p = mcp.add_subparsers(dest="sub", metavar="SUB").add_parser(
        "install", parents=[connection], help="add this server to Claude Code's or Claude Desktop's configuration",
        description="Add (or update) an `m3shd` entry under mcpServers that starts `m3shd mcp` with this Python, "
                    "passing the Commander URL and token in its environment. Claude Code: ~/.claude.json (user "
                    "scope: every project). Claude Desktop: claude_desktop_config.json (~/Library/Application "
                    "Support/Claude on macOS, ~/.config/Claude on Linux). Other servers and settings are kept, "
                    "the file is backed up before it changes, and running it again changes nothing. The token "
                    "is never printed.")
    p.add_argument("--claude-code", action="store_true", help="write ~/.claude.json")
    p.add_argument("--claude-desktop", action="store_true", help="write Claude Desktop's claude_desktop_config.json")
    p.add_argument("--name", default="m3shd", help="the server's name in the client (default m3shd)")
    p.set_defaults(func=cmd_mcp_install)

    task = line.group("task", help="submit and follow tasks")
    p = task.add_parser("submit", parents=[client], help="send a prompt to the mesh and print the answer")
    p.add_argument("prompt")
    p.add_argument("--requires", help="comma-separated capabilities a node must have, e.g. arch=arm64,gpu")
    p.add_argument("--priority", type=int, help="-100..100, higher runs first (default 0)")
    p.add_argument("--model", help="Claude model id")
    p.add_argument("--idempotency-key", help="resubmitting with the same key returns the first task")
    p.add_argument("--prefer", help="comma-separated capabilities that make a node a better choice")
    p.add_argument("--max-attempts", type=int)
    p.add_argument("--backoff", type=float, metavar="SECONDS", help="wait before a retry, doubling each attempt")
    p.add_argument("--no-retry-on-lost", action="store_true", help="fail instead of retrying when the node is lost")
    p.add_argument("--approval", action="store_true", help="hold the task until someone approves it")
    p.add_argument("--no-wait", action="store_true", help="print the task id and return")
    p.add_argument("--timeout", type=float, help="stop waiting after this many seconds")
    p.set_defaults(func=cmd_task_submit)
    for name, func, text in (("get", cmd_task_get, "show a task"), ("cancel", cmd_task_cancel, "cancel a task")):
        p = task.add_parser(name, parents=[client], help=text)
        p.add_argument("id", type=int)
        p.set_defaults(func=func)
    p = task.add_parser("approve", parents=[client], help="approve a task awaiting approval")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_task_decide)
    p = task.add_parser("reject", parents=[client], help="reject a task awaiting approval")
    p.add_argument("id", type=int)
    p.add_argument("--reason")
    p.set_defaults(func=cmd_task_decide)
    p = task.add_parser("wait", parents=[client], help="wait for a task and print its answer")
    p.add_argument("id", type=int)
    p.add_argument("--timeout", type=float)
    p.set_defaults(func=cmd_task_wait)
    p = task.add_parser("list", parents=[client], help="list tasks, newest first")
    p.add_argument("--state", choices=tuple(TaskState))
    p.add_argument("--node", type=int)
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_task_list)

    pipeline = line.group("pipeline", help="graphs of steps submitted at once")
    p = pipeline.add_parser("submit", parents=[client], help="submit a pipeline from a JSON file (docs/pipelines.md)")
    p.add_argument("file", metavar="FILE", help="the pipeline as JSON, or - for standard input")
    p.add_argument("--wait", action="store_true", help="wait until it finishes; exit 1 unless it succeeded")
    p.add_argument("--timeout", type=float, help="with --wait: stop waiting after this many seconds")
    p.set_defaults(func=cmd_pipeline_submit)
    for name, func, text in (("show", cmd_pipeline_show, "print a pipeline's graph and step states"),
                             ("cancel", cmd_pipeline_cancel, "cancel a pipeline's unfinished steps")):
        p = pipeline.add_parser(name, parents=[client], help=text)
        p.add_argument("id", type=int)
        p.set_defaults(func=func)

    provenance = line.group("provenance", help="signed, chained results")
    p = provenance.add_parser("export", parents=[client], help="write a task's provenance bundle (JSON)")
    p.add_argument("id", type=int)
    p.add_argument("-o", "--output", default="-", metavar="FILE", help="where to write it (default: standard output)")
    p.set_defaults(func=cmd_provenance_export)
    p = provenance.add_parser("verify", help="check a provenance bundle offline, with only its public keys",
                              description="Recompute every chain hash and check every Ed25519 signature in the "
                                          "bundle. Exit status 0: verified; 1: broken.")
    p.add_argument("file", metavar="FILE", help="the bundle, or - for standard input")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_provenance_verify)

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
        p.add_argument("id", type=int, help="its id in `m3shd nodes pending`")
        p.set_defaults(func=func)

    token = line.group("token", help="API and join tokens")
    p = token.add_parser("create", parents=[client], help="create a token (printed once)")
    p.add_argument("name")
    p.add_argument("--kind", choices=("api", "join"), default="api")
    p.add_argument("--role", choices=tuple(Role))
    p.add_argument("--permissions", help="comma-separated permissions instead of a role")
    p.add_argument("--expires-in", type=float, metavar="SECONDS",
                   help="lifetime; API tokens default to none, join tokens to one day")
    p.set_defaults(func=cmd_token_create)
    p = token.add_parser("list", parents=[client], help="list API and join tokens (never their secrets)")
    p.set_defaults(func=cmd_token_list)
    p = token.add_parser("revoke", parents=[client], help="revoke a token")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_token_revoke)

    from m3shd.commands import login  # it imports this module's helpers

    login.register(line)

    absent = assemble(line)
    if absent:
        parser.epilog = "not installed here:\n" + "\n".join(f"  {hint}" for hint in absent)
    return parser


class TopParser(argparse.ArgumentParser):
    """`m3shd` itself: a usage error also says which commands are not installed here and how to
    install them, since the command that was not found may be one of theirs."""

    def error(self, message):
        super().error(f"{message}\n{self.epilog}" if self.epilog else message)


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return run_command(argv)
        finally:
            sys.stdout.flush()  # so a reader that went away shows here, not at interpreter exit
    except BrokenPipeError:
        # `m3shd … | head`: the reader closed the pipe. As Python's documentation advises, point
        # stdout at /dev/null so the last flush at exit cannot fail again, and exit as a command
        # ended by SIGPIPE does (SIGPIPE itself stays ignored: it would also kill us on sockets).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def run_command(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        say(f"m3shd: {exc}")
        return exc.status
    except config.ConfigError as exc:
        say(f"m3shd: configuration: {exc}")
        return EXIT_USAGE
    except CommanderUntrusted as exc:
        say(f"m3shd: {exc}")
        return EXIT_UNREACHABLE
    except CommanderUnreachable as exc:
        say(f"m3shd: {exc}; is it running? (`m3shd up` starts one here)")
        return EXIT_UNREACHABLE
    except CommanderError as exc:
        say(f"m3shd: the Commander said: {exc.message} ({exc.status})")
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
