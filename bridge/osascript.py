"""Sending through Messages.app: fixed AppleScript on `osascript -`'s stdin, values as argv.

Nothing from a message or a task is ever spliced into script text, and no shell is involved:
the text, the chat GUID, the address and a file's path reach the script only as `item N of argv`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

SEND_SCRIPT = """\
on run argv
	set theText to item 1 of argv
	set chatId to item 2 of argv
	set theAddress to item 3 of argv
	set filePath to item 4 of argv
	if filePath is not "" then set theFile to POSIX file filePath
	tell application "Messages"
		if theAddress is "" then
			set theTarget to chat id chatId
		else
			set theTarget to participant theAddress of (1st account whose service type = iMessage)
		end if
		if filePath is "" then
			send theText to theTarget
		else
			send theFile to theTarget
		end if
	end tell
end run
"""

# `enabled` is an account property in Messages' scripting dictionary (Big Sur onwards).
ACCOUNTS_SCRIPT = """\
tell application "Messages" to count (every account whose service type = iMessage and enabled is true)
"""

CANT_GET = -1728          # errAENoSuchObject: Messages has not loaded that chat (yet)
NOT_AUTHORIZED = -1743    # errAEEventNotPermitted: no Automation permission for Messages
RETRY_PAUSES = (0.5, 2.0)  # for -1728: Messages may still be loading the chat list
SPLIT_AT = 1500
_ERROR_NUMBER = re.compile(r"\((-?\d+)\)\s*$")


class OsascriptError(Exception):
    def __init__(self, number: int | None, message: str):
        super().__init__(message)
        self.number = number


def automation_advice() -> str:
    binary = os.path.realpath(sys.executable)
    return (f"macOS refused to let {binary} control Messages (-1743). Allow it: System Settings → "
            f"Privacy & Security → Automation → {binary} (or the app that started it) → switch on Messages; "
            f"if it is not listed, run `m3shd bridge run` once from Terminal and answer the prompt")


def run(script: str, args: list[str], osascript: str = "osascript", timeout: float = 30.0) -> str:
    try:
        done = subprocess.run([osascript, "-", *args], input=script, capture_output=True, text=True,
                              timeout=timeout)
    except FileNotFoundError:
        raise OsascriptError(None, f"{osascript} not found: the bridge runs on macOS, which has /usr/bin/osascript") from None
    except subprocess.TimeoutExpired:
        raise OsascriptError(None, f"osascript did not finish within {timeout:g} s (is Messages stuck?)") from None
    if done.returncode != 0:
        error = done.stderr.strip()
        match = _ERROR_NUMBER.search(error)
        number = int(match.group(1)) if match else None
        if number == NOT_AUTHORIZED:
            raise OsascriptError(number, automation_advice())
        raise OsascriptError(number, error[-300:] or f"osascript exited {done.returncode}")
    return done.stdout.strip()


def send(text: str, chat_guid: str, address: str | None = None, osascript: str = "osascript",
         pauses: tuple[float, ...] = RETRY_PAUSES, file: Path | None = None) -> None:
    """Send the text (or the file, which must be inside ~/Library/Messages: Messages cannot send
    from elsewhere) to the chat by GUID; while Messages cannot find it (-1728) retry after each
    pause, then, for a one-to-one chat, send to the person through the iMessage account instead.
    With no chat GUID, send to the person at once."""
    text = text.replace("\0", "")  # an argv string cannot hold NUL, and a task's output might
    path = str(file) if file else ""
    for pause in (*pauses, None) if chat_guid else ():
        try:
            run(SEND_SCRIPT, [text, chat_guid, "", path], osascript)
            return
        except OsascriptError as exc:
            if exc.number != CANT_GET:
                raise
            if pause is None:
                if not address:
                    raise
                break
            time.sleep(pause)
    run(SEND_SCRIPT, [text, "", address, path], osascript)


def signed_in_accounts(osascript: str = "osascript") -> int:
    return int(run(ACCOUNTS_SCRIPT, [], osascript) or 0)


def split(text: str, limit: int = SPLIT_AT) -> list[str]:
    """Pieces of at most `limit` characters, cut at a paragraph break, else a line break,
    else a space (each only if it keeps the piece at least a third full), else hard."""
    pieces = []
    rest = text.strip()
    while len(rest) > limit:
        window = rest[:limit + 1]
        cut = next((at for separator in ("\n\n", "\n", " ") if (at := window.rfind(separator)) >= limit // 3), limit)
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces
