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

from m3shd.files import write_private


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
        # Scheduling (docs/scheduling.md explains each one).
        "ucb_c": 0.5,               # exploration weight in mean + c·sqrt(ln N / n)
        "reputation_window": 20,    # outcomes per node kept for reputation and breakers
        "reputation_half_life": 3600.0,  # an outcome this old counts half
        "score_slots": 0.3,         # weight of the share of a node's slots that are free
        "score_freshness": 0.2,     # weight of how recent its heartbeat is
        "score_prefer": 0.5,        # weight of the share of a task's `prefer` it has
        "best_node_wait": 2.0,      # a task waits this long for its best node, then any may take it
        "better_node_margin": 0.15,  # wait for a busy node whose mean reward is this much higher,
        "better_node_wait": 5.0,     # ... for up to this long,
        "better_node_evidence": 3.0,  # ... once both have at least this many (decayed) outcomes
        "aging": 60.0,              # a queued task gains one priority level per this many seconds
        "fairness_window": 600.0,   # submitters served least within this window go first
        "retry_backoff": 0.0,       # default seconds before a retry (doubles each attempt)
        "retry_backoff_max": 300.0,
        "pipeline_inject_limit": 16000,  # characters of a parent's output a step's prompt gets
        "approval_timeout": 0.0,    # seconds before an unanswered approval is rejected; 0: never
        "breaker_consecutive": 3,   # infrastructure failures in a row that open a breaker
        "breaker_window": 10,       # ... or this share of the last `breaker_window` outcomes
        "breaker_ratio": 0.5,
        "breaker_min_outcomes": 5,  # ... once there are at least this many
        "breaker_cooldown": 60.0,   # first open period; doubles on each failed probe
        "breaker_cooldown_max": 1800.0,
        "breaker_max_open": 0.34,   # never more than this share of live nodes open at once
        "advertise": True,          # mDNS/DNS-SD on the LAN, when bound beyond loopback
        "mdns_type": "_m3shd._tcp.local.",  # another type keeps two meshes on one LAN apart
        "max_pending_nodes": 16,    # tokenless joins waiting for approval, all addresses together
        "tls": "auto",              # auto: HTTPS from the mesh CA once bound beyond loopback; on; off (plain HTTP)
        "tls_names": [],            # more names or addresses the mesh-issued certificate carries (e.g. a DNS alias)
        "tls_cert_lifetime": 7_776_000.0,  # seconds a mesh-issued certificate lasts (90 days); renewed at 2/3
        "tls_cert": "",             # your own certificate chain (PEM) instead of the mesh CA's, e.g. from ACME
        "tls_key": "",              # its private key (PEM); "" → in tls_cert's file
    },
    "n0d3": {
        "url": "",                 # the Commander, e.g. http://127.0.0.1:8470; "" → found with mDNS
        "mdns_type": "_m3shd._tcp.local.",
        "join_token": "",          # a join token, or a join string TOKEN#sha256:HASH that pins the Commander's CA
        "ca_hash": "",             # sha256:HASH of the Commander's CA key, checked when the CA is first fetched
        "ca_file": "",             # the Commander's CA (PEM) to verify it with; "" → the one pinned in state_dir
        "state_dir": "",           # "" → <data dir>/n0d3
        "name": "",                # "" → host name
        "slots": 2,
        "priority": 0,             # breaks ties between equally good nodes (higher first)
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
    "bridge": {                    # the iMessage bridge; it reaches the Commander with [client] url/token
        "chat_db": "",             # "" → ~/Library/Messages/chat.db
        "state_dir": "",           # "" → <data dir>/bridge (cursor, dedup set, task → chat map)
        "allowed_senders": [],     # phone numbers (any format) and Apple ID emails that may use the mesh
        "allowed_groups": [],      # chat GUIDs of group chats whose members may use it
        "mention": "",             # e.g. "@mesh": in group chats, only texts starting with it count
        "default_country_code": "1",  # for numbers written without +CC
        "sms_allowed": False,      # SMS/RCS can be spoofed more easily than iMessage
        "poll_interval": 0.25,     # seconds between chat.db reads (file changes wake it sooner)
        "recheck_delay": 0.15,     # wait this long, then re-read is_from_me (it can flip)
        "window": 600.0,           # ignore messages older than this many seconds
        "approval_required": False,  # tasks from texts wait for `yes` before they run
        "max_attachment_bytes": 20_000_000,
        "osascript": "osascript",
        "log_level": "info",
    },
    "client": {
        "url": f"http://127.0.0.1:{DEFAULT_PORT}",
        "token": "",
        "ca_file": "",             # the Commander's CA (PEM), pinned by `m3shd login`; "" → the system's trust store
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
    elif section == "bridge":
        settings["chat_db"] = str(Path(settings["chat_db"] or Path.home() / "Library" / "Messages" / "chat.db").expanduser())
        settings["state_dir"] = settings["state_dir"] or str(data_dir() / "bridge")
    return settings


def write_section(path: Path, section: str, values: dict) -> None:
    """Write one small TOML section (strings, numbers, lists of strings), mode 0600."""
    lines = [f"[{section}]"]
    for key, value in values.items():
        lines.append(f"{key} = {_toml_value(value)}")
    write_private(path, "\n".join(lines) + "\n")


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
