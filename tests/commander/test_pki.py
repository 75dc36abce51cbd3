"""The mesh CA and the Commander's certificate (commander/pki.py), in process: what is made on
first start, when it is renewed or reissued, what a worker's SSL context serves after a renewal
(real TLS handshakes over a socket pair), and the routes that hand out the CA and join strings."""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from commander import create_app, pki
from commander.settings import CommanderSettings
from m3shd import config, trust

LIFETIME = 90 * 86400.0


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """A Commander's settings that turn TLS on while bound to loopback, with two extra names."""
    for name in [name for name in os.environ if name.startswith("M3SHD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("M3SHD_CONFIG_DIR", str(tmp_path / "conf"))
    return config.load(CommanderSettings, data_dir=str(tmp_path / "data"), tls="on",
                       tls_names=("mesh.example", "10.1.2.3"))


def served(settings) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates((pki.directory(settings) / "server.pem").read_bytes())


def presented(context: ssl.SSLContext, ca_file, name: str = "127.0.0.1") -> x509.Certificate:
    """The certificate a server with `context` shows a client that trusts only `ca_file` and asks
    for `name`: a real handshake over a socket pair."""
    server_end, client_end = socket.socketpair()
    failures = []

    def serve():
        try:
            with context.wrap_socket(server_end, server_side=True):
                pass
        except (ssl.SSLError, OSError) as exc:
            failures.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    client = ssl.create_default_context(cafile=str(ca_file))
    try:
        with client.wrap_socket(client_end, server_hostname=name) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    finally:
        thread.join(5)


def server_context(settings) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*pki.server_files(settings))
    return context


# --- when TLS is on ------------------------------------------------------------------------------

@pytest.mark.parametrize("bind, mode, on", [
    ("127.0.0.1:8470", "auto", False), ("localhost:8470", "auto", False), ("[::1]:8470", "auto", False),
    ("0.0.0.0:8470", "auto", True), ("192.168.1.20:8470", "auto", True), ("commander.lan:8470", "auto", True),
    ("127.0.0.1:8470", "on", True), ("0.0.0.0:8470", "off", False),
])
def test_tls_is_on_beyond_loopback_unless_a_setting_says_otherwise(settings, bind, mode, on):
    assert pki.enabled(replace(settings, bind=bind, tls=mode)) is on


def test_an_unknown_tls_mode_is_a_configuration_error(settings):
    with pytest.raises(config.ConfigError, match="auto, on or off"):
        pki.enabled(replace(settings, tls="yes"))


# --- first start ---------------------------------------------------------------------------------

def test_first_start_makes_a_p256_ca_and_a_certificate_for_every_name(settings):
    assert pki.ensure_server(settings) == "there is none yet"
    folder = pki.directory(settings)
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["ca.key", "ca.pem", "server.pem"]
    for name in ("ca.key", "ca.pem", "server.pem", ".lock"):
        assert oct((folder / name).stat().st_mode & 0o777) == "0o600", name
    for made in (folder, folder.parent):  # the data dir too: TLS makes it first on a new install
        assert oct(made.stat().st_mode & 0o777) == "0o700", made
    ca = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey) and ca.public_key().curve.name == "secp256r1"
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    assert ca.not_valid_after_utc.timestamp() - time.time() > 9 * 365 * 86400

    # One file: the certificate, then the CA (browsers match a pinned key only among those sent), then the key.
    leaf, sent_ca = served(settings)
    assert sent_ca == ca and "PRIVATE KEY" in (folder / "server.pem").read_text()
    names = pki.names_of(leaf)
    host = socket.gethostname().split(".")[0]
    assert {host, f"{host}.local", "localhost", "mesh.example"} <= set(names.dns)
    assert {"127.0.0.1", "::1", "10.1.2.3"} <= set(names.ips)
    assert LIFETIME - 60 < leaf.not_valid_after_utc.timestamp() - time.time() <= LIFETIME
    assert leaf.not_valid_before_utc.timestamp() <= time.time() - pki.SKEW + 60  # clocks on a LAN disagree

    context = server_context(settings)
    for name in ("127.0.0.1", "mesh.example", f"{host}.local"):
        assert presented(context, folder / "ca.pem", name) == leaf


