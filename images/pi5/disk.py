"""The disk image: its partition table (sfdisk --json) and its FAT boot partition (mtools).

Nothing is mounted and no loop device is used: mtools reads and writes the FAT file system in
place at its byte offset (`image@@offset`), so this works as any user, on Linux and macOS.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from images.pi5.tools import ImageError, run

# MBR type codes and the GPT type GUID of FAT partitions, and of Linux ones.
FAT_TYPES = {"b", "c", "e", "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"}
LINUX_TYPES = {"83", "0fc63daf-8483-4772-8e79-3d69d8477de4"}


@dataclass(frozen=True)
class Partition:
    number: int
    type: str
    offset: int   # bytes from the start of the image
    size: int     # bytes

    @property
    def end(self) -> int:
        return self.offset + self.size


def partitions(image: Path, name: str) -> list[Partition]:
    """The partitions of image (called `name` in errors)."""
    done = subprocess.run(["sfdisk", "--json", str(image)], capture_output=True)
    try:
        table = json.loads(done.stdout)["partitiontable"]
    except (ValueError, KeyError):
        raise ImageError(f"{name} is not a disk image: it has no partition table") from None
    sector = table.get("sectorsize", 512)
    return [Partition(number=index + 1, type=str(p["type"]).lower(), offset=p["start"] * sector,
                      size=p["size"] * sector)
            for index, p in enumerate(table.get("partitions", []))]


class Fat:
    """A FAT file system inside an image file, at a byte offset."""

    def __init__(self, image: Path, offset: int):
        self.target = f"{image}@@{offset}"

    def names(self, directory: str = "") -> set[str]:
        """File and directory names in a directory (lower case: FAT ignores case)."""
        done = run(["mdir", "-b", "-i", self.target, f"::/{directory}"], "reading the boot partition")
        return {line.rstrip("/").rsplit("/", 1)[-1].lower() for line in done.stdout.decode().splitlines() if line}

    def free_bytes(self) -> int:
        """What is left on it, from mdir's last line (`   62 875 648 bytes free`)."""
        done = run(["mdir", "-i", self.target, "::/"], "reading the boot partition")
        last = done.stdout.decode().strip().splitlines()[-1]
        return int("".join(ch for ch in last.split("bytes free")[0] if ch.isdigit()))

    def read(self, name: str) -> str:
        return run(["mtype", "-i", self.target, f"::/{name}"], f"reading {name} from the boot partition").stdout.decode()

    def mkdir(self, name: str) -> None:
        run(["mmd", "-i", self.target, f"::/{name}"], f"making {name} on the boot partition")

    def copy_in(self, sources: list[Path], name: str) -> None:
        """Copy files in: to a file name, or (name ending in /) into a directory."""
        run(["mcopy", "-o", "-i", self.target, *map(str, sources), f"::/{name}"],
            f"writing {name} to the boot partition")

    def write(self, name: str, text: str) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".m3shd") as tmp:
            tmp.write(text)
            tmp.flush()
            self.copy_in([Path(tmp.name)], name)
