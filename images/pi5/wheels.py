"""The N0D3's wheelhouse: the m3shd wheel plus every dependency as an arm64 wheel for the base
image's Python, so the first boot installs offline. Dependencies are cached (they rarely change)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from images.pi5.tools import ImageError, run

CACHE = Path(os.environ.get("M3SHD_IMAGE_CACHE", "/var/tmp/m3shd-image-cache"))
SOURCE = Path(__file__).resolve().parents[2]   # the checkout holding pyproject.toml, when there is one

# glibc of the base images: Bookworm 2.36, Trixie 2.41; wheels for any older manylinux run there.
GLIBC = {"3.11": 36, "3.13": 41}


def build_m3shd_wheel(dest: Path) -> Path:
    if not (SOURCE / "pyproject.toml").is_file():
        raise ImageError("this m3shd is not installed from a source checkout: pass --wheel with an m3shd wheel")
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dest), str(SOURCE)],
        "building the m3shd wheel")
    return next(dest.glob("m3shd-*.whl"))


def n0d3_requirements(wheel: Path) -> list[str]:
    """What the N0D3 needs, read from the wheel itself: its plain requirements and the n0d3 extra's."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            name = next((n for n in archive.namelist() if n.endswith(".dist-info/METADATA")), None)
            metadata = Parser().parsestr(archive.read(name).decode()) if name else None
    except zipfile.BadZipFile:
        metadata = None
    if metadata is None:
        raise ImageError(f"{wheel.name} is not a wheel")
    wanted = []
    for line in metadata.get_all("Requires-Dist") or []:
        requirement, _, marker = line.partition(";")
        if not marker.strip() or marker.replace(" ", "").replace("'", '"') == 'extra=="n0d3"':
            wanted.append(requirement.strip())
    return wanted


def pip_download(requirements: list[str], python: str, machine: str, dest: Path,
                 cache: Path | None) -> subprocess.CompletedProcess:
    """pip download for the target machine; from the cache alone when `cache` is given."""
    platforms = [f"manylinux_2_{minor}_{machine}" for minor in range(17, GLIBC[python] + 1)]
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--only-binary=:all:", "--implementation", "cp", "--python-version", python,
            *(f"--platform={p}" for p in [*platforms, f"manylinux2014_{machine}"]), "--dest", str(dest)]
    if cache is not None:
        argv += ["--no-index", "--find-links", str(cache)]
    return subprocess.run([*argv, *requirements], capture_output=True)


def wheelhouse(dest: Path, python: str, wheel: Path | None = None, machine: str = "aarch64") -> list[Path]:
    """Fill dest with the m3shd wheel, its dependencies and pip (the base image's venv has none)."""
    dest.mkdir(parents=True, exist_ok=True)
    if wheel is None:
        wheel = build_m3shd_wheel(dest)
    elif not wheel.is_file():
        raise ImageError(f"no such wheel: {wheel}")
    else:
        wheel = Path(shutil.copy2(wheel, dest))
    cache = CACHE / f"wheels-cp{python.replace('.', '')}-{machine}"
    cache.mkdir(parents=True, exist_ok=True)
    wanted = n0d3_requirements(wheel) + ["pip"]
    # From the cache when it holds a full resolution (fast, offline); else fill it from the index.
    if pip_download(wanted, python, machine, dest, cache).returncode != 0:
        online = pip_download(wanted, python, machine, cache, None)
        if online.returncode != 0:
            detail = online.stderr.decode(errors="replace").strip().splitlines()
            raise ImageError(f"downloading {machine} wheels for Python {python} (is PyPI reachable?): "
                             f"{detail[-1] if detail else 'pip failed'}")
        pip_download(wanted, python, machine, dest, cache).check_returncode()
    return sorted(dest.glob("*.whl"))
