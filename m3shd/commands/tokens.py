"""`m3shd token`: create, list and revoke API and join tokens (the Commander adds `create --local`)."""

from __future__ import annotations

import time

from m3shd.cli import api, duration, emit, say
from m3shd.components import CommandLine
from m3shd.wire import Role


def cmd_token_create(args) -> int:
    created = api(args).create_token(args.name, kind=args.kind, role=args.role, permissions=token_permissions(args),
                                     expires_in=args.expires_in, agent=args.agent)
    return show_token(args, created)


def token_permissions(args) -> list[str] | None:
    return [p.strip() for p in args.permissions.split(",")] if args.permissions else None


def show_token(args, created: dict) -> int:
    """A new token: the secret alone on stdout (for scripts), what it may do on stderr. A join
    token shows as its join string, TOKEN#sha256:HASH, which pins the Commander's CA."""
    def human(t):
        print(t.get("join") or t["token"])
        scope = f" as agent {t['agent']} only" if t.get("agent") else ""
        say(f"{t['kind']} token {t['id']} `{t['name']}`: {', '.join(t['permissions'])}{scope}; shown once, "
            f"store it now")
        if t.get("join") and t["join"] != t["token"]:
            say("after the # is the hash of the Commander's CA: `m3shd n0d3 join URL` with all of it pins that CA")

    emit(args, created, human)
    return 0


def cmd_token_list(args) -> int:
    found = api(args).list_tokens()

    def table(items):
        t0 = time.time()
        print(f"{'ID':>4}  {'KIND':<5} {'NAME':<24} {'PREFIX':<9} {'STATE':<8} {'EXPIRES':<10} {'LAST USED':<10} "
              "PERMISSIONS")
        for t in items:
            expired = t["expires_at"] is not None and t["expires_at"] < t0
            state = "revoked" if t["revoked_at"] else "expired" if expired else "active"
            expires = "never" if t["expires_at"] is None else (f"{duration(t0 - t['expires_at'])} ago" if expired
                                                               else f"in {duration(t['expires_at'] - t0)}")
            used = "never" if t["last_used_at"] is None else f"{duration(t0 - t['last_used_at'])} ago"
            print(f"{t['id']:>4}  {t['kind']:<5} {t['name'][:24]:<24} {t['prefix']:<9} {state:<8} {expires:<10} "
                  f"{used:<10} {', '.join(t['permissions'])}")

    emit(args, found, table)
    return 0


def cmd_token_revoke(args) -> int:
    emit(args, api(args).revoke_token(args.id), lambda t: say(f"token {t['id']} `{t['name']}` revoked"))
    return 0


def register(line: CommandLine) -> None:
    client = line.client
    token = line.group("token", help="API and join tokens")
    p = token.add_parser("create", parents=[client], help="create a token (printed once)")
    p.add_argument("name")
    p.add_argument("--kind", choices=("api", "join"), default="api")
    p.add_argument("--role", choices=tuple(Role))
    p.add_argument("--permissions", help="comma-separated permissions instead of a role")
    p.add_argument("--expires-in", type=float, metavar="SECONDS",
                   help="lifetime; API tokens default to none, join tokens to one day")
    p.add_argument("--agent", metavar="NAME", help="may only submit tasks as this agent and read its own tasks "
                                                   "(default permissions: tasks:submit,tasks:read)")
    p.set_defaults(func=cmd_token_create)
    p = token.add_parser("list", parents=[client], help="list API and join tokens (never their secrets)")
    p.set_defaults(func=cmd_token_list)
    p = token.add_parser("revoke", parents=[client], help="revoke a token")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_token_revoke)