def test_the_hash_is_sha256_of_the_cas_public_key_and_clients_compute_the_same(settings):
    ca = pki.ensure_ca(settings)
    assert pki.ca_hash(settings) == pki.spki_hash(ca) == trust.file_hash(pki.directory(settings) / "ca.pem")
    assert trust.HASH.fullmatch(pki.ca_hash(settings))


def test_a_second_start_keeps_the_ca_and_the_certificate(settings):
    pki.ensure_server(settings)
    before = {p.name: p.read_bytes() for p in pki.directory(settings).glob("*.pem")}
    assert pki.ensure_server(settings) is None
    assert {p.name: p.read_bytes() for p in pki.directory(settings).glob("*.pem")} == before


# --- renewal and reissue -------------------------------------------------------------------------

def test_the_certificate_is_renewed_at_two_thirds_of_its_life_and_the_ca_stays(settings):
    start = time.time()
    pki.ensure_server(settings, start)
    ca = pki.ca_hash(settings)
    first = served(settings)[0]
    assert pki.ensure_server(settings, start + 0.6 * LIFETIME) is None
    reason = pki.ensure_server(settings, start + 0.7 * LIFETIME)
    assert reason.startswith("it expires in")
    renewed = served(settings)[0]
    assert renewed.serial_number != first.serial_number and renewed.public_key() != first.public_key()
    assert renewed.not_valid_after_utc.timestamp() == pytest.approx(start + 1.7 * LIFETIME, abs=2)
    assert pki.ca_hash(settings) == ca


def test_a_new_name_or_address_reissues_it_at_once(settings):
    pki.ensure_server(settings)
    grown = replace(settings, tls_names=("mesh.example", "10.1.2.3", "alias.example"))
    reason = pki.ensure_server(grown)
    assert reason == "the names changed (new: alias.example; gone: -)"
    assert "alias.example" in pki.names_of(served(grown)[0]).dns


def test_a_certificate_from_another_ca_is_replaced_by_one_from_ours(settings, tmp_path):
    other = replace(settings, data_dir=str(tmp_path / "elsewhere"))
    pki.ensure_server(other)
    pki.ensure_ca(settings)
    pki.directory(settings).joinpath("server.pem").write_bytes(pki.directory(other).joinpath("server.pem").read_bytes())
    assert pki.ensure_server(settings) == "it was not issued by this Commander's CA"
    served(settings)[0].verify_directly_issued_by(pki.ca_certificate(settings))


def test_a_worker_serves_the_renewed_certificate_to_new_handshakes(settings):
    pki.ensure_server(settings, time.time() - 0.7 * LIFETIME)  # issued long ago: due now
    context = server_context(settings)
    reloader = pki.Reloader(context, *pki.server_files(settings))
    ca_file = pki.directory(settings) / "ca.pem"
    first = presented(context, ca_file)
    assert reloader.check() is False

    assert pki.ensure_server(settings).startswith("it expires in")
    assert presented(context, ca_file) == first  # until this worker looks
    assert reloader.check() is True
    renewed = presented(context, ca_file)
    assert renewed != first and renewed == served(settings)[0]
    assert reloader.check() is False


def test_an_operators_pair_that_does_not_match_yet_keeps_the_previous_one(settings, tmp_path, caplog):
    """certbot and the like renew the certificate and the key as two files: between the two
    writes the pair does not match, and the worker must go on serving the old one."""
    for name in ("one", "two"):
        pki.ensure_server(replace(settings, data_dir=str(tmp_path / name)))
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    one = (tmp_path / "one" / "tls" / "server.pem").read_text().split("-----END CERTIFICATE-----")
    two = (tmp_path / "two" / "tls" / "server.pem").read_text().split("-----END CERTIFICATE-----")
    cert.write_text(one[0] + "-----END CERTIFICATE-----\n")
    key.write_text(one[-1])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    reloader = pki.Reloader(context, str(cert), str(key))
    cert.write_text(two[0] + "-----END CERTIFICATE-----\n")  # the new certificate, the old key
    with caplog.at_level(logging.WARNING, logger="m3shd.commander"):
        assert reloader.check() is False
    assert "does not load yet" in caplog.text
    ca_one = tmp_path / "one" / "tls" / "ca.pem"
    assert presented(context, ca_one).serial_number == x509.load_pem_x509_certificate(one[0].encode() + b"-----END CERTIFICATE-----\n").serial_number
    key.write_text(two[-1])
    assert reloader.check() is True
    assert presented(context, tmp_path / "two" / "tls" / "ca.pem")


