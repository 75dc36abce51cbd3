"""HTTPS from the mesh CA, end to end: Commanders under gunicorn that make their own CA, real
N0D3 processes, and the real CLI, MCP server and bridge.

A join pins the CA by its hash and a wrong hash is refused; `m3shd login` shows the CA's hash and
pins it only after a yes at the terminal; every client refuses a Commander
with another CA on the same address, and carries on once the real one is back; a certificate
renewed while nodes are connected changes nothing for them; a tokenless join trusts on first use
and shows its key; binding beyond loopback turns HTTPS on, and turning it off is said loudly.
"""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import ssl
import subprocess
import sys
import time
import tomllib

import pytest
import requests
from cryptography import x509
from mcp import Client, StdioServerParameters

from chatdb_fixtures import ChatDb
from e2e.test_access import PASSWORD, make_user
from commander.discovery import addresses_for
from harness import Commander, N0D3, Process, base_env, free_port, m3shd, wait_until
from m3shd import trust
from m3shd.client import ApiClient

WRONG = "sha256:" + "0" * 64
UNPROVEN = "did not prove who it is"


def served_certificate(url: str) -> x509.Certificate:
    """The certificate a fresh connection to `url` is shown (not verified here)."""
    host, port = url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((host, int(port)), timeout=5) as raw, context.wrap_socket(raw) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def ca_hash(commander: Commander) -> str:
    return trust.file_hash(commander.ca_file)


@pytest.fixture
def mesh(tmp_path):
    """A Commander that makes its own CA on first start, as a new install does."""
    started = Commander(tmp_path / "commander", tls=True, own_ca=True)
    yield started
    started.stop()


def node_env(commander: Commander, home) -> dict:
    """A machine of its own: config and state outside the Commander's home."""
    return base_env(home) | {"M3SHD_N0D3_STATE_DIR": str(home / "state"), "M3SHD_N0D3_NAME": home.name}


# --- joins pin the CA ------------------------------------------------------------------------------

def test_a_join_string_pins_the_ca_and_a_wrong_hash_is_refused_naming_both(mesh, tmp_path):
    pi = tmp_path / "pi"
    env = node_env(mesh, pi)
    for argv in (["n0d3", "join", mesh.url, f"{mesh.join_token}#{WRONG}"],
                 ["n0d3", "join", mesh.url, mesh.join_token, "--ca-hash", WRONG]):
        refused = m3shd(*argv, env=env, check=False)
        assert refused.returncode == 2
        assert f"presents a CA whose key hash is {ca_hash(mesh)}, not the {WRONG}" in refused.stderr
    assert not (pi / "state" / "ca.pem").exists() and mesh.nodes() == []

    # A bare token: the system's trust store does not know the mesh CA, and the fix is said.
    bare = m3shd("n0d3", "join", mesh.url, mesh.join_token, env=env, check=False)
    assert bare.returncode == 2 and UNPROVEN in bare.stderr and "join string" in bare.stderr
    assert mesh.nodes() == []

    joined = m3shd("n0d3", "join", mesh.url, mesh.join_string, env=env)
    assert f"pinned in {pi / 'state' / 'ca.pem'}" in joined.stderr
    kept = pi / "state" / "ca.pem"
    assert kept.read_bytes() == mesh.ca_file.read_bytes() and oct(kept.stat().st_mode & 0o777) == "0o600"
    assert "join_token = \"" + mesh.join_string in (pi / "conf" / "n0d3.toml").read_text()

    # From then on the N0D3 verifies every connection against the CA it pinned.
    node = Process([sys.executable, "-m", "m3shd", "n0d3", "run"], env, tmp_path / "pi.log")
    try:
        wait_until(lambda: [n for n in mesh.nodes() if n["name"] == "pi" and n["state"] == "active"], 15,
                   what="the joined N0D3")
        task = mesh.api.submit_task("over the pinned connection")
        assert mesh.wait_task(task["id"])["output"] == "echo: over the pinned connection"
    finally:
        node.stop()


# --- m3shd login ------------------------------------------------------------------------------------

