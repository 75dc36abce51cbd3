"""What an install brings: the playbook's controller gets Ansible and its collections, nothing of
the test tools, and `./dev ansible` installs only that."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]
TEST_TOOLS = {"pytest", "playwright", "schemathesis", "molecule", "ansible-lint", "trimesh", "huey", "ruff"}


def requirements(name: str, extras: set[str]) -> list[Requirement]:
    """What `name[extras]` asks for: m3shd's from pyproject.toml (the installed metadata may be
    older), the others from their installed metadata."""
    if name == "m3shd":
        return [Requirement(r) for r in PROJECT["dependencies"] + [r for extra in extras for r in EXTRAS[extra]]]
    environments = [{"extra": extra} for extra in extras | {""}]
    return [r for r in map(Requirement, importlib.metadata.requires(name) or [])
            if r.marker is None or any(r.marker.evaluate(environment) for environment in environments)]


def brought_by(requirement: str) -> set[str]:
    """Every distribution `pip install requirement` installs, by walking the requirement graph."""
    seen, todo, names = set(), [Requirement(requirement)], set()
    while todo:
        wanted = todo.pop()
        key = (canonicalize_name(wanted.name), frozenset(wanted.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(key[0])
        todo.extend(requirements(key[0], set(wanted.extras)))
    return names


def test_the_ansible_extra_brings_ansible_and_no_test_tools():
    brought = brought_by("m3shd[ansible]")
    assert {"ansible", "ansible-core"} <= brought
    assert not brought & (TEST_TOOLS | {"flask", "gunicorn", "anthropic"}), brought & TEST_TOOLS
    assert "m3shd[all,ansible]" in EXTRAS["test"]                       # the tests build on it …
    assert not [r for r in EXTRAS["test"] if Requirement(r).name == "ansible"]  # … rather than repeat it


def test_every_module_the_playbook_names_comes_with_the_ansible_extra():
    used = set()
    for path in [ROOT / "site.yml", *ROOT.glob("playbooks/*.yml"), *ROOT.glob("roles/*/tasks/*.yml"),
                 *ROOT.glob("roles/*/handlers/*.yml")]:
        used |= set(re.findall(r"^\s*-?\s*((?!ansible\.builtin\.)[a-z_]+\.[a-z_]+\.[a-z_]+):", path.read_text(), re.M))
    assert {"community.general.launchd", "community.general.homebrew"} <= used
    for name in used:
        namespace, collection, module = name.split(".")
        assert importlib.util.find_spec(f"ansible_collections.{namespace}.{collection}.plugins.modules.{module}"), name


def fake_tool(path: Path, log: Path) -> None:
    path.write_text(f'#!/bin/sh\necho "$(basename "$0") $*" >> "{log}"\n')
    path.chmod(0o755)


def test_dev_ansible_installs_only_the_ansible_extra_then_runs_the_tool(tmp_path):
    """`./dev` itself, with stand-ins for .venv's python (pip) and Ansible's tools."""
    checkout, log = tmp_path / "clone", tmp_path / "calls.log"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    for name in ("dev", "pyproject.toml"):
        shutil.copy2(ROOT / name, checkout / name)
    for tool in ("python", "ansible-playbook", "ansible-vault"):
        fake_tool(checkout / ".venv" / "bin" / tool, log)

    def dev(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", str(checkout / "dev"), *args], capture_output=True, text=True, timeout=30)

    assert dev("ansible-vault", "create", "inventory/mine/group_vars/all/vault.yml").returncode == 0
    assert dev("ansible", "site.yml", "-i", "inventory/mine/hosts.yml", "--check").returncode == 0
    assert log.read_text().splitlines() == [
        "python -m pip install -q --upgrade pip",
        "python -m pip install -q -e .[ansible]",        # once, and only the ansible extra
        "ansible-vault create inventory/mine/group_vars/all/vault.yml",
        "ansible-playbook site.yml -i inventory/mine/hosts.yml --check",
    ]
    unknown = dev("ansible-frobnicate")
    assert unknown.returncode == 2 and "no tool called ansible-frobnicate" in unknown.stderr
