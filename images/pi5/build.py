"""`m3shd image build`: a Raspberry Pi OS Lite arm64 image in, a self-joining N0D3 image out.

Only the FAT boot partition changes; the root file system is copied byte for byte. The output
appears under its final name only when complete (with its .sha256 next to it); on any error
the partial files are removed.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Callable

from images.pi5 import boot_files, claude_code as claude_code_module
from images.pi5.base import CLOUD_INIT, Base, inspect
from images.pi5.boot_files import PAYLOAD, Spec
from images.pi5.disk import Fat
from images.pi5.tools import ImageError, need, run
from images.pi5.wheels import wheelhouse
from m3shd import config

XZ_MAGIC = b"\xfd7zXZ\x00"
CHUNK = 4 << 20
ZEROS = bytes(CHUNK)


def build(source: Path, output: Path, spec: Spec, *, sha256: str | None = None, wheel: Path | None = None,
          say: Callable[[str], None] = print, machine: str = "aarch64", claude_code: str | None = None,
          claude_code_package: Path | None = None) -> Path:
    """`machine` is the board's; only the simulated first boot (an x86_64 container) changes it.
    `claude_code`: a version of Claude Code (or `latest`) to fetch and carry; `claude_code_package`:
    its npm tarball, fetched already."""
    started = time.monotonic()
    spec.check()
    claude = None
    if claude_code_package is not None:
        if not claude_code_package.is_file():
            raise ImageError(f"no such file: {claude_code_package}")
        claude = claude_code_package
    elif claude_code:
        say(f"fetching Claude Code {claude_code} for linux-{claude_code_module.NPM_CPU[machine]} "
            "(about 180 MB the first time; cached)")
        claude = claude_code_module.fetch(claude_code, machine)
    if claude is not None:
        say(f"Claude Code {claude_code_module.check(claude, machine)} goes on the image")
    if not output.name.endswith((".img", ".img.xz")):
        raise ImageError(f"output {output.name}: name it NAME.img or NAME.img.xz")
    if not source.is_file():
        raise ImageError(f"no such base image: {source}")
    if output.resolve() == source.resolve():
        raise ImageError(f"{output.name} is the base image: write the result under another name")
    with source.open("rb") as head:
        compressed_in = head.read(6) == XZ_MAGIC
    need("sfdisk", "mdir", "mtype", "mcopy", "mmd", *(["xz"] if compressed_in or output.name.endswith(".xz") else []))
    output.parent.mkdir(parents=True, exist_ok=True)
    raw = output.with_name(f".{output.name}.raw.partial")
    packed = output.with_name(f".{output.name}.partial")
    try:
        say(f"reading {source.name}{' (decompressing)' if compressed_in else ''}")
        digest = copy_out(source, raw, compressed_in, hashing=bool(sha256))
        if sha256 and digest != sha256.lower():
            raise ImageError(f"checksum mismatch for {source.name}: expected {sha256.lower()}, got {digest}")
        base = inspect(raw, source.name)
        say(f"base image: {base.release} ({base.debian}, first boot by {base.first_boot}, Python {base.python})")
        write_payload(raw, base, spec, wheel, say, machine, claude)
        if output.name.endswith(".xz"):
            say("compressing with xz on every core (minutes for a full-size image; -o NAME.img skips it)")
            with packed.open("wb") as out:
                run(["xz", "--threads=0", "--stdout", str(raw)], "compressing the image", stdout=out)
            raw.unlink()
        else:
            raw.rename(packed)
        digest = file_sha256(packed)
        packed.rename(output)
    except BaseException:
        raw.unlink(missing_ok=True)
        packed.unlink(missing_ok=True)
        raise
    checksum = output.with_name(output.name + ".sha256")
    checksum.write_text(f"{digest}  {output.name}\n")
    say(f"wrote {output} ({output.stat().st_size / 1e6:,.1f} MB) and {checksum.name} in "
        f"{time.monotonic() - started:.1f} s; sha256 {digest}")
    return output


def copy_out(source: Path, dest: Path, compressed: bool, hashing: bool) -> str | None:
    """Copy (or decompress) the base image to dest, leaving holes where it is all zeros (most of
    a fresh image); return the SHA-256 of the source as read, when asked for."""
    digest = hashlib.sha256() if hashing else None
    with source.open("rb") as src, dest.open("wb") as out:
        if not compressed:
            while chunk := src.read(CHUNK):
                if digest:
                    digest.update(chunk)
                if chunk == ZEROS[:len(chunk)]:
                    out.seek(len(chunk), 1)
                else:
                    out.write(chunk)
            out.truncate()
            return digest and digest.hexdigest()
        xz = subprocess.Popen(["xz", "--decompress", "--stdout"], stdin=subprocess.PIPE, stdout=out,
                              stderr=subprocess.PIPE)
        try:
            while chunk := src.read(CHUNK):
                if digest:
                    digest.update(chunk)
                xz.stdin.write(chunk)
            xz.stdin.close()
        except BrokenPipeError:
            pass  # xz gave up early; its message follows
        error = xz.stderr.read().decode(errors="replace").strip()
        if xz.wait() != 0:
            raise ImageError(f"{source.name} does not decompress (truncated download?): {error}")
    return digest and digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_payload(image: Path, base: Base, spec: Spec, wheel: Path | None, say: Callable[[str], None],
                  machine: str, claude: Path | None = None) -> None:
    fat = Fat(image, base.boot.offset)
    with tempfile.TemporaryDirectory(prefix="m3shd-image-") as tmp:
        if claude is not None:
            needed, free = claude.stat().st_size, fat.free_bytes()
            if needed + (8 << 20) > free:  # room for the wheels and settings too
                raise ImageError(f"the boot partition has {free / 1e6:,.0f} MB free and Claude Code needs "
                                 f"{needed / 1e6:,.0f} MB: build without --claude-code (the SDK runner works on the "
                                 "Commander's API key), or start from an image with a larger boot partition")
        say(f"gathering the N0D3's {machine} wheels for Python {base.python}")
        wheels = wheelhouse(Path(tmp) / "wheels", base.python, wheel, machine)
        settings = Path(tmp) / "n0d3.toml"
        config.write_section(settings, "n0d3", boot_files.node_settings(spec))
        say(f"writing {len(wheels)} wheels, the N0D3 settings and the first-boot files to the boot partition")
        fat.mkdir(PAYLOAD)
        fat.mkdir(f"{PAYLOAD}/wheels")
        fat.copy_in(wheels, f"{PAYLOAD}/wheels/")
        fat.copy_in([settings], f"{PAYLOAD}/n0d3.toml")
        if claude is not None:
            say(f"writing Claude Code ({claude.stat().st_size / 1e6:,.0f} MB) to the boot partition")
            fat.copy_in(list(claude_code_module.copy_for_payload(claude, Path(tmp))), f"{PAYLOAD}/")
        for name in ("firstboot.sh", "m3shd-n0d3.service"):
            fat.write(f"{PAYLOAD}/{name}", template(name))
        fat.write(f"{PAYLOAD}/hostname", spec.hostname + "\n")
        if base.first_boot == CLOUD_INIT:
            files = boot_files.cloud_init(spec)
        else:
            files = boot_files.firstrun(spec) | {
                "firstrun.sh": template("firstrun.sh"),
                "cmdline.txt": boot_files.cmdline_with_firstrun(fat.read("cmdline.txt")),
            }
        for name, text in files.items():
            fat.write(name, text)


def template(name: str) -> str:
    return resources.files("images.pi5").joinpath("files", name).read_text()
