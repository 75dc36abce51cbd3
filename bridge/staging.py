"""Files the bridge sends. Messages sends only files it may read inside ~/Library/Messages, so
each is written under `<Messages dir>/m3shd-outgoing/<random>/` and removed a minute later, by
age, so files a stopped bridge left behind go as well."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

FOLDER = "m3shd-outgoing"
KEEP = 60.0  # seconds: Messages has copied the file into its own attachment store well before


def stage(messages_dir: Path, name: str, content: bytes) -> Path:
    folder = messages_dir / FOLDER / uuid.uuid4().hex
    folder.mkdir(parents=True, mode=0o700)
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(content)
    return path


def sweep(root: Path, keep: float = KEEP) -> None:
    """Remove the entries of `root` last changed more than `keep` seconds ago."""
    if not root.is_dir():
        return
    for entry in root.iterdir():
        if time.time() - entry.stat().st_mtime > keep:
            shutil.rmtree(entry, ignore_errors=True)
