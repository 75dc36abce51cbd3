"""Trusting the Commander over TLS: the clients' half of commander/pki.py.

A Commander on the LAN serves HTTPS from its own mesh CA. A client pins that CA once, as a file,
and verifies every connection against it (requests' `verify=<CA file>`):
- a N0D3 joining with a join string `m3j_…#sha256:<hex>` (or a token and `--ca-hash`) fetches the
  CA over its first connection without verifying it (GET /api/ca), and keeps it only if the
  SHA-256 of its public key is that hash: the hash came with the token, over a channel the
  operator trusts, as with `kubeadm join --discovery-token-ca-cert-hash`;
- `m3shd login URL` shows the CA's hash and asks before keeping it (or checks `--ca-hash`);
- a N0D3 that found the Commander with mDNS and has no token keeps the CA it is shown first:
  trust on first use. The operator who approves it compares its key fingerprint.

Standard library and requests only: the N0D3 on a Raspberry Pi imports this, and cryptography
(which could read the certificate) stays off it for its memory. The one field needed, the
certificate's SubjectPublicKeyInfo, is found by walking its DER (`spki_der`); the tests check
the result against cryptography's reading.
"""

from __future__ import annotations

import base64
import hashlib
import re
import ssl
import warnings
from pathlib import Path

import requests
from urllib3.exceptions import InsecureRequestWarning

from m3shd.errors import CommanderUnreachable, CommanderUntrusted
from m3shd.files import write_private

HASH = re.compile(r"sha256:[0-9a-f]{64}")
SEPARATOR = "#"   # TOKEN#sha256:HEX: no token, URL-safe base64, contains it


class NoMeshCa(Exception):
    """The Commander serves no mesh CA (plain HTTP, or the operator's own certificate)."""


def check_hash(text: str, where: str = "CA hash") -> str:
    """A `sha256:<64 hex>` hash, lower-cased; a ValueError saying what is wrong otherwise."""
    value = text.strip().lower()
    if not HASH.fullmatch(value):
        raise ValueError(f"{where} {text!r}: expected sha256: and 64 hex digits "
                         "(`m3shd token create --kind join` or `m3shd commander ca` prints it)")
    return value


def split_join(text: str) -> tuple[str, str | None]:
    """A join token, or a join string TOKEN#sha256:HEX: (token, hash or None)."""
    token, separator, pin = text.strip().partition(SEPARATOR)
    return token, check_hash(pin, "the join string's CA hash") if separator else None


def join_string(token: str, ca_hash: str | None) -> str:
    """What joins: the token with the CA hash it pins, or the token alone when there is no mesh CA."""
    return f"{token}{SEPARATOR}{ca_hash}" if ca_hash else token


