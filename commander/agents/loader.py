"""Profile files: the shipped bench (commander/agents/bench/) and the operator's own
(`<config dir>/agents/`, or [commander] agents_dir), `<name>.md` or `<name>.toml`. A file in the
operator's directory overrides the shipped one of the same name.

`scan` reads them all and parses each on its own: a file that does not parse is reported with
its error (its agent is then marked broken) while the rest load. `signature` is the cheap look
(a stat per file) that tells whether anything changed since the last scan.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from commander.agents.profile import SLUG, Profile, ProfileError, parse
from commander.settings import CommanderSettings
from m3shd import config

log = logging.getLogger("m3shd.commander")

BENCH = Path(__file__).parent / "bench"
SUFFIXES = (".md", ".toml")


@dataclass(frozen=True)
class ProfileFile:
    """One agent's effective file: its text and what parsing it gave (a profile, or an error)."""
    name: str
    path: str
    text: str
    sha256: str
    profile: Profile | None
    error: str | None


def directories(settings: CommanderSettings) -> list[Path]:
    """Where profiles are read from, lowest precedence first."""
    return [BENCH, Path(settings.agents_dir) if settings.agents_dir else config.config_dir() / "agents"]


def candidates(directory: Path) -> list[Path]:
    """The profile files in `directory` (a README there is documentation, not an agent)."""
    try:
        return sorted(p for p in directory.iterdir()
                      if p.suffix in SUFFIXES and p.stem.upper() != "README" and p.is_file())
    except FileNotFoundError:
        return []


def scan(dirs: list[Path]) -> dict[str, ProfileFile]:
    """Every agent's effective profile file, by name: a later directory's file replaces an
    earlier one's. A file whose name cannot be an agent's is skipped (and logged)."""
    found: dict[str, ProfileFile] = {}
    for directory in dirs:
        mine: dict[str, list[Path]] = {}
        for path in candidates(directory):
            if not re.fullmatch(SLUG, path.stem):
                log.warning("agents: %s ignored: %r is not an agent name (2-40 of a-z, 0-9, -, "
                            "starting with a letter)", path, path.stem)
                continue
            mine.setdefault(path.stem, []).append(path)
        for name, paths in mine.items():
            found[name] = read(name, paths)
    return found


def read(name: str, paths: list[Path]) -> ProfileFile:
    path = paths[0]
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return ProfileFile(name, str(path), "", "", None, f"{path} cannot be read: {exc}")
    sha256 = hashlib.sha256(text.encode()).hexdigest()
    if len(paths) > 1:
        return ProfileFile(name, str(path), text, sha256, None,
                           f"two profiles for {name!r}: {', '.join(p.name for p in paths)}; keep one")
    try:
        return ProfileFile(name, str(path), text, sha256, parse(text, name), None)
    except ProfileError as exc:
        return ProfileFile(name, str(path), text, sha256, None, f"{path}: {exc}")


def signature(dirs: list[Path]) -> tuple:
    """What a change to any profile file changes: each directory's and each file's mtime and size
    (a file saved in place changes only its own; one renamed over, added or removed, its
    directory's)."""
    marks = []
    for directory in dirs:
        try:
            marks.append((str(directory), os.stat(directory).st_mtime_ns))
        except FileNotFoundError:
            marks.append((str(directory), None))
            continue
        for path in candidates(directory):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            marks.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(marks)
