"""`m3shd`: start the mesh, run its parts, and use it from a terminal.

The Commander API's client commands live in m3shd/commands/ (task, pipeline, provenance, nodes,
token, mcp: one module each); the Commander, the N0D3, the bridge and the image builder add their
own (m3shd/components.py). All of them use the helpers here: say, CliError and the exit statuses,
emit (--json), for_terminal, read_json, api.

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

from m3shd import __version__, config
from m3shd.components import CommandLine, assemble
from m3shd.errors import CommanderError, CommanderUnreachable

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_TIMEOUT = 1, 2, 3, 4
EXIT_INCOMPLETE = 8  # `provenance verify`: some links have no signed result


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
    return ApiClient(settings["url"], settings["token"])


def emit(args, document, human) -> None:
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        human(document)


def read_json(path: str) -> dict:
    """A JSON document from a file, or from standard input for `-`."""
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
        return json.loads(text)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise CliError(f"{path} is not JSON: {exc}") from None


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
    # Imported here: the command modules use this module's helpers.
    from m3shd.commands import mcp, nodes, pipelines, provenance, tasks, tokens

    for commands in (mcp, tasks, pipelines, provenance, nodes, tokens):  # --help lists them in this order
        commands.register(line)
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
