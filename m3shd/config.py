"""Configuration: TOML files, then `M3SHD_<SECTION>_<KEY>` environment overrides.

Every key has a default below; its type is the default's type. A file is either the one
given with `--config`, or every `*.toml` in the config directory (sorted, later wins).
"""

from __future__ import annotations

import os
import socket
import sys
import tomllib
from pathlib import Path


class ConfigError(Exception):
    pass


def config_dir() -> Path:
    if os.environ.get("M3SHD_CONFIG_DIR"):
        return Path(os.environ["M3SHD_CONFIG_DIR"])
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "m3shd"
    if os.geteuid() == 0:
        return Path("/etc/m3shd")
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "m3shd"


def data_dir() -> Path:
    if os.environ.get("M3SHD_DATA_DIR"):
        return Path(os.environ["M3SHD_DATA_DIR"])
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "m3shd"
    if os.geteuid() == 0:
        return Path("/var/lib/m3shd")
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "m3shd"


DEFAULT_PORT = 8470

DEFAULTS: dict[str, dict] = {
    "commander": {
        "bind": f"127.0.0.1:{DEFAULT_PORT}",
        "data_dir": "",            # "" → <data dir>/commander
        "database_url": "",        # "" → sqlite:///<data_dir>/commander.db
        "workers": 2,
        "heartbeat_interval": 5.0,  # seconds between a node's heartbeats
        "lease_ttl": 20.0,          # a lease not renewed for this long expires
        "lost_after": 20.0,         # a node silent for this long is `lost`
        "max_attempts": 3,          # leases per task before it fails
        "max_body_bytes": 8_388_608,  # every schema-valid body fits, even escaped (6 bytes a char)
        "max_wait": 60.0,           # longest long-poll any request may hold (claims, task waits)
        "session_ttl": 43200.0,     # browser sessions last this long (seconds)
        "secret_keys": "",          # comma-separated Fernet keys; "" → <data_dir>/secret.keys
        "log_level": "info",
        "advertise": True,          # mDNS/DNS-SD on the LAN, when bound beyond loopback
        "mdns_type": "_m3shd._tcp.local.",  # another type keeps two meshes on one LAN apart
        "max_pending_nodes": 16,    # tokenless joins waiting for approval, all addresses together
    },
    "n0d3": {
        "url": "",                 # the Commander, e.g. http://127.0.0.1:8470; "" → found with mDNS
        "mdns_type": "_m3shd._tcp.local.",
        "join_token": "",
        "state_dir": "",           # "" → <data dir>/n0d3
        "name": "",                # "" → host name
        "slots": 2,
        "capabilities": [],        # extra labels or key=value pairs
        "runner": "auto",          # auto | claude-cli | anthropic-sdk
        "claude_path": "",
        "model": "",
        "anthropic_base_url": "",
        "claim_wait": 30.0,
        "task_timeout": 1800.0,
        "cancel_grace": 5.0,
        "drain_timeout": 600.0,    # SIGTERM waits this long for running tasks
    },
    "client": {
        "url": f"http://127.0.0.1:{DEFAULT_PORT}",
        "token": "",
    },
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(section: str, key: str, value, default):
    where = f"[{section}] {key}"
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if isinstance(default, list):
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    try:
        return type(default)(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {type(default).__name__}, got {value!r}") from None


def _files(path: str | os.PathLike | None) -> list[Path]:
    if path:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return [path]
    directory = config_dir()
    return sorted(directory.glob("*.toml")) if directory.is_dir() else []


def load(section: str, path: str | os.PathLike | None = None, **overrides) -> dict:
    """One section's settings: defaults < files < environment < explicit overrides."""
    defaults = DEFAULTS[section]
    settings = dict(defaults)
    for file in _files(path):
        try:
            document = tomllib.loads(file.read_text())
        except (tomllib.TOMLDecodeError, OSError) as exc:
            raise ConfigError(f"{file}: {exc}") from None
        for key, value in document.get(section, {}).items():
            if key not in defaults:
                raise ConfigError(f"{file}: unknown key [{section}] {key}")
            settings[key] = _coerce(section, key, value, defaults[key])
    prefix = f"M3SHD_{section.upper()}_"
    for name, value in os.environ.items():
        if name.startswith(prefix):
            key = name[len(prefix):].lower()
            if key in defaults:
                settings[key] = _coerce(section, key, value, defaults[key])
    for key, value in overrides.items():
        if value is not None:
            settings[key] = _coerce(section, key, value, defaults[key])
    return _fill_paths(section, settings)


def _fill_paths(section: str, settings: dict) -> dict:
    if section == "commander":
        settings["data_dir"] = settings["data_dir"] or str(data_dir() / "commander")
        if not settings["database_url"]:
            settings["database_url"] = f"sqlite:///{Path(settings['data_dir']) / 'commander.db'}"
    elif section == "n0d3":
        settings["state_dir"] = settings["state_dir"] or str(data_dir() / "n0d3")
        settings["name"] = settings["name"] or socket.gethostname()
    return settings


def write_section(path: Path, section: str, values: dict) -> None:
    """Write one small TOML section (strings, numbers, lists of strings), mode 0600."""
    lines = [f"[{section}]"]
    for key, value in values.items():
        lines.append(f"{key} = {_toml_value(value)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
