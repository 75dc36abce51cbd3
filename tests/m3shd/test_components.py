"""`m3shd` assembles the components' commands from the `m3shd.commands` entry points: one whose
modules are missing adds none, and `--help` (and a usage error) says how to install them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import entry_points, metadata, packages_distributions, requires

import pytest

from m3shd import cli, components

COMMANDS = {
    "commander": {"up", "commander", "admin", "keys"},
    "n0d3": {"n0d3"},
    "bridge": {"bridge"},
    "image": {"image"},
}
CLIENT_COMMANDS = {"mcp", "task", "pipeline", "provenance", "nodes", "token", "agents", "login", "memory", "spend",
                   "webhooks", "runners", "plugins"}


def top_level(parser) -> set[str]:
    return set(next(a for a in parser._actions if a.dest == "command").choices)


def m3shd_without(modules: list[str], *args) -> subprocess.CompletedProcess:
    """`m3shd ARGS` in a fresh interpreter where `modules` are not installed, as far as imports and
    importlib.util.find_spec can tell."""
    shim = (f"import sys\nfor name in {modules!r}:\n    sys.modules[name] = None\n"
            "from m3shd.cli import main\nsys.exit(main())")
    return subprocess.run([sys.executable, "-c", shim, *args], capture_output=True, text=True, timeout=60)


def test_each_installed_component_adds_its_commands():
    assert {entry.name for entry in entry_points(group=components.GROUP)} == set(COMMANDS)
    parser = cli.build_parser()
    assert top_level(parser) == CLIENT_COMMANDS.union(*COMMANDS.values())
    assert parser.not_installed == "" and parser.epilog.startswith("exit status:")
    token_create = parser.parse_args(["token", "create", "x", "--local"])
    assert token_create.local and token_create.func.__module__ == "commander.cli"


@pytest.mark.parametrize("module, absent", [("flask", ["commander"]), ("nacl", ["commander", "n0d3"])])
def test_a_component_whose_modules_are_missing_adds_no_commands_and_help_says_how_to_get_them(module, absent):
    hints = [f"{component} commands: pip install 'm3shd[{component}]'" for component in absent]
    done = m3shd_without([module], "--help")
    assert done.returncode == 0
    listed = set(re.findall(r"^    (\S+)", done.stdout, re.MULTILINE))
    assert listed == CLIENT_COMMANDS.union(*(COMMANDS[c] for c in COMMANDS if c not in absent))
    assert done.stdout.rstrip().endswith("not installed here:\n" + "\n".join(f"  {hint}" for hint in hints))

    for name in set().union(*(COMMANDS[c] for c in absent)):  # typing one anyway: a usage error that says the same
        done = m3shd_without([module], name)
        assert done.returncode == cli.EXIT_USAGE and f"invalid choice: '{name}'" in done.stderr
        assert all(hint in done.stderr for hint in hints)


def test_without_the_commander_token_create_is_the_api_client_alone():
    done = m3shd_without(["flask"], "token", "create", "--help")
    assert done.returncode == 0 and "--kind" in done.stdout and "--local" not in done.stdout
    done = m3shd_without(["flask"], "token", "create", "x", "--local")
    assert done.returncode == cli.EXIT_USAGE and "unrecognized arguments: --local" in done.stderr


def loaded_by_build_parser(packages: tuple[str, ...]) -> set[str]:
    """The modules of these top-level packages that a fresh interpreter has loaded after `build_parser()`."""
    probe = ("import json, sys\nfrom m3shd.cli import build_parser\nbuild_parser()\n"
             f"print(json.dumps([m for m in sys.modules if m.split('.')[0] in {packages!r}]))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(done.stdout))


def test_assembling_the_command_line_loads_no_component_internals():
    """`m3shd --help` stays quick, and `commander serve` patches gevent in before peewee and
    requests load: assembling every component's commands loads their cli modules and nothing else."""
    assert loaded_by_build_parser(("flask", "werkzeug", "peewee", "gevent", "gunicorn", "requests", "urllib3", "ssl",
                                   "nacl", "pydantic", "cryptography", "zeroconf", "anthropic", "mcp")) == set()
    assert loaded_by_build_parser(("commander", "n0d3", "bridge", "images")) == {
        "commander", "commander.cli", "n0d3", "n0d3.cli", "bridge", "bridge.cli", "images", "images.pi5",
        "images.pi5.cli"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_what_a_component_needs_is_what_its_extra_installs():
    """The hint's extra exists and installs every module the component says it needs."""
    extras = set(metadata("m3shd").get_all("Provides-Extra"))
    by_extra: dict[str, set[str]] = {}
    for requirement in requires("m3shd"):
        name, _, marker = requirement.partition(";")
        extra = re.search(r'extra == "([^"]+)"', marker)
        if extra:
            by_extra.setdefault(extra.group(1), set()).add(normalized(re.match(r"[A-Za-z0-9._-]+", name).group()))
    providers = packages_distributions()
    for entry in entry_points(group=components.GROUP):
        commands = entry.load()
        assert commands.extra in extras or not (commands.extra or commands.needs), entry.name
        for module in commands.needs:
            assert {normalized(d) for d in providers[module]} & by_extra[commands.extra], (entry.name, module)
