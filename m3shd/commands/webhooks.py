"""`m3shd webhooks`: the hooks through which GitHub, Uptime Kuma or any signed JSON sender start
tasks and pipelines, over the Commander API (`webhooks:manage`).

A hook's rules come from a JSON file: a list of `{"event", "actions", "when", "task" | "pipeline"}`
(README "Webhooks" shows them). Its secret is printed once, when it is made or rotated.
"""

from __future__ import annotations

import json
import sys
import time

from m3shd.cli import CliError, api, emit, say
from m3shd.components import CommandLine

KINDS = ("github", "uptime-kuma", "json")
WHERE = {
    "github": "GitHub: Settings → Webhooks → Add webhook: Payload URL {url}, Content type application/json, "
              "Secret (above)",
    "uptime-kuma": "Uptime Kuma: Notification type Webhook, Post URL {url}, Request Body application/json, "
                   "Additional Headers {{\"Authorization\": \"Bearer <the secret above>\"}}",
    "json": "senders: POST JSON to {url} with X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body with the secret> "
            "and X-M3SHD-Event: <event>",
}


def read_rules(path: str) -> list:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except OSError as exc:
        raise CliError(f"cannot read the rules file {path}: {exc.strerror}") from None
    try:
        rules = json.loads(text)
    except ValueError as exc:
        raise CliError(f"the rules file {path} is not JSON: {exc}") from None
    rules = rules.get("rules") if isinstance(rules, dict) else rules
    if not isinstance(rules, list):
        raise CliError(f"the rules file {path} should hold a JSON list of rules (or an object with `rules`)")
    return rules


def print_secret(hook: dict, url: str) -> None:
    print(hook["secret"])
    say(f"webhook {hook['name']}: the secret above is shown once; keep it with the sender")
    say(WHERE[hook["kind"]].format(url=url.rstrip("/") + hook["url"]))


def cmd_create(args) -> int:
    client = api(args)
    made = client.create_webhook(args.name, args.kind, read_rules(args.rules), args.debounce)
    emit(args, made, lambda hook: print_secret(hook, client.url))
    return 0


def cmd_rotate(args) -> int:
    client = api(args)
    emit(args, client.rotate_webhook_secret(args.name), lambda hook: print_secret(hook, client.url))
    return 0


def cmd_list(args) -> int:
    def table(hooks):
        print(f"{'NAME':<24} {'KIND':<12} {'RULES':>5}  URL")
        for hook in hooks:
            print(f"{hook['name']:<24} {hook['kind']:<12} {len(hook['rules']):>5}  {hook['url']}")

    emit(args, api(args).webhooks(), table)
    return 0


def cmd_show(args) -> int:
    def table(found):
        hook = found["hook"]
        say(f"{hook['name']} ({hook['kind']}) at {hook['url']}, made by {hook['created_by']}")
        for rule in hook["rules"]:
            starts = f"pipeline {rule['pipeline'].get('name') or '(unnamed)'}" if "pipeline" in rule else \
                f"task as {rule['task'].get('agent') or 'general'}"
            say(f"  {rule['event']} {','.join(rule.get('actions', [])) or '(any action)'} → {starts}")
        print(f"{'ID':>6} {'RECEIVED':<19} {'EVENT':<24} {'STATUS':<12} {'STARTED':<16} ERROR / NOTE")
        for d in found["deliveries"]:
            started = f"pipeline {d['pipeline_id']}" if d["pipeline_id"] else ",".join(map(str, d["task_ids"])) or "-"
            event = d["event"] + (f".{d['action']}" if d["action"] else "")
            print(f"{d['id']:>6} {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(d['received_at']))} "
                  f"{event[:24]:<24} {d['status']:<12} {started[:16]:<16} {d['error'] or d['note'] or ''}")

    emit(args, api(args).webhook(args.name, args.limit), table)
    return 0


def cmd_delete(args) -> int:
    api(args).delete_webhook(args.name)
    say(f"webhook {args.name} deleted with its deliveries; the tasks it started stay")
    return 0


def register(line: CommandLine) -> None:
    client = line.client
    hooks = line.group("webhooks", help="webhooks from GitHub, Uptime Kuma or signed JSON that start tasks and "
                                        "pipelines")
    p = hooks.add_parser("create", parents=[client], help="make a hook; prints its secret (once) and where it goes")
    p.add_argument("name", help="lowercase letters, digits and dashes; the hook's URL ends in it")
    p.add_argument("--kind", choices=KINDS, required=True, help="who sends: github (signed), uptime-kuma (secret as "
                                                                 "bearer or ?secret=), json (signed as GitHub signs)")
    p.add_argument("--rules", required=True, metavar="FILE",
                   help="JSON list of rules, `-` for stdin: {\"event\": \"pull_request\", \"actions\": [\"opened\"], "
                        "\"task\": {\"agent\": \"code-reviewer\", \"prompt\": \"Review {{ event.pull_request.diff_url }}\"}}")
    p.add_argument("--debounce", type=float, metavar="SECONDS",
                   help="uptime-kuma: how long a DOWN waits for an UP before its response starts (default: the "
                        "Commander's webhook_debounce)")
    p.set_defaults(func=cmd_create)
    p = hooks.add_parser("list", parents=[client], help="every hook: kind, rules, URL (never the secrets)")
    p.set_defaults(func=cmd_list)
    p = hooks.add_parser("show", parents=[client], help="a hook's rules and recent deliveries: status, what started, "
                                                        "errors")
    p.add_argument("name")
    p.add_argument("--limit", type=int, default=20, help="how many deliveries, newest first (1-200; default 20)")
    p.set_defaults(func=cmd_show)
    p = hooks.add_parser("rotate-secret", parents=[client], help="a new secret (printed once); the old one stops "
                                                                 "working at once")
    p.add_argument("name")
    p.set_defaults(func=cmd_rotate)
    p = hooks.add_parser("delete", parents=[client], help="delete a hook and its deliveries (what it started stays)")
    p.add_argument("name")
    p.set_defaults(func=cmd_delete)
