"""`m3shd up` points the m3shd command at the mesh it starts (commander/up.py)."""

from __future__ import annotations

import tomllib

import pytest

from commander.up import create_token, point_client_here
from m3shd import config


@pytest.fixture
def cmdr(app):
    return app.extensions["m3shd"]


def saved(path) -> dict:
    return tomllib.loads(path.read_text())


def test_a_fresh_machine_gets_a_client_config(cmdr, tmp_path):
    client_file = tmp_path / "client.toml"
    assert point_client_here(cmdr, client_file, "http://127.0.0.1:18471", "m3a_new") is None
    assert saved(client_file) == {"client": {"url": "http://127.0.0.1:18471", "token": "m3a_new"}}
    assert oct(client_file.stat().st_mode & 0o777) == "0o600"


def test_up_on_another_port_updates_the_config_it_wrote_before(cmdr, tmp_path):
    """Issue 17 item 14: `m3shd up --bind 127.0.0.1:18471` after an `up` on the default port said
    it saved the config but kept the old URL, so the next `m3shd task submit` could not connect."""
    admin = create_token(cmdr, "admin (m3shd up)", role="admin")["token"]
    client_file = tmp_path / "client.toml"
    config.write_section(client_file, "client", {"url": "http://127.0.0.1:8470", "token": admin})
    assert point_client_here(cmdr, client_file, "http://127.0.0.1:18471", admin) is None
    assert saved(client_file)["client"]["url"] == "http://127.0.0.1:18471"


def test_the_mesh_cas_file_is_saved_with_the_url_and_goes_when_tls_does(cmdr, tmp_path):
    admin = create_token(cmdr, "admin (m3shd up)", role="admin")["token"]
    client_file = tmp_path / "client.toml"
    ca_file = str(tmp_path / "data" / "tls" / "ca.pem")
    assert point_client_here(cmdr, client_file, "https://127.0.0.1:18471", admin, ca_file) is None
    assert saved(client_file) == {"client": {"url": "https://127.0.0.1:18471", "token": admin, "ca_file": ca_file}}
    assert point_client_here(cmdr, client_file, "http://127.0.0.1:18471", admin) is None
    assert saved(client_file) == {"client": {"url": "http://127.0.0.1:18471", "token": admin}}


def test_another_commanders_config_is_kept_and_the_reason_given(cmdr, tmp_path):
    client_file = tmp_path / "client.toml"
    config.write_section(client_file, "client", {"url": "https://mesh.example:8470", "token": "m3a_someone-elses"})
    before = client_file.read_text()
    kept = point_client_here(cmdr, client_file, "http://127.0.0.1:18471", "m3a_new")
    assert kept == f"{client_file} points at another Commander (https://mesh.example:8470), so it is left as it is"
    assert client_file.read_text() == before


@pytest.mark.parametrize("text", ['[client]\nurl = "http://127.0.0.1:8470"\n[bridge]\nmention = "@mesh"\n',
                                  "[client\n"])
def test_a_config_with_more_than_up_writes_or_unreadable_is_kept(cmdr, tmp_path, text):
    client_file = tmp_path / "client.toml"
    client_file.write_text(text)
    assert point_client_here(cmdr, client_file, "http://127.0.0.1:8470", "m3a_new").endswith("left as it is")
    assert client_file.read_text() == text
