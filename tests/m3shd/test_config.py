"""Configuration: defaults < TOML files < M3SHD_* environment < command-line flags."""

from __future__ import annotations

import pytest

from m3shd import config


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("M3SHD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("M3SHD_CONFIG_DIR", str(tmp_path / "conf"))
    monkeypatch.setenv("M3SHD_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "conf").mkdir()
    return tmp_path


def test_defaults_fill_paths_from_the_data_dir(dirs):
    settings = config.load("commander")
    assert settings["bind"] == "127.0.0.1:8470"
    assert settings["database_url"] == f"sqlite:///{dirs / 'data' / 'commander' / 'commander.db'}"
    assert config.load("n0d3")["state_dir"] == str(dirs / "data" / "n0d3")


def test_files_then_environment_then_flags(dirs, monkeypatch):
    (dirs / "conf" / "a.toml").write_text('[n0d3]\nslots = 4\nname = "pi-1"\ncapabilities = ["gpu"]\n')
    (dirs / "conf" / "b.toml").write_text('[n0d3]\nslots = 6\n')
    assert config.load("n0d3")["slots"] == 6  # later file wins
    monkeypatch.setenv("M3SHD_N0D3_SLOTS", "8")
    monkeypatch.setenv("M3SHD_N0D3_CAPABILITIES", "gpu, zone=lab")
    settings = config.load("n0d3")
    assert (settings["slots"], settings["name"], settings["capabilities"]) == (8, "pi-1", ["gpu", "zone=lab"])
    assert config.load("n0d3", slots=2)["slots"] == 2


@pytest.mark.parametrize("text, message", [
    ('[n0d3]\nslotz = 4\n', "unknown key \\[n0d3\\] slotz"),
    ('[n0d3]\nslots = "many"\n', "expected int"),
    ('[n0d3]\ncapabilities = 5\n', "a list of strings"),
    ('[n0d3\n', "toml|Expected|expected"),
])
def test_bad_files_say_what_is_wrong(dirs, text, message):
    (dirs / "conf" / "bad.toml").write_text(text)
    with pytest.raises(config.ConfigError, match=message):
        config.load("n0d3")


def test_a_bad_environment_value_names_the_key(dirs, monkeypatch):
    monkeypatch.setenv("M3SHD_COMMANDER_WORKERS", "two")
    with pytest.raises(config.ConfigError, match=r"\[commander\] workers: expected int"):
        config.load("commander")


def test_written_sections_are_private_and_read_back(dirs):
    path = dirs / "conf" / "client.toml"
    config.write_section(path, "client", {"url": "http://h:1", "token": 'a"b\\c'})
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert config.load("client", path) == {"url": "http://h:1", "token": 'a"b\\c', "ca_file": ""}