def asked_at_a_terminal(argv: list[str], env: dict, answer: str, before_answering) -> subprocess.CompletedProcess:
    """Run `m3shd ARGV` with a terminal as its standard input; once its question is on stderr,
    call `before_answering(question)`, then type `answer`."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "m3shd", *argv], env=env, stdin=terminal,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(terminal)
    try:
        question, deadline = b"", time.monotonic() + 30
        while not question.endswith(b"[y/N] "):
            assert time.monotonic() < deadline and process.poll() is None, question
            if select.select([process.stderr], [], [], 0.5)[0]:
                question += os.read(process.stderr.fileno(), 4096)
        before_answering(question.decode())
        os.write(controller, answer.encode() + b"\n")
        out, err = process.communicate(timeout=30)
        return subprocess.CompletedProcess(argv, process.returncode, out.decode(), question.decode() + err.decode())
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()


def test_login_shows_the_cas_hash_and_pins_it_only_after_a_yes(mesh, tmp_path):
    laptop = base_env(tmp_path / "laptop")
    kept, client_toml = tmp_path / "laptop" / "conf" / "commander-ca.pem", tmp_path / "laptop" / "conf" / "client.toml"
    argv = ["login", mesh.url, "--token", mesh.admin_token]

    def nothing_kept_yet(question):
        assert f"The Commander at {mesh.url} presents the mesh CA\n  {ca_hash(mesh)}\n" in question
        assert "m3shd commander ca" in question
        assert not kept.exists() and not client_toml.exists()

    declined = asked_at_a_terminal(argv, laptop, "n", nothing_kept_yet)
    assert declined.returncode == 2 and "not trusted; nothing saved" in declined.stderr
    assert not kept.exists() and not client_toml.exists()

    # No terminal to ask at: refused, naming the hash and the way to pass it.
    unasked = m3shd(*argv, env=laptop, check=False)
    assert unasked.returncode == 2 and ca_hash(mesh) in unasked.stderr and "--ca-hash" in unasked.stderr
    assert not kept.exists()

    accepted = asked_at_a_terminal(argv, laptop, "y", nothing_kept_yet)
    assert accepted.returncode == 0, accepted.stderr
    assert f"its CA pinned in {kept}" in accepted.stderr
    assert kept.read_bytes() == mesh.ca_file.read_bytes() and oct(kept.stat().st_mode & 0o777) == "0o600"
    saved = tomllib.loads(client_toml.read_text())["client"]
    assert saved == {"url": mesh.url, "token": mesh.admin_token, "ca_file": str(kept)}
    assert json.loads(m3shd("task", "list", "--json", env=laptop).stdout) == []


# --- an impostor on the Commander's address ---------------------------------------------------------

@pytest.mark.anyio
async def test_every_client_refuses_a_commander_with_another_ca_and_comes_back_to_the_real_one(mesh, tmp_path,
                                                                                               request):
    node = N0D3(mesh, "alpha")
    request.addfinalizer(node.process.stop)
    node.wait_registered()
    laptop = base_env(tmp_path / "laptop")  # the CLI, MCP server and bridge: pinned by `m3shd login`
    m3shd("login", mesh.url, "--ca-hash", ca_hash(mesh), "--token", mesh.admin_token, env=laptop)
    assert "[client]" in (tmp_path / "laptop" / "conf" / "client.toml").read_text()
    assert m3shd("task", "list", env=laptop).returncode == 0
    chats = ChatDb(tmp_path / "Messages" / "chat.db", "tahoe")
    bridge_env = laptop | {"M3SHD_BRIDGE_CHAT_DB": str(chats.path), "M3SHD_BRIDGE_STATE_DIR": str(tmp_path / "bridge"),
                           "M3SHD_BRIDGE_ALLOWED_SENDERS": "+15551234567",
                           "FAKE_OSASCRIPT_LOG": str(tmp_path / "osascript.jsonl")}

    mesh.stop()
    impostor = Commander(tmp_path / "impostor", tls=True, own_ca=True, port=mesh.port)
    try:
        assert ca_hash(impostor) != ca_hash(mesh)
        # The N0D3: every heartbeat is refused at the handshake, and its log says why.
        wait_until(lambda: UNPROVEN in node.process.text(), 20, what="the N0D3 to refuse the impostor")
        assert "not from the CA pinned in" in node.process.text()
        # The CLI, as configured by login, and a second login with the real hash.
        refused = m3shd("task", "list", env=laptop, check=False)
        assert refused.returncode == 3 and UNPROVEN in refused.stderr and "is it running" not in refused.stderr
        relogin = m3shd("login", mesh.url, "--ca-hash", ca_hash(mesh), env=laptop, check=False)
        assert relogin.returncode == 3 and f"{ca_hash(impostor)}, not the {ca_hash(mesh)}" in relogin.stderr
        # The MCP server over stdio, as Claude Code starts it.
        server = StdioServerParameters(command=sys.executable, args=["-m", "m3shd", "mcp"], env=laptop)
        async with Client(server, read_timeout_seconds=30) as client:
            result = await client.call_tool("list_tasks", {})
            assert result.is_error and UNPROVEN in result.content[0].text
        # The bridge: it starts, says why it cannot reach the Commander, and keeps trying.
        bridge = Process([sys.executable, "-m", "m3shd", "bridge", "run"], bridge_env, tmp_path / "bridge.log")
        try:
            wait_until(lambda: UNPROVEN in bridge.text(), 20, what="the bridge to refuse the impostor")
            assert bridge.alive()
        finally:
            bridge.stop()
        # A machine joining with the real join string is refused too, naming both hashes.
        joining = m3shd("n0d3", "join", mesh.url, mesh.join_string, env=node_env(mesh, tmp_path / "pi"), check=False)
        assert joining.returncode == 2 and f"{ca_hash(impostor)}, not the {ca_hash(mesh)}" in joining.stderr
        # Nothing reached the impostor: no node, no task, no registration.
        assert impostor.nodes() == [] and impostor.api.list_tasks() == []
    finally:
        impostor.stop()

    mesh.start()
    task = mesh.api.submit_task("after the impostor left")
    assert mesh.wait_task(task["id"], timeout=40)["output"] == "echo: after the impostor left"
    assert m3shd("task", "list", env=laptop).returncode == 0


# --- renewal -------------------------------------------------------------------------------------------

def test_a_certificate_renewed_while_nodes_are_connected_changes_nothing_for_them(tmp_path):
    """Certificates that last 12 s, renewed at 8 s: over 30 s each worker serves several, the
    N0D3 keeps working on the connections it has, and new connections see the newest one."""
    commander = Commander(tmp_path / "short", {"M3SHD_COMMANDER_TLS_CERT_LIFETIME": "12"}, tls=True, own_ca=True)
    try:
        node = N0D3(commander, "alpha")
        node.wait_registered()
        serials, deadline = set(), time.monotonic() + 30
        while time.monotonic() < deadline:
            serials.add(served_certificate(commander.url).serial_number)
            fresh = ApiClient(commander.url, commander.admin_token, ca_file=commander.ca_file)
            task = fresh.submit_task(f"round {len(serials)}")  # a new connection, verified
            assert commander.wait_task(task["id"])["state"] == "succeeded"
            fresh.session.close()
            time.sleep(1)
        assert len(serials) >= 3, serials
        assert UNPROVEN not in node.process.text() and "retrying" not in node.process.text()
        assert node.node()["state"] == "active"
        log = commander.process.text()
        assert log.count("issued the Commander's certificate") >= 3 and "serving the renewed certificate" in log
        node.process.stop()
    finally:
        commander.stop()


# --- trust on first use ----------------------------------------------------------------------------------

def test_a_tokenless_join_trusts_the_ca_on_first_use_and_shows_its_key_to_the_operator(mesh, tmp_path):
    node = N0D3(mesh, "stray", env={"M3SHD_N0D3_JOIN_TOKEN": ""})
    try:
        wait_until(lambda: "waiting for approval" in node.process.text(), 20, what="the join request")
        log = node.process.text()
        assert f"trusting the Commander's CA {ca_hash(mesh)} on first use" in log
        (waiting,) = mesh.api.list_pending()
        assert f"with key {waiting['key_fingerprint']}" in log
        listing = m3shd("nodes", "pending", env=mesh.env | {"M3SHD_CLIENT_URL": mesh.url,
                                                            "M3SHD_CLIENT_TOKEN": mesh.admin_token})
        assert waiting["key_fingerprint"] in listing.stdout
        mesh.api.approve_pending(waiting["id"])
        node.wait_registered(20)
        assert (node.state_dir / "ca.pem").read_bytes() == mesh.ca_file.read_bytes()
    finally:
        node.process.stop()


# --- binding beyond loopback ------------------------------------------------------------------------------

def test_binding_beyond_loopback_serves_https_for_its_lan_names_and_plain_http_is_said_loudly(tmp_path):
    port = free_port()
    lan = {"M3SHD_COMMANDER_BIND": f"0.0.0.0:{port}", "M3SHD_COMMANDER_TLS": "auto", "M3SHD_COMMANDER_ADVERTISE": "0"}
    commander = Commander(tmp_path / "lan", lan, tls=True, own_ca=True, port=port)
    try:
        names = x509.load_pem_x509_certificates((commander.ca_file.parent / "server.pem").read_bytes())[0]
        ips = {str(ip) for ip in names.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
               .get_values_for_type(x509.IPAddress)}
        assert set(addresses_for("0.0.0.0")) <= ips and "127.0.0.1" in ips
        assert commander.api.health()["status"] == "ok"
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/api/health", timeout=5)
    finally:
        commander.stop()
    port = free_port()
    plain = Commander(tmp_path / "plain", lan | {"M3SHD_COMMANDER_BIND": f"0.0.0.0:{port}", "M3SHD_COMMANDER_TLS": "off"},
                      tls=False, port=port)
    try:
        assert "TLS IS OFF" in plain.process.text()
    finally:
        plain.stop()


def test_the_dashboards_session_cookie_is_secure_over_https(mesh):
    user = make_user(mesh, "admin")
    login = requests.post(f"{mesh.url}/api/session", json={"username": user, "password": PASSWORD},
                          verify=mesh.ca_file, timeout=10)
    assert login.status_code == 200
    cookie = login.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie


@pytest.fixture
def anyio_backend():
    return "asyncio"
