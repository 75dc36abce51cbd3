"""The plugin manager: finds plugins, lets each register its tools, and keeps what failed.

A plugin is a Python module with `setup(manager)`, which calls `manager.tool(...)` once per tool
it offers. Plugins are found by name in the entry-point group `m3shd.plugins` (an installed
package's, or the built-ins in this package) and as `<name>.py` files in `plugins_dir`; the
`plugins` setting says which names load. A plugin that cannot be found, imported or set up is
kept as failed with the reason (GET /api/plugins, `m3shd plugins list`, the log) and adds no
tools; the others load. docs/plugins.md describes the API for plugin authors.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from commander.permissions import PERMISSIONS
from m3shd import config, tool_calls

log = logging.getLogger("m3shd.commander.plugins")

GROUP = "m3shd.plugins"
PLUGIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
LOADED, FAILED = "loaded", "failed"


class ToolError(Exception):
    """What a handler raises when the call cannot be answered; the message goes to the model."""


@dataclass(frozen=True)
class Call:
    """What a tool's handler is told about the call besides its arguments."""
    cmdr: object
    task_id: int
    agent: str | None
    timeout: float      # seconds the handler has; outgoing requests should not wait longer


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args: type[BaseModel]
    handler: Callable[[Call, BaseModel], object]  # returns anything JSON can carry
    permission: str     # the calling node's token must hold it
    timeout: float
    max_result_chars: int
    plugin: str

    def schema(self) -> dict:
        return self.args.model_json_schema()

    def described(self) -> dict:
        return dict(name=self.name, description=self.description, schema=self.schema())


@dataclass
class Plugin:
    name: str
    source: str               # entry point "module:attr", or the file's path
    state: str = LOADED
    error: str | None = None
    tools: list[str] = field(default_factory=list)


class Manager:
    """The tools of the loaded plugins, by name, and every plugin's standing."""

    def __init__(self, settings):
        self.settings = settings
        self.tools: dict[str, Tool] = {}
        self.plugins: list[Plugin] = []
        self._adding: list[Tool] | None = None
        self._plugin: str | None = None

    def tool(self, name: str, description: str, args: type[BaseModel], handler: Callable,
             permission: str = "work:execute", timeout: float | None = None,
             max_result_chars: int | None = None) -> None:
        """Register a tool (called from a plugin's setup). `args`: the pydantic model its arguments
        are checked against, whose JSON schema the model is shown; `permission`: what the node
        asking must hold; `timeout` and `max_result_chars` are capped by the Commander's settings."""
        if self._adding is None:
            raise RuntimeError("tools are registered from a plugin's setup(manager)")
        if not re.fullmatch(tool_calls.NAME, name):
            raise ValueError(f"tool name {name!r} must match {tool_calls.NAME}")
        if name in self.tools or any(tool.name == name for tool in self._adding):
            raise ValueError(f"a tool named {name!r} is registered already")
        if not (isinstance(args, type) and issubclass(args, BaseModel)):
            raise ValueError(f"tool {name!r}: args must be a pydantic model class")
        if permission not in PERMISSIONS:
            raise ValueError(f"tool {name!r}: unknown permission {permission!r}")
        s = self.settings
        self._adding.append(Tool(
            name, description.strip(), args, handler, permission,
            min(timeout or s.tool_timeout, s.tool_timeout),
            min(max_result_chars or s.tool_result_chars, s.tool_result_chars), self._plugin))

    def add(self, name: str, source: str, setup: Callable[[Manager], None]) -> Plugin:
        """Run one plugin's setup; its tools join only if all of it succeeds."""
        self._adding, self._plugin = [], name
        try:
            setup(self)
        except Exception as exc:
            return self.failed(name, source, f"setup failed: {type(exc).__name__}: {exc}")
        finally:
            added, self._adding, self._plugin = self._adding, None, None
        for tool in added:
            self.tools[tool.name] = tool
        plugin = Plugin(name, source, tools=[tool.name for tool in added])
        self.plugins.append(plugin)
        return plugin

    def failed(self, name: str, source: str, error: str) -> Plugin:
        log.error("plugin %s (%s) did not load: %s", name, source, error)
        plugin = Plugin(name, source, FAILED, error)
        self.plugins.append(plugin)
        return plugin


def plugins_dir(settings) -> Path:
    return Path(settings.plugins_dir) if settings.plugins_dir else config.config_dir() / "plugins"


def load(settings) -> Manager:
    """A manager with every enabled plugin's tools (`plugins`, in that order)."""
    manager = Manager(settings)
    points = {point.name: point for point in importlib.metadata.entry_points(group=GROUP)}
    folder = plugins_dir(settings)
    for name in dict.fromkeys(settings.plugins):
        path = folder / f"{name}.py"
        if not PLUGIN_NAME.fullmatch(name):
            manager.failed(name, "", "not a plugin name (letters, digits and _)")
        elif path.is_file():  # a file of the operator's wins over an installed plugin of that name
            load_file(manager, name, path)
        elif name in points:
            load_entry_point(manager, name, points[name])
        else:
            manager.failed(name, "", f"no plugin named {name!r}: not an entry point of {GROUP} "
                                     f"({', '.join(sorted(points)) or 'none installed'}) nor a file {path}")
    return manager


def load_entry_point(manager: Manager, name: str, point) -> None:
    try:
        module = point.load()
    except Exception as exc:
        manager.failed(name, point.value, f"import failed: {type(exc).__name__}: {exc}")
        return
    add_module(manager, name, point.value, module)


def load_file(manager: Manager, name: str, path: Path) -> None:
    try:
        spec = importlib.util.spec_from_file_location(f"m3shd_plugin_{name}", path)
        module = importlib.util.module_from_spec(spec)
        # Registered as imported modules are: pydantic resolves a model's postponed annotations
        # (`from __future__ import annotations`) through sys.modules.
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(f"m3shd_plugin_{name}", None)
        manager.failed(name, str(path), f"import failed: {type(exc).__name__}: {exc}")
        return
    add_module(manager, name, str(path), module)


def add_module(manager: Manager, name: str, source: str, module) -> None:
    setup = getattr(module, "setup", None)
    if not callable(setup):
        manager.failed(name, source, "the module has no setup(manager) function")
        return
    manager.add(name, source, setup)
