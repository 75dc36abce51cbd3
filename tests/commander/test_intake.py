"""What every request passes before its route (commander/intake.py), in process: the client address
behind trusted proxies, the Host, the Origin, JSON bodies declared as such, and a full database
pool answered 503 (audit 2, items 4, 5 and 6)."""

from __future__ import annotations

import functools
import logging
import socket
import threading

import pytest

from commander import intake, passwords, tokens
from commander.models import AuditEntry
from commander.settings import CommanderSettings
from m3shd import config

TRUSTED = intake.networks(["10.0.0.0/8", "fd00::/8"])


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch):
    """PBKDF2 at a thousand rounds: these tests log in, they are not about hashing."""
    monkeypatch.setattr(passwords, "hash_password", functools.partial(passwords.hash_password, iterations=1000))


# --- the client's address --------------------------------------------------------------------

@pytest.mark.parametrize("peer, forwarded, client", [
    ("203.0.113.5", "198.51.100.7", "203.0.113.5"),              # not a proxy of ours: its header is ignored
    ("10.0.0.1", "", "10.0.0.1"),                                 # a proxy that names nobody
    ("10.0.0.1", "198.51.100.7", "198.51.100.7"),
    ("10.0.0.1", "6.6.6.6, 198.51.100.7", "198.51.100.7"),       # the client wrote 6.6.6.6 itself
    ("10.0.0.1", "6.6.6.6,198.51.100.7, 10.0.0.2", "198.51.100.7"),  # two proxies of ours
    ("10.0.0.1", "10.0.0.3, 10.0.0.2", "10.0.0.3"),               # only proxies: the farthest
    ("10.0.0.1", "198.51.100.7, not-an-address", "10.0.0.1"),     # garbage stops the walk
    ("fd00::1", "2001:db8::7", "2001:db8::7"),
])
def test_the_client_is_the_rightmost_address_no_trusted_proxy_added(peer, forwarded, client):
    assert intake.client_address(peer, forwarded, TRUSTED) == client


def test_a_bad_trusted_proxy_setting_stops_the_start():
    with pytest.raises(config.ConfigError, match="'10.0.0.0/33'"):
        intake.networks(["10.0.0.0/33"])


def failed_login_address(app, peer: str, forwarded: str | None) -> str:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    reply = app.test_client().post("/api/session", json={"username": "nobody", "password": "wrong password"},
                                   headers=headers, environ_base={"REMOTE_ADDR": peer})
    assert reply.status_code == 401, reply.get_json()
    with app.extensions["m3shd"].db.connection_context():
        return AuditEntry.select().where(AuditEntry.action == "login.failed").order_by(AuditEntry.id.desc()).get().address


def test_forwarded_for_counts_only_from_a_trusted_proxy(make_app):
    app = make_app(trusted_proxies=["10.0.0.0/8"])
    assert failed_login_address(app, "203.0.113.5", "198.51.100.7") == "203.0.113.5"
    assert failed_login_address(app, "10.1.2.3", "6.6.6.6, 198.51.100.7") == "198.51.100.7"


def test_without_trusted_proxies_forwarded_for_is_ignored(make_app):
    assert failed_login_address(make_app(), "10.1.2.3", "198.51.100.7") == "10.1.2.3"


def test_spoofed_forwarded_for_does_not_escape_the_address_throttle(make_app, monkeypatch):
    monkeypatch.setattr("commander.accounts.ADDRESS_FAILURES", 3)
    client = make_app(trusted_proxies=["10.0.0.0/8"]).test_client()
    for i in range(3):
        reply = client.post("/api/session", json={"username": f"nobody{i}", "password": "wrong password"},
                            headers={"X-Forwarded-For": f"192.0.2.{i}"}, environ_base={"REMOTE_ADDR": "203.0.113.5"})
        assert reply.status_code == 401
    refused = client.post("/api/session", json={"username": "another", "password": "wrong password"},
                          headers={"X-Forwarded-For": "192.0.2.99"}, environ_base={"REMOTE_ADDR": "203.0.113.5"})
    assert refused.status_code == 429 and "this address" in refused.get_json()["error"]["message"]


