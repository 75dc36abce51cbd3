"""The house rule on imports (DESIGN.md §1): `commander`, `n0d3`, `bridge` and `images` may import
`m3shd`; none of them imports another, and `m3shd` imports none of them, not even lazily inside a
function. They meet only over HTTP, and each adds its commands through an entry point.

Every import statement counts, wherever it is (module top, function, `if`), and so does
`importlib.import_module("...")` or `__import__("...")` with a literal name."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ("commander", "n0d3", "bridge", "images")
PACKAGES = ("m3shd", *COMPONENTS)
IMPORT_FUNCTIONS = ("import_module", "__import__")


def imported(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, module name) for each absolute import in `tree`. Relative imports stay inside their
    own top-level package, so they cannot break the rule."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.lineno, node.module
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if function in IMPORT_FUNCTIONS:
                yield node.lineno, node.args[0].value


def violations(root: Path) -> list[str]:
    """Each import that breaks the rule, as `file:line: package imports module`."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for line, name in sorted(imported(ast.parse(path.read_text(), str(path)))):
                target = name.split(".")[0]
                if target in COMPONENTS and target != package:
                    found.append(f"{path.relative_to(root)}:{line}: {package} imports {name}")
    return found


def test_m3shd_imports_no_component_and_no_component_imports_another():
    assert violations(ROOT) == []


def test_the_walk_sees_imports_anywhere_and_names_where(tmp_path):
    (tmp_path / "m3shd").mkdir()
    (tmp_path / "m3shd" / "cli.py").write_text(
        "import importlib\n"
        "from m3shd import wire\n"
        "from . import config\n"
        "def serve():\n"
        "    from commander.server import serve\n"
        "    if True:\n"
        "        import n0d3.agent as agent\n"
        "    return importlib.import_module('bridge.daemon'), __import__('images')\n")
    (tmp_path / "bridge").mkdir()
    (tmp_path / "bridge" / "daemon.py").write_text("import m3shd.client\nfrom commander import models\n")
    assert violations(tmp_path) == [
        "m3shd/cli.py:5: m3shd imports commander.server",
        "m3shd/cli.py:7: m3shd imports n0d3.agent",
        "m3shd/cli.py:8: m3shd imports bridge.daemon",
        "m3shd/cli.py:8: m3shd imports images",
        "bridge/daemon.py:2: bridge imports commander",
    ]
