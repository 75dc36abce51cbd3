"""Pyflakes' checks (ruff's F rules) over all of the repository's Python: an undefined name, an
unused import or a redefinition fails here, before CI. A merge once shipped a NameError (a
missing `import os` in a rarely taken branch) that no test ran into."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness import ROOT

SOURCES = ("commander", "n0d3", "bridge", "images", "m3shd", "tests", "bench")


def python_scripts() -> list[Path]:
    """Python files without a .py suffix (the fakes put on PATH in tests), found by their #! line."""
    scripts = []
    for source in SOURCES:
        for path in sorted((ROOT / source).rglob("*")):
            if path.is_file() and not path.suffix:
                with path.open("rb") as opened:
                    first = opened.readline(200)
                if first.startswith(b"#!") and b"python" in first:
                    scripts.append(path)
    return scripts


def pyflakes(*paths) -> subprocess.CompletedProcess:
    """`ruff check --select F` over `paths`, with the settings in pyproject.toml."""
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F", "--no-cache",
                           "--output-format", "concise", *map(str, paths)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_fakes_on_path_are_checked_too():
    assert {path.name for path in python_scripts()} >= {"claude", "osascript"}


def test_pyflakes_finds_nothing_in_the_repository():
    found = pyflakes(*SOURCES, *python_scripts())
    assert found.returncode == 0, f"pyflakes (ruff check --select F; --fix drops unused imports) found:\n" \
                                  f"{found.stdout}{found.stderr}"


def test_pyflakes_catches_a_missing_import(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import json\n\n\ndef data_dir():\n    return os.environ['HOME']\n")
    found = pyflakes(broken)
    assert found.returncode == 1
    assert "F821 Undefined name `os`" in found.stdout and "F401 [*] `json` imported but unused" in found.stdout