def key_fingerprint(public_key_hex: str) -> str:
    """How a node's Ed25519 key is shown to people, as ssh-keygen -l shows keys: SHA256:<base64>."""
    digest = hashlib.sha256(bytes.fromhex(public_key_hex)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


# --- the CA's key hash, from a PEM certificate ---------------------------------------------------

def _element(der: bytes, at: int) -> tuple[int, int]:
    """Where the DER element at `at` has its content, and where it ends."""
    length = der[at + 1]
    start = at + 2
    if length & 0x80:                       # long form: the next (length & 0x7f) bytes hold it
        count = length & 0x7F
        length = int.from_bytes(der[start:start + count], "big")
        start += count
    if start + length > len(der):
        raise IndexError("element runs past the end")
    return start, start + length


def spki_der(certificate_der: bytes) -> bytes:
    """The SubjectPublicKeyInfo of an X.509 certificate (RFC 5280 §4.1):
    Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
    signature, issuer, validity, subject, subjectPublicKeyInfo, … }, … }."""
    try:
        at, _ = _element(certificate_der, 0)           # into Certificate
        at, _ = _element(certificate_der, at)          # into tbsCertificate
        if certificate_der[at] == 0xA0:                # [0] version, present from v2 on
            at = _element(certificate_der, at)[1]
        for _ in range(5):                             # serialNumber … subject
            at = _element(certificate_der, at)[1]
        if certificate_der[at] != 0x30:
            raise IndexError("not a SEQUENCE")
        return certificate_der[at:_element(certificate_der, at)[1]]
    except IndexError:
        raise ValueError("not an X.509 certificate") from None


def pem_hash(pem: str) -> str:
    """`sha256:<hex>` of a PEM certificate's public key: the hash a join pins."""
    try:
        der = ssl.PEM_cert_to_DER_cert(pem)
    except ValueError:
        raise ValueError("not a PEM certificate") from None
    return "sha256:" + hashlib.sha256(spki_der(der)).hexdigest()


def file_hash(path: str | Path) -> str:
    return pem_hash(Path(path).read_text())


# --- fetching and pinning ----------------------------------------------------------------------

def fetch_ca(url: str, timeout: float = 10.0) -> str:
    """The CA certificate (PEM) the Commander at `url` serves, over a connection that is not
    verified: whoever answers is trusted only once its CA matches a hash or a person's yes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureRequestWarning)
            response = requests.get(url.rstrip("/") + "/api/ca", verify=False, timeout=timeout,
                                    headers={"User-Agent": "m3shd"})
    except requests.RequestException as exc:
        raise CommanderUnreachable(f"cannot reach the Commander at {url}: {exc.__class__.__name__}") from None
    if response.status_code == 404:
        raise NoMeshCa(f"the Commander at {url} has no mesh CA (it serves plain HTTP or its operator's own "
                       "certificate, which this machine's trust store verifies)")
    try:
        pem = response.json()["certificate"]
        pem_hash(pem)
    except (ValueError, KeyError, TypeError):
        raise CommanderUnreachable(f"{url}/api/ca answered {response.status_code} without a CA certificate; "
                                   "is that the Commander?") from None
    return pem


def mismatch(url: str, expected: str, actual: str) -> CommanderUntrusted:
    return CommanderUntrusted(f"the Commander at {url} presents a CA whose key hash is {actual}, not the {expected} "
                     "this machine was given: refusing it. Someone on the network may be posing as the "
                     "Commander, or the hash is another Commander's (`m3shd commander ca` on the Commander "
                     "prints its own).")


def pin(url: str, path: str | Path, expected: str | None) -> str:
    """Fetch the Commander's CA, check it against `expected` (None: trust on first use), keep it
    in `path` (0600); returns its hash. CommanderUntrusted when it is not the expected one."""
    pem = fetch_ca(url)
    actual = pem_hash(pem)
    if expected is not None and actual != expected:
        raise mismatch(url, expected, actual)
    write_private(path, pem)
    return actual


_VERIFY_FAILED = re.compile(r"certificate verify failed: ([^(]+?)\s*\(_ssl")


def explain(url: str, ca_file: str | None, exc: Exception) -> str:
    """What a failed certificate check means, for the person who reads it."""
    found = _VERIFY_FAILED.search(str(exc))
    reason = found.group(1) if found else "the TLS handshake failed"
    if "mismatch" in reason.lower():
        advice = ("its certificate does not name the address used here; add that name to the Commander's "
                  "[commander] tls_names, or use a name it carries")
    elif "valid" in reason.lower() or "expired" in reason.lower():
        advice = "check this machine's clock, and the Commander's"
    elif ca_file:
        advice = (f"it is not from the CA pinned in {ca_file}: refusing it. Someone on the network may be posing "
                  "as the Commander; if the Commander was set up again, pin its new CA (`m3shd login URL`, or "
                  "join again with the join string)")
    else:
        advice = ("this machine does not trust its certificate: pin the Commander's CA with `m3shd login URL`, "
                  "or join with the join string `m3shd token create --kind join` prints (it carries the CA hash)")
    return f"the Commander at {url} did not prove who it is ({reason}): {advice}"
