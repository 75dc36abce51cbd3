"""The commands that components add to `m3shd`, found through the `m3shd.commands` entry points.

Each component (the Commander, the N0D3, the bridge, the Pi image builder) declares its commands
in its own `cli.py` as one `Commands`: the function that adds them to the parser, the modules they
cannot run without, the extra that installs those, and where its settings class is (for the
README's table of keys, `python -m m3shd.config --markdown`). `m3shd` loads every declaration at start,
so a component's cli module imports only the standard library and `m3shd` at its top: `m3shd
--help` stays quick, and `commander serve` can patch gevent in before peewee or requests load.
Whether a needed module is there is asked with `importlib.util.find_spec`, which imports nothing;
a component that lacks one adds no commands, and `m3shd --help` says how to install them.
"""

from __future__ import annotations

import argparse
import importlib.util
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points

GROUP = "m3shd.commands"


@dataclass
class CommandLine:
    """What a component's commands go into: the top-level subcommands and the parent parsers that
    give a command the shared options (`common`: --config; `connection`: also --url, --token;
    `client`: also --json)."""

    top: argparse._SubParsersAction
    common: argparse.ArgumentParser
    connection: argparse.ArgumentParser
    client: argparse.ArgumentParser
    groups: dict[str, argparse._SubParsersAction] = field(default_factory=dict)

    def group(self, name: str, **options) -> argparse._SubParsersAction:
        """A top-level command made of subcommands (`m3shd NAME SUB ...`)."""
        self.groups[name] = self.top.add_parser(name, **options).add_subparsers(dest="sub", required=True,
                                                                               metavar="SUB")
        return self.groups[name]

    def command(self, group: str, name: str) -> argparse.ArgumentParser:
        """A subcommand registered before, for a component that adds an option to it."""
        return self.groups[group].choices[name]


@dataclass(frozen=True)
class Commands:
    """One component's commands: `register` adds them; `needs` names the top-level modules they
    import (beyond m3shd's own requirements), which `pip install 'm3shd[<extra>]'` brings;
    `settings` is where its settings class is ("module:Class", imported only when asked for)."""

    register: Callable[[CommandLine], None]
    needs: tuple[str, ...] = ()
    extra: str = ""
    settings: str = ""

    def missing(self) -> list[str]:
        return [name for name in self.needs if importlib.util.find_spec(name) is None]


def declared() -> list[tuple[str, Commands]]:
    """Each component's name and its `Commands`, by name (--help lists them in this order)."""
    return [(entry.name, entry.load()) for entry in sorted(entry_points(group=GROUP), key=lambda entry: entry.name)]


def assemble(line: CommandLine) -> list[str]:
    """Add every installed component's commands to `line`; returns a line for each component
    whose commands are not installed here, saying how to install them."""
    absent = []
    for name, commands in declared():
        if commands.missing():
            absent.append(f"{name} commands: pip install 'm3shd[{commands.extra}]'")
        else:
            commands.register(line)
    return absent


def settings_classes() -> list[type]:
    """Each component's settings class. They import only the standard library and m3shd, so
    they load whether or not the component's extra is installed."""
    return [pkgutil.resolve_name(commands.settings) for _, commands in declared() if commands.settings]
