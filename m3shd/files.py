"""Private files replaced whole: settings with tokens, a N0D3's identity and held results, the
bridge's state. A reader (or a machine that lost power) finds the old content or the new one,
never a part, and no one but this user can read either."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_private(path: str | os.PathLike, data: str | bytes) -> None:
    """Replace `path` with `data` (text as UTF-8), mode 0600, creating its directory if need be.

    The data goes to a temporary file in the same directory, made 0600 before anything is written
    to it (mkstemp), and flushed to disk; a rename then puts it in place, and the directory is
    flushed too, so the rename itself survives a power cut. On any failure `path` is left as it
    was and the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data.encode() if isinstance(data, str) else data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