# --- Host and Origin -------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8470", "127.0.0.1:8470", "[::1]:8470", "192.168.1.20",
                                  "mesh.example.org", "mesh.example.org.:443"])
def test_own_names_allowed_names_and_addresses_are_served(make_app, host):
    app = make_app(allowed_hosts=["mesh.example.org"])
    reply = app.test_client().get("/api/health", headers={"Host": host})
    assert reply.status_code == 200, reply.get_json()


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8470", "localhost.evil.example", "mesh.example.org"])
def test_other_host_names_are_refused(make_app, host):
    client = make_app().test_client()
    for method, path in (("GET", "/api/health"), ("POST", "/api/session"), ("GET", "/login")):
        reply = client.open(path, method=method, headers={"Host": host}, json={"username": "a", "password": "b" * 10})
        assert reply.status_code == 421, (path, reply.data[:200])
    error = client.get("/api/health", headers={"Host": host}).get_json()["error"]
    assert error["code"] == "unknown_host" and "allowed_hosts" in error["message"]


def test_the_machines_own_names_are_allowed_by_default():
    names = intake.own_names(CommanderSettings(bind="0.0.0.0:8470"))
    short = socket.gethostname().split(".")[0].lower()
    assert {"localhost", short, f"{short}.local"} <= names


def test_a_state_changing_request_from_another_sites_page_is_refused(app, client, bearer):
    for origin in ("https://evil.example", "null", "http://localhost.evil.example"):
        reply = client.post("/api/tasks", json={"prompt": "x"}, headers={**bearer("admin"), "Origin": origin})
        assert reply.status_code == 403 and reply.get_json()["error"]["code"] == "cross_origin", origin
    same = client.post("/api/tasks", json={"prompt": "x"}, headers={**bearer("admin"), "Origin": "http://localhost"})
    assert same.status_code == 201
    reading = client.get("/api/tasks", headers={**bearer("admin"), "Origin": "https://evil.example"})
    assert reading.status_code == 200  # a read: the browser would not show it to that page anyway (no CORS)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          None])
def test_a_json_body_must_say_so(client, bearer, content_type):
    headers = {**bearer("admin"), **({"Content-Type": content_type} if content_type else {})}
    reply = client.post("/api/tasks", data=b'{"prompt": "typed"}', headers=headers)
    assert reply.status_code == 415
    assert reply.get_json()["error"]["code"] == "unsupported_media_type"
    assert "application/json" in reply.get_json()["error"]["message"]
    fine = client.post("/api/tasks", data=b'{"prompt": "typed"}',
                       headers={**bearer("admin"), "Content-Type": "application/json; charset=utf-8"})
    assert fine.status_code == 201


# --- a full database pool --------------------------------------------------------------------

def test_a_full_connection_pool_is_503_with_retry_after_and_one_log_line(make_app, caplog):
    app = make_app(db_pool_size=1, db_pool_wait=0.2)
    cmdr = app.extensions["m3shd"]
    client = app.test_client()
    with cmdr.db.connection_context(), cmdr.writing(wake=False):
        _, secret = tokens.create("t", actor="test", role="admin")
    headers = {"Authorization": f"Bearer {secret}"}
    held, release = threading.Event(), threading.Event()

    def hold_the_only_connection():
        with cmdr.db.connection_context():
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_only_connection)
    holder.start()
    try:
        assert held.wait(10)
        with caplog.at_level(logging.WARNING, logger="m3shd.commander"):
            for _ in range(5):
                reply = client.get("/api/tasks", headers=headers)
                assert reply.status_code == 503, reply.get_json()
                assert reply.headers["Retry-After"] == "2" and reply.get_json()["error"]["code"] == "overloaded"
            assert client.get("/api/health").status_code == 200  # it takes no connection
    finally:
        release.set()
        holder.join()
    lines = [r for r in caplog.records if r.name == "m3shd.commander"]
    assert len(lines) == 1 and "every database connection is in use" in lines[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)
    assert client.get("/api/tasks", headers=headers).status_code == 200
