"""`m3shd runners`: the runner credentials the Commander hands to N0D3S that have none of their own
(an Anthropic API key, a Claude Code token), sealed to each node inside its leases."""

from __future__ import annotations

import argparse
import sys
import time

from m3shd.cli import CliError, api, emit, say
from m3shd.components import CommandLine
from m3shd.wire import CredentialKind

WHAT = {CredentialKind.API_KEY: "Anthropic API key", CredentialKind.OAUTH_TOKEN: "Claude Code token"}
ARTICLE = {CredentialKind.API_KEY: "an", CredentialKind.OAUTH_TOKEN: "a"}


def read_secret(what: str) -> str:
    """From standard input, or asked for on a terminal: never from the command line, where `ps`
    and the shell's history would keep it."""
    if sys.stdin.isatty():
        import getpass

        secret = getpass.getpass(f"{what} (not echoed): ")
    else:
        secret = sys.stdin.read()
    secret = secret.strip()
    if not secret:
        raise CliError(f"no {what} given: pipe it in (e.g. `m3shd runners set-key < key.txt`) or type it when asked")
    return secret


def describe_scope(credential: dict) -> str:
    scope = credential["scope"]
    return "every node" if scope == "mesh" else scope.replace(":", " ", 1)


def cmd_runners_set(args) -> int:
    kind = CredentialKind.OAUTH_TOKEN if args.sub == "set-token" else CredentialKind.API_KEY
    if args.on_command_line:  # said without echoing it back
        raise CliError(f"the {WHAT[kind]} goes on standard input or at the prompt, never on the command line, "
                       f"where `ps` and your shell's history keep it: `m3shd runners {args.sub}` and paste it")
    client = api(args)  # before the prompt: a missing token is said before a secret is typed
    stored = client.store_runner_credential(kind, read_secret(WHAT[kind]), capability=args.capability,
                                            node_id=args.node)
    emit(args, stored, lambda c: say(
        f"stored {WHAT[kind]} {c['id']} for {describe_scope(c)} ({c['prefix'] or '?'}…, fingerprint "
        f"{c['fingerprint']}); N0D3S with no credential of their own get it, sealed, with their next task"))
    return 0


def cmd_runners_list(args) -> int:
    found = api(args).list_runner_credentials()

    def table(items):
        if not items:
            say("no runner credentials stored: `m3shd runners set-key` stores an API key for every node")
            return
        print(f"{'ID':>4}  {'KIND':<12} {'FOR':<28} {'PREFIX':<14} {'FINGERPRINT':<17} STORED")
        for c in items:
            stored = time.strftime("%Y-%m-%d %H:%M", time.localtime(c["stored_at"]))
            print(f"{c['id']:>4}  {c['kind']:<12} {describe_scope(c)[:28]:<28} {c['prefix'] or '?':<14} "
                  f"{c['fingerprint']:<17} {stored} by {c['stored_by']}")

    emit(args, found, table)
    return 0


def cmd_runners_remove(args) -> int:
    api(args).remove_runner_credential(args.id)
    say(f"removed runner credential {args.id}; no lease carries it from now on")
    return 0


def register(line: CommandLine) -> None:
    runners = line.group("runners", help="runner credentials the Commander hands to N0D3S without their own")
    for name, kind in (("set-key", CredentialKind.API_KEY), ("set-token", CredentialKind.OAUTH_TOKEN)):
        what = f"{ARTICLE[kind]} {WHAT[kind]}"
        p = runners.add_parser(
            name, parents=[line.client], help=f"store {what} for the N0D3S (read from standard input or asked for, "
                                              "never from the command line)",
            description=f"Store {what} on the Commander, encrypted at rest. A N0D3 with no credential of its own "
                        "receives it inside each lease, sealed to that node's key, keeps it in memory for that task "
                        "only and never writes it down. "
                        + ("Both runners use an API key." if kind == CredentialKind.API_KEY else
                           "Only the Claude Code CLI runner uses this token (`claude setup-token` prints one).")
                        + " A node's own credential always wins. Storing again for the same scope replaces it.")
        p.add_argument("on_command_line", nargs="?", help=argparse.SUPPRESS)
        scope = p.add_mutually_exclusive_group()
        scope.add_argument("--capability", metavar="LABEL", help="only for nodes with this capability, e.g. board=pi5")
        scope.add_argument("--node", type=int, metavar="ID", help="only for this node")
        p.set_defaults(func=cmd_runners_set)
    p = runners.add_parser("list", parents=[line.client], help="list stored credentials (never their secrets)")
    p.set_defaults(func=cmd_runners_list)
    p = runners.add_parser("remove", parents=[line.client], help="remove a credential: no lease carries it again")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_runners_remove)
