"""`m3shd mcp install`: add the m3shd server to Claude Code's or Claude Desktop's configuration.

Both keep their servers under `mcpServers` in a JSON file: Claude Desktop in
claude_desktop_config.json, Claude Code (user scope, what `claude mcp add --scope user`
writes: every project sees it) at the top of ~/.claude.json. Not the project scope
(.mcp.json), which is meant to be committed: the entry carries an API token.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from m3shd.files import write_private


class InstallError(Exception):
    pass


def claude_code_config() -> Path:
    return Path.home() / ".claude.json"


def claude_desktop_config() -> Path:
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json"
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "Claude" / "claude_desktop_config.json"


def server_entry(url: str, token: str, stdio_type: bool, ca_file: str = "") -> dict:
    """The command that starts `m3shd mcp` over stdio, with the Commander's URL and token in its
    environment (never on its command line, where `ps` would show it).

    This Python, not `m3shd` on PATH: Claude Desktop starts servers without the shell's PATH, so
    a virtualenv's `m3shd` would not be found. Claude Code records `"type": "stdio"`; Claude
    Desktop's format has no `type`. `ca_file`: the Commander's pinned CA, which it verifies with."""
    env = {"M3SHD_CLIENT_URL": url, "M3SHD_CLIENT_TOKEN": token} | ({"M3SHD_CLIENT_CA_FILE": ca_file} if ca_file else {})
    entry = {"command": sys.executable, "args": ["-m", "m3shd", "mcp"], "env": env}
    return {"type": "stdio", **entry} if stdio_type else entry


def install(path: Path, name: str, entry: dict) -> tuple[str, Path | None]:
    """Set `mcpServers[name]` in the JSON file at `path`, keeping everything else in it.

    Returns what happened ("added", "updated" or "unchanged") and the backup of the file as it
    was, if it was changed. Running it again with the same entry changes nothing."""
    document = read_config(path)
    servers = document.setdefault("mcpServers", {})
    if not isinstance(servers, dict):
        raise InstallError(f"{path}: `mcpServers` is not an object; fix it by hand first")
    if servers.get(name) == entry:
        return "unchanged", None
    outcome = "updated" if name in servers else "added"
    servers[name] = entry
    backup = None
    if path.exists():
        backup = unused_backup_name(path)
        write_private(backup, path.read_bytes())  # private: it may hold the token an update replaces
    write_private(path, json.dumps(document, indent=2) + "\n")  # it now holds a token
    return outcome, backup


def unused_backup_name(path: Path) -> Path:
    """`<name>.<date-time>.bak`, with a counter when a backup from the same second exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup, count = path.with_name(f"{path.name}.{stamp}.bak"), 1
    while backup.exists():
        backup, count = path.with_name(f"{path.name}.{stamp}-{count}.bak"), count + 1
    return backup


def read_config(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        document = json.loads(path.read_text() or "{}")
    except (OSError, ValueError) as exc:
        raise InstallError(f"cannot read {path} ({exc}); fix or move it, then run this again") from None
    if not isinstance(document, dict):
        raise InstallError(f"{path} is not a JSON object; fix or move it, then run this again")
    return document

