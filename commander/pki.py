"""The mesh CA and the Commander's certificate: HTTPS on the LAN (DESIGN.md §4, "Trust on the LAN").

On first start the Commander makes a small CA and issues itself a server certificate for every
name and address it may be reached by. Clients pin the CA by the SHA-256 of its public key
(`sha256:<hex>` over the SubjectPublicKeyInfo DER, as `kubeadm join --discovery-token-ca-cert-hash`
does); join strings carry that hash (m3shd/trust.py is the clients' half).

Files in <data_dir>/tls/, all mode 0600, each replaced whole (m3shd.files.write_private):
  ca.pem      the CA certificate: what GET /api/ca serves and clients pin
  ca.key      the CA's private key; it never leaves this directory
  server.pem  the server certificate, the CA certificate, then the server key: one file, so a
              worker reloading it can never pair a new certificate with an old key

ECDSA P-256 throughout. Ed25519 would do for Python (ssl, requests/urllib3 and gevent's ssl take
it), not for browsers: Chromium offers no Ed25519 signature algorithm in TLS and fails the
handshake (ERR_SSL_VERSION_OR_CIPHER_MISMATCH, tried with Debian's Chromium), which would lock
the dashboard out. P-256 works with all of them, and its handshakes are cheap.

The chain served includes the CA certificate: a browser told to trust the CA by its key hash
(Chromium's --ignore-certificate-errors-spki-list) matches only the certificates it is sent.

Lifetimes: the CA ten years; the server certificate `tls_cert_lifetime` (90 days), renewed once
two thirds of it have passed, and reissued at once when the names it must carry change (a new LAN
address, a new `tls_names` entry). The gunicorn master checks at start (`prepare`), then the worker
holding the reaper lock (`start_renewal`); every worker puts a changed file into its live SSL
context (`Reloader`), so connections already open carry on.

An operator's own certificate (`tls_cert`, `tls_key`: their CA, or ACME) replaces all of this:
no mesh CA is made, GET /api/ca answers 404, and clients verify with their system's trust store.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import ipaddress
import logging
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from commander.settings import CommanderSettings
from m3shd import loops, trust
from m3shd.config import ConfigError
from m3shd.files import write_private

log = logging.getLogger("m3shd.commander")

CA_LIFETIME = 10 * 365 * 86400.0
RENEW_AFTER = 2 / 3          # of a server certificate's lifetime
SKEW = 3600.0                # certificates start this long ago: clocks on a LAN disagree
LOOPBACK = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class Names:
    """What the server certificate must name: DNS names and IP addresses, sorted."""
    dns: tuple[str, ...]
    ips: tuple[str, ...]

    def describe(self) -> str:
        return ", ".join(self.dns + self.ips)


def bind_host(bind: str) -> str:
    return bind.rpartition(":")[0].strip("[]")


def beyond_loopback(bind: str) -> bool:
    """Whether a bind address lets other machines connect (a wildcard, a LAN address or name)."""
    host = bind_host(bind)
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a wildcard ("") or a host name


def enabled(settings: CommanderSettings) -> bool:
    """HTTPS or not: `tls` on/off, or auto: on once the Commander listens beyond loopback."""
    mode = settings.tls
    if mode not in ("auto", "on", "off"):
        raise ConfigError(f"[commander] tls: expected auto, on or off, got {mode!r}")
    return mode == "on" or (mode == "auto" and beyond_loopback(settings.bind))


def mesh_issued(settings: CommanderSettings) -> bool:
    """TLS with the mesh CA's certificate (not the operator's own)."""
    return enabled(settings) and not settings.tls_cert


def directory(settings: CommanderSettings) -> Path:
    return Path(settings.data_dir) / "tls"


def server_files(settings: CommanderSettings) -> tuple[str, str]:
    """(certfile, keyfile) for gunicorn: the operator's, or the mesh-issued one file holding both."""
    if settings.tls_cert:
        return settings.tls_cert, settings.tls_key or settings.tls_cert
    path = str(directory(settings) / "server.pem")
    return path, path


def spki_hash(certificate: x509.Certificate) -> str:
    """`sha256:<hex>` of the certificate's SubjectPublicKeyInfo (DER): what joins pin."""
    der = certificate.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def ca_certificate(settings: CommanderSettings) -> x509.Certificate | None:
    """The mesh CA, when this Commander serves TLS from it and has made it."""
    path = directory(settings) / "ca.pem"
    if not mesh_issued(settings) or not path.exists():
        return None
    return x509.load_pem_x509_certificate(path.read_bytes())


def ca_hash(settings: CommanderSettings) -> str | None:
    """The hash joins pin, or None when there is no mesh CA to pin (plain HTTP, operator's certificate)."""
    ca = ca_certificate(settings)
    return spki_hash(ca) if ca else None


