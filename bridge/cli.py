"""The bridge's commands: `bridge run`, `bridge scan` and `bridge install-agent`. Imports only the
standard library and m3shd at its top (see m3shd/components.py); the daemon loads when one runs."""

from __future__ import annotations

import argparse
import sys

from m3shd import config
from m3shd.cli import CliError, api, say
from m3shd.components import CommandLine, Commands


def cmd_bridge_run(args) -> int:
    from bridge.daemon import run
    from bridge.settings import BridgeSettings

    settings = config.load(BridgeSettings, args.config, chat_db=args.chat_db)
    return run(settings, api(args))


def cmd_bridge_scan(args) -> int:
    from bridge.chatdb import ChatDbProblem
    from bridge.daemon import scan
    from bridge.settings import BridgeSettings

    settings = config.load(BridgeSettings, args.config, chat_db=args.chat_db, window=args.window)
    try:
        return scan(settings, args.since_rowid, sys.stdout)
    except ChatDbProblem as exc:
        raise CliError(str(exc)) from None


def cmd_bridge_install_agent(args) -> int:
    from bridge.launchagent import install

    path = install(args.config, load=not args.no_load)
    say(f"wrote {path}" + ("" if args.no_load else " and loaded it; the bridge now starts at each login"))
    return 0


def register(line: CommandLine) -> None:
    bridge = line.group("bridge", help="the iMessage bridge (on the Mac signed in to Messages)",
                        description="Text the mesh from an iPhone: the bridge reads new messages from "
                                    "chat.db, relays the allowed ones to the Commander and replies through "
                                    "Messages. Settings: [bridge] in the config; Commander: [client] url and token.")
    chat_db = argparse.ArgumentParser(add_help=False)
    chat_db.add_argument("--chat-db", metavar="PATH", help="the Messages database (default ~/Library/Messages/chat.db)")
    p = bridge.add_parser("run", parents=[line.client, chat_db], help="run the bridge (checks permissions first)",
                          description="Check chat.db access (Full Disk Access), the Messages sign-in and the "
                                      "Commander token, then poll chat.db, relay, and reply. SIGTERM stops it.")
    p.set_defaults(func=cmd_bridge_run)
    p = bridge.add_parser("scan", parents=[line.common, chat_db],
                          help="print messages as the bridge would relay them (JSON lines)",
                          description="Read chat.db once and print one JSON object per message after --since-rowid: "
                                      "text, sender, chat_guid, is_group, attachments, and `skipped` with the "
                                      "reason when the bridge would not relay it. Sends nothing.")
    p.add_argument("--since-rowid", type=int, default=0, metavar="N", help="start after this message ROWID (default 0)")
    p.add_argument("--window", type=float, metavar="SECONDS",
                   help="skip messages older than this (default [bridge] window; 0 keeps every age)")
    p.set_defaults(func=cmd_bridge_scan)
    p = bridge.add_parser("install-agent", parents=[line.common], help="start the bridge at login (a LaunchAgent)",
                          description="Write ~/Library/LaunchAgents/com.m3shd.bridge.plist, which runs "
                                      "`m3shd bridge run` with this Python at login and restarts it if it exits, "
                                      "and load it with launchctl. Grant Full Disk Access to the Python it names.")
    p.add_argument("--no-load", action="store_true", help="only write the plist")
    p.set_defaults(func=cmd_bridge_install_agent)


# The bridge needs only what every m3shd install has (requests, and macOS's own osascript and sips).
COMMANDS = Commands(register, extra="bridge", settings="bridge.settings:BridgeSettings")
