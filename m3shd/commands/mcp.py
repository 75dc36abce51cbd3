"""`m3shd mcp`: the mesh as tools for Claude Code and Claude Desktop (stdio or streamable HTTP),
and `m3shd mcp install`, which adds this server to their configuration."""

from __future__ import annotations

import argparse

from m3shd import config
from m3shd.cli import CliError, api, say
from m3shd.components import CommandLine


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
    settings = config.load(config.ClientSettings, args.config, url=args.url, token=args.token)
    if not settings.token:
        raise CliError("no API token to give the MCP server: pass --token, set M3SHD_CLIENT_TOKEN, or run "
                       "`m3shd up` (it saves one); `m3shd token create claude --role mobile` makes one for it")
    targets = [(claude_code_config(), True, "Claude Code")] if args.claude_code else []
    targets += [(claude_desktop_config(), False, "Claude Desktop")] if args.claude_desktop else []
    for path, stdio_type, app in targets:
        try:
            outcome, backup = install(path, args.name, server_entry(settings.url, settings.token, stdio_type,
                                                                     settings.ca_file))
        except InstallError as exc:
            raise CliError(str(exc)) from None
        kept = f"; the previous file is {backup}" if backup else ""
        say(f"{app}: {args.name} {outcome} in {path}{kept}"
            + ("" if outcome == "unchanged" else f"; restart {app} to load it"))
    return 0


def register(line: CommandLine) -> None:
    connection = line.connection
    mcp = line.top.add_parser(
        "mcp", parents=[connection], help="the mesh as tools in Claude Code and Claude Desktop (MCP server)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="m3shd mcp [--http HOST:PORT] [--url URL] [--token TOKEN] [--config FILE]\n"
              "       m3shd mcp install [--claude-code] [--claude-desktop] [--name NAME] [--url URL] [--token TOKEN]",
        description="Serve the Model Context Protocol over stdio (what Claude Code and Claude Desktop start)\n"
                    "or over streamable HTTP with --http.\n\n"
                    "tools:      dispatch_task, get_task, wait_for_task, list_tasks, cancel_task,\n"
                    "            approve_task, reject_task, create_pipeline, get_pipeline, list_nodes,\n"
                    "            list_agents, get_agent, spend_report, query_memory, store_memory\n"
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