# --- at start --------------------------------------------------------------------------------------

def test_plain_http_beyond_loopback_is_said_loudly_at_start(settings, caplog):
    with caplog.at_level(logging.WARNING, logger="m3shd.commander"):
        assert pki.prepare(replace(settings, bind="0.0.0.0:8470", tls="off")) is None
    assert "TLS IS OFF" in caplog.text and "in clear" in caplog.text
    caplog.clear()
    assert pki.prepare(replace(settings, bind="127.0.0.1:8470", tls="auto")) is None
    assert caplog.text == ""


def test_an_operators_certificate_replaces_the_mesh_ca(settings, tmp_path):
    pki.ensure_server(replace(settings, data_dir=str(tmp_path / "theirs")))
    theirs = str(tmp_path / "theirs" / "tls" / "server.pem")
    own = replace(settings, tls_cert=theirs, bind="0.0.0.0:8470", tls="auto")
    assert pki.prepare(own) == (theirs, theirs)
    assert not pki.directory(own).exists() and pki.ca_hash(own) is None


def test_an_operators_certificate_that_cannot_be_used_stops_the_start(settings, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(config.ConfigError, match="tls_cert/tls_key .* cannot be used"):
        pki.prepare(replace(settings, tls_cert=str(bad)))
    with pytest.raises(config.ConfigError, match="cannot be used"):
        pki.prepare(replace(settings, tls_cert=str(tmp_path / "missing.pem")))


# --- the routes --------------------------------------------------------------------------------------

@pytest.fixture
def tls_client(settings):
    pki.ensure_server(settings)
    app = create_app(settings, background=False)
    yield app.test_client()
    database = app.extensions["m3shd"].db
    getattr(database, "close_all", database.close)()


def test_the_ca_is_served_to_anyone_and_hashes_as_clients_compute_it(settings, tls_client):
    reply = tls_client.get("/api/ca")
    assert reply.status_code == 200
    assert trust.pem_hash(reply.json["certificate"]) == reply.json["ca_hash"] == pki.ca_hash(settings)


def test_without_a_mesh_ca_the_route_says_why(client):
    reply = client.get("/api/ca")
    assert reply.status_code == 404 and reply.json["error"]["code"] == "no_mesh_ca"


def test_a_join_token_comes_with_the_join_string_that_pins_the_ca(settings, tls_client):
    from commander import tokens

    cmdr = tls_client.application.extensions["m3shd"]
    with cmdr.db.connection_context(), cmdr.writing(wake=False):
        _, secret = tokens.create("admin", actor="test", role="admin")
    headers = {"Authorization": f"Bearer {secret}"}
    joining = tls_client.post("/api/tokens", json={"name": "pi", "kind": "join"}, headers=headers).json
    assert joining["join"] == f"{joining['token']}#{pki.ca_hash(settings)}"
    assert trust.split_join(joining["join"]) == (joining["token"], pki.ca_hash(settings))
    assert tls_client.post("/api/tokens", json={"name": "app", "role": "mobile"}, headers=headers).json["join"] is None


def test_without_a_mesh_ca_a_join_string_is_the_token(client, bearer):
    joining = client.post("/api/tokens", json={"name": "pi", "kind": "join"}, headers=bearer()).json
    assert joining["join"] == joining["token"]


def test_a_tokenless_join_shows_the_key_it_will_sign_with_and_keeps_it_on_approval(client, bearer):
    """Trust on first use: the machine logs its key's fingerprint while it waits; the operator
    sees the same one here before letting it in, and the node is registered with that key."""
    from commander.models import NodeKey

    key = "ab" * 32
    asked = client.post("/api/nodes/pending", json={"machine_id": "pi-kitchen-1", "name": "kitchen", "public_key": key})
    assert asked.status_code == 202
    (waiting,) = client.get("/api/nodes/pending", headers=bearer()).json["pending"]
    assert waiting["key_fingerprint"] == trust.key_fingerprint(key)
    assert client.post(f"/api/nodes/pending/{waiting['id']}/approve", headers=bearer()).status_code == 200
    answer = client.post("/api/nodes/pending/poll", json={"poll_token": asked.json["poll_token"]}).json
    with client.application.extensions["m3shd"].db.connection_context():
        assert NodeKey.get(NodeKey.node == answer["registration"]["node_id"]).public_key == key
