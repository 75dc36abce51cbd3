"""Claude Code on the image (`m3shd image build --claude-code`), so the N0D3's CLI runner works
from the first boot with no internet beyond the LAN.

Claude Code ships a native executable per platform as an npm package
(`@anthropic-ai/claude-code-linux-arm64`: one binary, no Node.js needed). The builder fetches the
board's with `npm pack` from the npm registry, or takes a tarball already fetched
(`--claude-code-package`, for a builder offline), checks it is that package for that CPU, and
puts it on the boot partition with its SHA-256. The first boot checks the digest and installs
the binary as /opt/claude-code/claude, on PATH as /usr/local/bin/claude, read-only to the N0D3
(its unit turns the auto-updater off). Why the card and not the first boot's network: the Pi may
reach only the LAN, and a fetch at first boot would make every board download 180 MB.

Claude Code still needs a credential: `m3shd runners set-token` on the Commander hands one to the
N0D3 inside each lease (CLAUDE_CODE_OAUTH_TOKEN), or give the Pi its own.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from images.pi5.tools import ImageError, need
from images.pi5.wheels import CACHE

PACKAGE = "@anthropic-ai/claude-code"
NPM_CPU = {"aarch64": "arm64", "x86_64": "x64"}
BINARY = "package/claude"


def platform_package(machine: str) -> str:
    return f"{PACKAGE}-linux-{NPM_CPU[machine]}"


def npm(*args: str, what: str) -> str:
    need("npm")
    done = subprocess.run(["npm", *args], capture_output=True, text=True)
    if done.returncode != 0:
        detail = done.stderr.strip().splitlines()
        raise ImageError(f"{what} (is the npm registry reachable? or pass --claude-code-package): "
                         f"{detail[-1] if detail else f'npm exited {done.returncode}'}")
    return done.stdout


def fetch(version: str, machine: str) -> Path:
    """The board's Claude Code package at `version` (`latest` or exact), from the cache or npm."""
    name = platform_package(machine)
    exact = json.loads(npm("view", f"{name}@{version}", "version", "--json", what=f"looking up {name}@{version}"))
    if isinstance(exact, list):  # a range matching several: the newest
        exact = exact[-1]
    cache = CACHE / "claude-code"
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / f"{name.lstrip('@').replace('/', '-')}-{exact}.tgz"
    if not tarball.exists():
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            npm("pack", f"{name}@{exact}", "--pack-destination", tmp, "--silent", what=f"downloading {name}@{exact}")
            fetched = next(Path(tmp).glob("*.tgz"), None)
            if fetched is None:
                raise ImageError(f"npm pack {name}@{exact} wrote no tarball")
            fetched.rename(tarball)  # whole or not at all: the cache never holds half a download
    return tarball


def check(tarball: Path, machine: str) -> str:
    """The version of the Claude Code package in `tarball`, if it is the board's; else ImageError."""
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            names = set(archive.getnames())
            manifest = json.load(archive.extractfile("package/package.json")) if "package/package.json" in names else {}
    except (OSError, tarfile.TarError, ValueError) as exc:
        raise ImageError(f"{tarball.name} is not an npm package tarball: {exc}") from None
    wanted = platform_package(machine)
    if manifest.get("name") != wanted or BINARY not in names:
        raise ImageError(f"{tarball.name} is {manifest.get('name') or 'not an npm package'}, not {wanted} "
                         f"(the native Claude Code for this board, with its {BINARY})")
    return str(manifest.get("version", "?"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def copy_for_payload(tarball: Path, dest: Path) -> tuple[Path, Path]:
    """The tarball as the payload names it, and its `sha256sum -c` line."""
    shipped = Path(shutil.copyfile(tarball, dest / "claude-code.tgz"))
    checksum = dest / "claude-code.sha256"
    checksum.write_text(f"{sha256_of(shipped)}  claude-code.tgz\n")
    return shipped, checksum