def join_for(settings: CommanderSettings, created: dict) -> str | None:
    """A new join token's join string (m3shd/trust.py): the token and the mesh CA's hash, which
    the joining machine checks the CA it fetches against; the token alone without a mesh CA."""
    return trust.join_string(created["token"], ca_hash(settings)) if created["kind"] == "join" else None


def wanted_names(settings: CommanderSettings) -> Names:
    """Every name a client may use: host name, `<host>.local` (mDNS), its fully qualified name,
    localhost and loopback, the bind address, for a wildcard bind every LAN address, and `tls_names`."""
    host = socket.gethostname()
    short = host.split(".")[0]
    dns = {host, short, f"{short}.local", "localhost"}
    fqdn = socket.getfqdn()
    if "." in fqdn and not fqdn.startswith("localhost"):
        dns.add(fqdn)
    ips = set(LOOPBACK)
    bound = bind_host(settings.bind)
    extra = [bound] if bound not in ("", "0.0.0.0", "::") else _lan_addresses()
    for name in extra + list(settings.tls_names):
        try:
            ips.add(str(ipaddress.ip_address(name)))
        except ValueError:
            dns.add(name.lower())
    return Names(tuple(sorted(dns)), tuple(sorted(ips)))


def _lan_addresses() -> list[str]:
    import ifaddr   # zeroconf's own dependency for listing interfaces

    found = [ip.ip if isinstance(ip.ip, str) else ip.ip[0] for adapter in ifaddr.get_adapters() for ip in adapter.ips]
    return [a for a in found if not ipaddress.ip_address(a.split("%")[0]).is_link_local]


def names_of(certificate: x509.Certificate) -> Names:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return Names((), ())
    return Names(tuple(sorted(san.get_values_for_type(x509.DNSName))),
                 tuple(sorted(str(ip) for ip in san.get_values_for_type(x509.IPAddress))))


# --- issuing ---------------------------------------------------------------------------------

def _utc(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _builder(subject: x509.Name, issuer: x509.Name, public_key, now: float, lifetime: float) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(now - SKEW)).not_valid_after(_utc(now + lifetime))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))


def _usage(**allowed) -> x509.KeyUsage:
    flags = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{flag: allowed.get(flag, False) for flag in flags})


def make_ca(now: float) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "M3SHD"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"M3SHD mesh CA on {socket.gethostname()}")])
    certificate = (_builder(name, name, key.public_key(), now, CA_LIFETIME)
                   # path length 0: it signs the Commander's certificate and no other CA
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True)
                   .sign(key, hashes.SHA256()))
    return certificate, key


def issue_server(ca: x509.Certificate, ca_key, names: Names, now: float, lifetime: float):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names.dns[0] if names.dns else "m3shd")])
    san = [x509.DNSName(name) for name in names.dns] + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in names.ips]
    certificate = (_builder(subject, ca.subject, key.public_key(), now, lifetime)
                   .add_extension(x509.SubjectAlternativeName(san), critical=False)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(_usage(digital_signature=True), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()), critical=False)
                   .sign(ca_key, hashes.SHA256()))
    return certificate, key


class _Locked:
    """One writer of the tls directory at a time (the Commander's master or renewing worker, and
    `m3shd commander ca` run beside it), so two never make two different CAs."""

    def __init__(self, folder: Path):
        # The data dir too, when this makes it first: private like everything under it.
        folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.mkdir(exist_ok=True, mode=0o700)
        self.fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self):
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *_):
        os.close(self.fd)  # releases the lock


def _load_ca(folder: Path):
    ca = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
    return ca, key


def ensure_ca(settings: CommanderSettings, now: float | None = None) -> x509.Certificate:
    """The mesh CA, made on first use."""
    folder = directory(settings)
    with _Locked(folder):
        if not (folder / "ca.pem").exists():
            ca, key = make_ca(now or time.time())
            write_private(folder / "ca.key", _key_pem(key))  # the key first: a CA file always has its key
            write_private(folder / "ca.pem", pem(ca))
            log.info("made the mesh CA %s", spki_hash(ca))
        return _load_ca(folder)[0]


def renewal_reason(certificate: x509.Certificate | None, ca: x509.Certificate, names: Names, now: float,
                   lifetime: float) -> str | None:
    """Why the server certificate must be issued again, or None while it is good."""
    if certificate is None:
        return "there is none yet"
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "it was not issued by this Commander's CA"
    left = certificate.not_valid_after_utc.timestamp() - now
    if left < lifetime * (1 - RENEW_AFTER):
        return f"it expires in {max(left, 0):.0f} s"
    held = names_of(certificate)
    if held != names:
        added = sorted(set(names.dns + names.ips) - set(held.dns + held.ips))
        dropped = sorted(set(held.dns + held.ips) - set(names.dns + names.ips))
        return f"the names changed (new: {', '.join(added) or '-'}; gone: {', '.join(dropped) or '-'})"
    return None


