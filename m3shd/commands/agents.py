"""`m3shd agents`: the profiles tasks run as, over the Commander API.

`edit` opens $VISUAL or $EDITOR (else vi) on the agent's profile text and sends it back as a new
version; an edit the Commander refuses is kept in a file, with the command that sends it again.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time

from m3shd.cli import CliError, api, emit, for_terminal, say
from m3shd.components import CommandLine
from m3shd.errors import CommanderError

# What `edit` starts from for an agent that does not exist yet (docs/agents.md has every key).
SKELETON = """+++
name = "{name}"
title = ""
description = ""
# model = "claude-sonnet-5-5"
# allowed_tools = ["Read", "Grep", "Glob"]
# max_turns = 20
+++
## Role

## How you work

## Output

## Boundaries
"""


def cmd_list(args) -> int:
    def table(agents):
        print(f"{'NAME':<24} {'STATE':<7} {'VER':>4} {'QUEUED':>6} {'RUNNING':>7} {'OK':>5} {'MEDIAN':>8} "
              f"{'COST':>9}  MODEL / TITLE")
        for a in agents:
            s = a["stats"]
            ok = "-" if s["success_rate"] is None else f"{s['success_rate'] * 100:.0f}%"
            median = "-" if s["median_duration_ms"] is None else f"{s['median_duration_ms'] / 1000:.1f}s"
            print(f"{a['name'][:24]:<24} {a['state']:<7} {a['version']:>4} {s['queued']:>6} {s['running']:>7} "
                  f"{ok:>5} {median:>8} {'$' + format(s['cost_usd'], '.4f'):>9}  "
                  f"{a['model'] or 'node default'} / {a['title']}")

    emit(args, api(args).list_agents(), table)
    return 0


def cmd_show(args) -> int:
    def detail(a):
        s = a["stats"]
        say(f"agent {a['name']} ({a['title']}): {a['state']}, version {a['version']}, "
            f"from {a['origin'] or 'the API'}")
        if a["error"]:
            say(f"error: {a['error']}")
        say(f"{s['queued']} queued, {s['running']} running; last {s['window']} finished: {s['succeeded']} "
            f"succeeded, {s['failed']} failed, ${s['cost_usd']:.4f}")
        if a["text"] is not None:
            print(for_terminal(a["text"]))

    emit(args, api(args).get_agent(args.name), detail)
    return 0


def cmd_versions(args) -> int:
    def table(found):
        print(f"{'VER':>4}  {'CREATED':<19}  {'MODEL':<20} CAUSE")
        for v in found["versions"]:
            mark = "*" if v["version"] == found["current"] else " "
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v["created_at"]))
            print(f"{v['version']:>4}{mark} {when:<19}  {(v['model'] or '-')[:20]:<20} {v['cause']}")

    emit(args, api(args).agent_versions(args.name), table)
    return 0


def cmd_edit(args) -> int:
    client = api(args)
    if args.file:
        text = read_text(args.file)
    else:
        try:
            before = client.get_agent(args.name)["text"] or SKELETON.format(name=args.name)
        except CommanderError as exc:
            if exc.status != 404:
                raise
            before = SKELETON.format(name=args.name)
        text = in_editor(before)
        if text == before:
            say(f"agent {args.name}: nothing changed")
            return 0
    try:
        agent = client.put_agent(args.name, text)
    except CommanderError as exc:
        if exc.status != 400 or args.file:
            raise
        kept = keep(text)
        raise CliError(f"the Commander refused the profile: {exc.message}\nyour edit is kept in {kept}; fix it "
                       f"there and send it with `m3shd agents edit {args.name} --file {kept}`") from None
    emit(args, agent, lambda a: say(f"agent {a['name']}: version {a['version']} is current"))
    return 0


def read_text(path: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None


def in_editor(text: str) -> str:
    """The text after the person edited it in their editor."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    suffix = ".md" if text.lstrip().startswith("+++") else ".toml"
    with tempfile.TemporaryDirectory(prefix="m3shd-agent-") as folder:
        path = os.path.join(folder, "profile" + suffix)
        with open(path, "w", encoding="utf-8") as out:
            out.write(text)
        try:
            done = subprocess.run([*shlex.split(editor), path])
        except OSError as exc:
            raise CliError(f"cannot start the editor {editor!r}: {exc}; set EDITOR, or use --file") from None
        if done.returncode != 0:
            raise CliError(f"the editor exited with status {done.returncode}; nothing was sent")
        return open(path, encoding="utf-8").read()


def keep(text: str) -> str:
    """Save a refused edit where the person can find it; returns the path."""
    handle, path = tempfile.mkstemp(prefix="m3shd-agent-", suffix=".md")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    return path


def cmd_rollback(args) -> int:
    agent = api(args).rollback_agent(args.name, args.version)
    emit(args, agent, lambda a: say(f"agent {a['name']}: version {args.version}'s profile is current again, "
                                    f"as version {a['version']}"))
    return 0


def cmd_delete(args) -> int:
    api(args).delete_agent(args.name, args.fallback)
    say(f"agent {args.name} deleted" + ("; its waiting tasks run as general" if args.fallback else ""))
    return 0


def cmd_reload(args) -> int:
    def report(r):
        say(f"{len(r['created'])} new, {len(r['updated'])} changed, {r['unchanged']} unchanged"
            + (f"; new: {', '.join(r['created'])}" if r["created"] else "")
            + (f"; changed: {', '.join(r['updated'])}" if r["updated"] else ""))
        for problem in r["broken"]:
            say(f"broken: {problem['name']}: {problem['error']}")
        if r["missing"]:
            say(f"file gone (kept as they were): {', '.join(r['missing'])}")

    done = api(args).reload_agents()
    emit(args, done, report)
    return 1 if done["broken"] else 0


def register(line: CommandLine) -> None:
    client = line.client
    agents = line.group("agents", help="the agent profiles tasks run as (docs/agents.md)")
    p = agents.add_parser("list", parents=[client], help="every agent: state, version, queue and recent results")
    p.set_defaults(func=cmd_list)
    p = agents.add_parser("show", parents=[client], help="one agent's state on stderr and its profile text on stdout")
    p.add_argument("name")
    p.set_defaults(func=cmd_show)
    p = agents.add_parser("versions", parents=[client], help="an agent's versions, newest first (* is current)")
    p.add_argument("name")
    p.set_defaults(func=cmd_versions)
    p = agents.add_parser("edit", parents=[client], help="edit a profile in $EDITOR (or send --file) as a new version",
                          description="Open the agent's current profile in $VISUAL or $EDITOR and send it back as "
                                      "a new version (an agent that does not exist yet starts from a skeleton). "
                                      "An edit the Commander refuses is kept in a file, and the command to send it "
                                      "again is printed.")
    p.add_argument("name")
    p.add_argument("--file", metavar="FILE", help="send this profile instead of opening an editor (- for stdin)")
    p.set_defaults(func=cmd_edit)
    p = agents.add_parser("rollback", parents=[client], help="make an old version's profile current again")
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.set_defaults(func=cmd_rollback)
    p = agents.add_parser("delete", parents=[client], help="delete an agent (refused while tasks of it wait or run)")
    p.add_argument("name")
    p.add_argument("--fallback", action="store_true", help="move its waiting tasks to general instead")
    p.set_defaults(func=cmd_delete)
    p = agents.add_parser("reload", parents=[client],
                          help="read the profile files again (exit 1 if one is broken)")
    p.set_defaults(func=cmd_reload)
