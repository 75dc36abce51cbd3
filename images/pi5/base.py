"""Checks the input is a Raspberry Pi OS arm64 image, and learns how it runs its first boot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from images.pi5.disk import FAT_TYPES, LINUX_TYPES, Fat, Partition, partitions
from images.pi5.tools import ImageError

CLOUD_INIT, FIRSTRUN = "cloud-init", "firstrun"


@dataclass(frozen=True)
class Base:
    boot: Partition
    release: str       # issue.txt's first line, e.g. "Raspberry Pi reference 2025-10-01"
    first_boot: str    # CLOUD_INIT (Trixie-based) or FIRSTRUN (Bookworm-based)
    python: str        # the base image's python3, which the wheels must fit

    @property
    def debian(self) -> str:
        return "trixie" if self.first_boot == CLOUD_INIT else "bookworm"


def inspect(image: Path, name: str) -> Base:
    """Check image (the base image's copy, called `name` in errors) and describe it."""
    found = partitions(image, name)
    if not found:
        raise ImageError(f"{name} is not a disk image: its partition table is empty")
    size = image.stat().st_size
    end = max(p.end for p in found)
    if end > size:
        raise ImageError(f"{name} is truncated: its partitions end at byte {end:,} but the file has "
                         f"{size:,}; download it again")
    boot = next((p for p in found if p.type in FAT_TYPES), None)
    if boot is None or not any(p.type in LINUX_TYPES for p in found):
        raise ImageError(f"{name} is not a Raspberry Pi OS image: it needs a FAT boot partition and a Linux "
                         f"root partition")
    fat = Fat(image, boot.offset)
    names = fat.names()
    missing = [n for n in ("cmdline.txt", "config.txt", "issue.txt") if n not in names]
    issue = fat.read("issue.txt") if "issue.txt" in names else ""
    if missing or not issue.startswith("Raspberry Pi reference"):
        raise ImageError(f"{name} is not a Raspberry Pi OS image: its boot partition lacks "
                         f"{', '.join(missing) or 'the pi-gen issue.txt'}")
    # The 32-bit images carry 32-bit kernels (kernel7l.img); the 64-bit ones only kernel8 and kernel_2712.
    if "kernel7l.img" in names or not {"kernel8.img", "kernel_2712.img"} & names:
        raise ImageError(f"{name} is not an arm64 image: use Raspberry Pi OS Lite (64-bit); "
                         f"the N0D3's wheels are built for arm64")
    if "m3shd" in names or "systemd.run=" in fat.read("cmdline.txt"):
        raise ImageError(f"{name} has already been prepared for first boot: start from the downloaded image")
    # Trixie-based releases (October 2025 on) ship cloud-init's NoCloud seed on the boot partition.
    if {"user-data", "meta-data"} & names:
        return Base(boot, issue.splitlines()[0], CLOUD_INIT, "3.13")
    return Base(boot, issue.splitlines()[0], FIRSTRUN, "3.11")