def ensure_server(settings: CommanderSettings, now: float | None = None) -> str | None:
    """Issue the server certificate when it is missing, due or names the wrong things; returns
    why it was issued (None: the one on disk is good)."""
    now = now or time.time()
    folder = directory(settings)
    ensure_ca(settings, now)
    names = wanted_names(settings)
    with _Locked(folder):
        ca, ca_key = _load_ca(folder)
        path = folder / "server.pem"
        current = x509.load_pem_x509_certificate(path.read_bytes()) if path.exists() else None
        reason = renewal_reason(current, ca, names, now, settings.tls_cert_lifetime)
        if reason:
            certificate, key = issue_server(ca, ca_key, names, now, settings.tls_cert_lifetime)
            write_private(path, pem(certificate) + pem(ca) + _key_pem(key))
            log.info("issued the Commander's certificate for %s, valid until %s, because %s", names.describe(),
                     certificate.not_valid_after_utc.isoformat(timespec="seconds"), reason)
    return reason


# --- serving ---------------------------------------------------------------------------------

def prepare(settings: CommanderSettings) -> tuple[str, str] | None:
    """At start, before gunicorn binds: the (certfile, keyfile) to serve with, made or renewed
    now for the mesh CA, checked for an operator's; None for plain HTTP, said loudly when it
    is plain beyond loopback. A bad operator certificate or key is a ConfigError."""
    if not enabled(settings):
        if beyond_loopback(settings.bind):
            log.warning("*** TLS IS OFF while the Commander listens on %s, beyond this machine: API tokens, "
                        "session cookies, prompts and answers cross the network in clear. Set [commander] "
                        "tls = \"auto\" (the default) unless a TLS proxy in front of it is the only way in. ***",
                        settings.bind)
        return None
    files = server_files(settings)
    if settings.tls_cert:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(*files)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"[commander] tls_cert/tls_key ({files[0]}, {files[1]}) cannot be used: {exc}") from None
        log.info("serving HTTPS with the operator's certificate %s", files[0])
    else:
        ensure_server(settings)
        log.info("serving HTTPS with the mesh CA %s (clients pin this hash)", ca_hash(settings))
    return files


def check_every(settings: CommanderSettings) -> float:
    """How often the renewal is checked: often enough for short-lived certificates."""
    return min(300.0, settings.tls_cert_lifetime / 30)


def start_renewal(cmdr) -> None:
    """In one worker at a time (Commander.run_alone): reissue when due or when the names change."""
    settings = cmdr.settings
    if not mesh_issued(settings):
        return
    every = check_every(settings)
    threading.Thread(target=cmdr.run_alone, args=("certificate-renewal", lambda: ensure_server(settings), every,
                                                  10 * every), name="certificate renewal", daemon=True).start()


class Reloader:
    """Keeps one worker's SSL context on the newest certificate file.

    gunicorn's gevent worker makes its SSL context once and wraps every accepted connection with
    it. Loading the renewed file into that same context changes what the next handshakes present;
    connections already open (long-polls, event streams) are untouched. Restarting the workers
    instead (gunicorn re-reads certfile when it starts a worker, e.g. after a HUP) would cut every
    open connection and cost each worker its start-up: see bench/README.md for both, measured.
    A pair that does not load (an operator's certificate renewed before its key) keeps the old
    one and is tried again at the next look."""

    def __init__(self, context: ssl.SSLContext, certfile: str, keyfile: str):
        self.context, self.files = context, (certfile, keyfile)
        self.seen = self.stamp()

    def stamp(self) -> tuple:
        stats = [Path(name).stat() for name in self.files]
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def check(self) -> bool:
        """Load the files if they changed since the last load; whether they were loaded."""
        now = self.stamp()
        if now == self.seen:
            return False
        try:
            # Tried on a scratch context first: a pair that fails half-way (the certificate
            # loaded, then the key refused) would leave the live context serving a certificate
            # with the wrong key, and every handshake failing.
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(*self.files)
            self.context.load_cert_chain(*self.files)
        except (OSError, ssl.SSLError) as exc:
            log.warning("the changed certificate %s does not load yet (%s); serving the previous one", self.files[0], exc)
            return False
        self.seen = now
        log.info("serving the renewed certificate %s", self.files[0])
        return True

    def start(self, every: float) -> None:
        def look() -> None:
            time.sleep(every)
            self.check()

        loops.start("certificate reload", look, logger=log, base=every, cap=10 * every)
