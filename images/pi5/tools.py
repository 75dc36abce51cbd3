"""Running the external programs the builder needs, with one clear error when one fails."""

from __future__ import annotations

import os
import shutil
import subprocess


class ImageError(Exception):
    """A bad input or a missing tool: said once, plainly, without a traceback."""


# Where each tool comes from, for the error that says it is missing.
MTOOLS = "Debian: apt install mtools; macOS: brew install mtools"
PACKAGES = {
    "sfdisk": "Debian: apt install fdisk; macOS: brew install util-linux",
    **dict.fromkeys(("mtype", "mcopy", "mdir", "mmd"), MTOOLS),
    "xz": "Debian: apt install xz-utils; macOS: brew install xz",
}


def need(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        hints = sorted({PACKAGES.get(tool, tool) for tool in missing})
        raise ImageError(f"missing tool{'s' if len(missing) > 1 else ''} {', '.join(missing)} ({'; '.join(hints)})")


# mtools checks that a FAT's geometry matches a floppy or disk drive; an image file has none.
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def run(argv: list[str], what: str, **options) -> subprocess.CompletedProcess:
    """Run argv (never through a shell); a failure becomes an ImageError saying what we were doing."""
    options.setdefault("stdout", subprocess.PIPE)
    done = subprocess.run(argv, stderr=subprocess.PIPE, env=MTOOLS_ENV, **options)
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        raise ImageError(f"{what}: {detail[-1] if detail else f'{argv[0]} exited {done.returncode}'}")
    return done
