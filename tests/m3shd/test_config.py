"""Configuration: defaults < TOML files < M3SHD_* environment < command-line flags, into each
component's typed, frozen settings class; the README's table of keys comes from those classes."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bridge.settings import BridgeSettings
from commander.settings import CommanderSettings
from m3shd import config
from m3shd.config import ClientSettings
from n0d3.settings import N0d3Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("M3SHD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("M3SHD_CONFIG_DIR", str(tmp_path / "conf"))
    monkeypatch.setenv("M3SHD_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "conf").mkdir()
    return tmp_path


def test_defaults_fill_paths_from_the_data_dir(dirs):
    settings = config.load(CommanderSettings)
    assert settings.bind == "127.0.0.1:8470"
    assert settings.data_dir == str(dirs / "data" / "commander")
    assert settings.database_url == f"sqlite:///{dirs / 'data' / 'commander' / 'commander.db'}"
    assert config.load(N0d3Settings).state_dir == str(dirs / "data" / "n0d3")
    assert config.load(N0d3Settings).name  # the host name
    bridge = config.load(BridgeSettings)
    assert (bridge.state_dir, bridge.chat_db) == (str(dirs / "data" / "bridge"),
                                                  str(Path.home() / "Library" / "Messages" / "chat.db"))


def test_files_then_environment_then_flags(dirs, monkeypatch):
    (dirs / "conf" / "a.toml").write_text('[n0d3]\nslots = 4\nname = "pi-1"\ncapabilities = ["gpu"]\n')
    (dirs / "conf" / "b.toml").write_text('[n0d3]\nslots = 6\n')
    assert config.load(N0d3Settings).slots == 6  # later file wins
    monkeypatch.setenv("M3SHD_N0D3_SLOTS", "8")
    monkeypatch.setenv("M3SHD_N0D3_CAPABILITIES", "gpu, zone=lab")
    settings = config.load(N0d3Settings)
    assert (settings.slots, settings.name, settings.capabilities) == (8, "pi-1", ("gpu", "zone=lab"))
    assert config.load(N0d3Settings, slots=2, name=None).slots == 2  # None: the flag was not given
    assert config.load(N0d3Settings, slots=2).name == "pi-1"


def test_each_value_is_checked_against_its_annotation(dirs, monkeypatch):
    monkeypatch.setenv("M3SHD_BRIDGE_SMS_ALLOWED", "yes")
    monkeypatch.setenv("M3SHD_BRIDGE_WINDOW", "30")
    monkeypatch.setenv("M3SHD_BRIDGE_DEFAULT_COUNTRY_CODE", "44")
    (dirs / "conf" / "bridge.toml").write_text("[bridge]\nmax_attachment_bytes = 5e6\npoll_interval = 1\n")
    bridge = config.load(BridgeSettings)
    assert (bridge.sms_allowed, bridge.window, bridge.default_country_code) == (True, 30.0, "44")
    assert (bridge.max_attachment_bytes, bridge.poll_interval) == (5_000_000, 1.0)
    assert type(bridge.max_attachment_bytes) is int and type(bridge.poll_interval) is float


@pytest.mark.parametrize("text, message", [
    ('[n0d3]\nslotz = 4\n', r"n0d3.toml: unknown key \[n0d3\] slotz$"),
    ('[n0d3]\nslots = "many"\n', r"n0d3.toml: \[n0d3\] slots: expected int, got 'many'"),
    ('[n0d3]\nslots = 2.5\n', r"\[n0d3\] slots: expected int, got 2.5"),
    ('[n0d3]\nslots = true\n', r"\[n0d3\] slots: expected int, got True"),
    ('[n0d3]\nname = ["a"]\n', r"\[n0d3\] name: expected str"),
    ('[n0d3]\ncapabilities = 5\n', r"\[n0d3\] capabilities: expected a list of strings"),
    ('[n0d3]\ncapabilities = ["gpu", 5]\n', r"\[n0d3\] capabilities: expected a list of strings"),
    ('n0d3 = 5\n', r"n0d3.toml: \[n0d3\] must be a table"),
    ('[n0d3\n', "n0d3.toml: .*(toml|Expected|expected)"),
])
def test_bad_files_say_what_is_wrong_and_where(dirs, text, message):
    (dirs / "conf" / "n0d3.toml").write_text(text)
    with pytest.raises(config.ConfigError, match=message):
        config.load(N0d3Settings)


def test_a_bad_environment_value_names_the_variable(dirs, monkeypatch):
    monkeypatch.setenv("M3SHD_COMMANDER_WORKERS", "two")
    with pytest.raises(config.ConfigError, match=r"^M3SHD_COMMANDER_WORKERS: \[commander\] workers: expected int"):
        config.load(CommanderSettings)


def test_a_flag_for_a_key_the_class_lacks_is_a_bug():
    with pytest.raises(TypeError, match="N0d3Settings has no setting 'slotz'"):
        config.load(N0d3Settings, slotz=3)


@pytest.mark.parametrize("value, expected", [
    ('["gpu", "zone=a,b"]', ("gpu", "zone=a,b")),   # a JSON array keeps the commas inside its strings
    (' ["(555) 123-4567"] ', ("(555) 123-4567",)),
    ("[]", ()),
    ("gpu, zone=lab,", ("gpu", "zone=lab")),       # else comma-separated
    ("", ()),
])
def test_a_list_in_the_environment_is_a_json_array_or_comma_separated(dirs, monkeypatch, value, expected):
    monkeypatch.setenv("M3SHD_BRIDGE_ALLOWED_SENDERS", value)
    assert config.load(BridgeSettings).allowed_senders == expected


@pytest.mark.parametrize("value", ['["+15551234567"', "[+15551234567]", '["a", 1]', '[["a"]]', "[null]"])
def test_a_list_that_starts_like_json_but_is_not_an_array_of_strings_is_refused(dirs, monkeypatch, value):
    monkeypatch.setenv("M3SHD_BRIDGE_ALLOWED_SENDERS", value)
    with pytest.raises(config.ConfigError, match=r'^M3SHD_BRIDGE_ALLOWED_SENDERS: \[bridge\] allowed_senders: '
                                                 r'starts with "\[" but is not a JSON array of strings'):
        config.load(BridgeSettings)


def test_settings_are_frozen():
    settings = N0d3Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.slots = 4
    assert dataclasses.replace(settings, slots=4).slots == 4 and settings.slots == 2


def test_written_sections_round_trip_any_string_and_are_private(dirs):
    path = dirs / "conf" / "client.toml"
    token = 'a"b\\c\nd\te \u202e é \U0001f600'
    config.write_section(path, "client", {"url": "http://h:1", "token": token})
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert config.load(ClientSettings, path) == ClientSettings(url="http://h:1", token=token)
    config.write_section(path, "n0d3", {"slots": 3, "capabilities": ["gpu", 'x="]'], "priority": -1})
    assert tomllib.loads(path.read_text()) == {"n0d3": {"slots": 3, "capabilities": ["gpu", 'x="]'], "priority": -1}}


def test_every_key_has_help_and_a_type_the_loader_knows():
    for cls in config.documented():
        assert cls.__dataclass_params__.frozen, cls
        for field in dataclasses.fields(cls):
            assert field.metadata["help"].strip(), (cls.section, field.name)
            assert config.key_types(cls)[field.name] in (bool, int, float, str, config.STRINGS), (cls, field.name)


def test_the_readme_table_of_keys_is_what_the_generator_prints():
    printed = subprocess.run([sys.executable, "-m", "m3shd.config", "--markdown"], capture_output=True, text=True,
                             check=True, cwd=ROOT).stdout
    assert [cls.section for cls in config.documented()] == ["client", "bridge", "commander", "n0d3"]
    readme = (ROOT / "README.md").read_text()
    table = re.search(r"<!-- settings: python -m m3shd\.config --markdown -->\n(.*?)<!-- end of settings -->",
                      readme, re.S)
    assert table, "README.md lost its settings markers"
    assert table.group(1) == printed, "README.md's table of keys drifted: paste `python -m m3shd.config --markdown`"
    assert "| `lease_ttl` | float | `20.0` | `M3SHD_COMMANDER_LEASE_TTL` | a lease not renewed for this long " \
           "expires |" in printed
