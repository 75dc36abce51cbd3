"""`m3shd`: start the mesh, run its parts, and use it from a terminal.

The Commander API's client commands live in m3shd/commands/ (task, pipeline, provenance, nodes,
token, runners, mcp: one module each); the Commander, the N0D3, the bridge and the image builder add their
own (m3shd/components.py). All of them use the helpers here: say, CliError and the exit statuses,
emit (--json), for_terminal, read_json, api.

Exit statuses: EXIT_STATUSES below (`m3shd --help` and the README show the same table).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys

from m3shd import __version__, config
from m3shd.components import CommandLine, assemble
from m3shd.errors import CommanderError, CommanderUnreachable, CommanderUntrusted

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_TIMEOUT = 1, 2, 3, 4
EXIT_REFUSED, EXIT_NOT_FOUND, EXIT_CONFLICT, EXIT_INCOMPLETE = 5, 6, 7, 8
EXIT_INTERRUPTED, EXIT_PIPE_CLOSED = 130, 128 + signal.SIGPIPE

# What each status means, for scripts: one table for `m3shd --help` and the README.
EXIT_STATUSES = (
    (0, "ok"),
    (EXIT_FAILED, "the task or pipeline failed or was cancelled; `provenance verify`: the chain is broken"),
    (EXIT_USAGE, "bad usage or configuration, or a request the Commander calls invalid (400)"),
    (EXIT_UNREACHABLE, "the Commander is unreachable, or cannot answer now (429, 5xx): try again later"),
    (EXIT_TIMEOUT, "gave up waiting (--timeout); the task or pipeline goes on"),
    (EXIT_REFUSED, "refused: no valid token, or it lacks the permission (401, 403)"),
    (EXIT_NOT_FOUND, "no such task, pipeline, node or token (404)"),
    (EXIT_CONFLICT, "not possible in its current state, e.g. approving a task that is not awaiting approval (409)"),
    (EXIT_INCOMPLETE, "`provenance verify`: nothing is wrong, but not every link has a signed result"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
    (EXIT_PIPE_CLOSED, "the reader of the output stopped early (`| head`), as a command ended by SIGPIPE"),
)


def refusal_status(http_status: int) -> int:
    """The exit status for an error the Commander answered with."""
    if http_status in (401, 403):
        return EXIT_REFUSED
    if http_status == 404:
        return EXIT_NOT_FOUND
    if http_status == 409:
        return EXIT_CONFLICT
    if http_status == 429 or http_status >= 500:
        return EXIT_UNREACHABLE
    return EXIT_USAGE  # 400 and the rest of 4xx: the request itself


class CliError(Exception):
    def __init__(self, message: str, status: int = EXIT_USAGE):
        super().__init__(message)
        self.status = status


# C0 and C1 controls but tab and newline, which only lay text out, and the Unicode Bidi_Control
# characters, which reorder the text after them on screen (the "Trojan Source" trick).
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def for_terminal(text: str) -> str:
    """Task output and node-reported text are untrusted. Shown to a person (on a terminal, or
    piped to `less -R`, which obeys escapes as well), control characters could rewrite the screen
    or its title and bidi overrides could reorder what is read, so they are shown as escapes
    (`\\x1b`, `\\u202e`), never obeyed. `--json` keeps the text exact (JSON escapes them itself)."""
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class HumanOutput:
    """stdout while a command prints for people: everything written passes through for_terminal,
    so no table or line can forget it."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(for_terminal(text))

    def __getattr__(self, name):
        return getattr(self.stream, name)


def say(*parts) -> None:
    """Progress and summaries go to stderr, so stdout carries only the answer or the JSON."""
    print(*(for_terminal(str(part)) for part in parts), file=sys.stderr, flush=True)


# --- helpers ---------------------------------------------------------------------------------

def api(args):
    # Imported here: `commander serve` must not load requests (and ssl) before gevent patches.
    from m3shd.client import ApiClient

    settings = config.load(config.ClientSettings, args.config, url=args.url, token=args.token)
    if not settings.token:
        raise CliError("no API token: pass --token, set M3SHD_CLIENT_TOKEN, or run `m3shd up` (it saves one)")
    return ApiClient(settings.url, settings.token, ca_file=settings.ca_file)


def emit(args, document, human) -> None:
    """Print `document` as JSON with --json, else as `human(document)` prints it for people."""
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        with contextlib.redirect_stdout(HumanOutput(sys.stdout)):
            human(document)


def duration(seconds: float) -> str:
    """A span of time as a person reads it in a table: 45 s, 12 min, 5 h, 3 d."""
    seconds = abs(seconds)
    for unit, size, up_to in (("s", 1, 90), ("min", 60, 90 * 60), ("h", 3600, 36 * 3600)):
        if seconds < up_to:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds / 86400:.0f} d"


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
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="exit status:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_STATUSES))
    parser.add_argument("--version", action="version", version=f"m3shd {__version__}")
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=argparse.ArgumentParser)
    line = CommandLine(top, common, connection, client)
    # Imported here: the command modules use this module's helpers.
    from m3shd.commands import agents, login, mcp, membership, memory, nodes, pipelines, provenance, runners, spend
    from m3shd.commands import plugins, tasks, tokens, webhooks

    # --help lists them in this order
    for commands in (login, mcp, tasks, pipelines, provenance, nodes, membership, tokens, runners, agents, memory,
                     spend, webhooks, plugins):
        commands.register(line)
    absent = assemble(line)
    if absent:
        parser.not_installed = "not installed here:\n" + "\n".join(f"  {hint}" for hint in absent)
        parser.epilog = f"{parser.epilog}\n\n{parser.not_installed}"
    return parser


class TopParser(argparse.ArgumentParser):
    """`m3shd` itself: a usage error also says which commands are not installed here and how to
    install them, since the command that was not found may be one of theirs."""

    not_installed = ""

    def error(self, message):
        super().error(f"{message}\n{self.not_installed}" if self.not_installed else message)


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
        return EXIT_PIPE_CLOSED


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
        return refusal_status(exc.status)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
