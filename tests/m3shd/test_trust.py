"""The clients' half of pinning (m3shd/trust.py): join strings, the CA's key hash read from a
certificate without cryptography (checked against cryptography's own reading here), and what a
failed certificate check tells the person who reads it."""

from __future__ import annotations

import base64
import datetime
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from m3shd import trust

HASH = "sha256:" + "ab" * 32


def certificate(key, version: x509.Version = x509.Version.v3, long_name: bool = False) -> x509.Certificate | bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "c" * 60 if long_name else "test")]
                     + [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"unit {i}") for i in range(20 * long_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now)
               .not_valid_after(now + datetime.timedelta(days=1)))
    if version is x509.Version.v3:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    built = builder.sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256())
    if version is x509.Version.v1:
        # cryptography writes v3 only; a v1 certificate has no [0] version field at all: cut it out.
        tbs = built.tbs_certificate_bytes
        start = 2 + (tbs[1] & 0x7F if tbs[1] & 0x80 else 0)  # past the tbsCertificate's own header
        assert tbs[start:start + 5] == b"\xa0\x03\x02\x01\x02"  # [0] { INTEGER 2 }
        der = built.public_bytes(serialization.Encoding.DER)
        rest = der[der.index(tbs) + len(tbs):]  # the signature algorithm and value, no longer matching
        return sequence(sequence(tbs[start + 5:]) + rest)
    return built


def sequence(body: bytes) -> bytes:
    """A DER SEQUENCE holding `body`, with the short or long form of its length."""
    if len(body) < 0x80:
        return bytes([0x30, len(body)]) + body
    size = (len(body).bit_length() + 7) // 8
    return bytes([0x30, 0x80 | size]) + len(body).to_bytes(size, "big") + body


def spki(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("key", [ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP384R1()),
                                 ed25519.Ed25519PrivateKey.generate(),
                                 rsa.generate_private_key(public_exponent=65537, key_size=2048)],
                         ids=["p256", "p384", "ed25519", "rsa2048"])
def test_the_key_hash_read_from_the_der_is_the_one_cryptography_computes(key):
    for long_name in (False, True):  # long names need the long form of a DER length
        pem = certificate(key, long_name=long_name).public_bytes(serialization.Encoding.PEM).decode()
        assert trust.pem_hash(pem) == "sha256:" + hashlib.sha256(spki(key)).hexdigest()


def test_a_version_1_certificate_without_the_version_field_is_read_too():
    key = ec.generate_private_key(ec.SECP256R1())
    der = certificate(key, x509.Version.v1)
    assert trust.spki_der(der) == spki(key)


@pytest.mark.parametrize("text", ["", "hello", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                                  "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n"])
def test_what_is_not_a_certificate_is_a_value_error(text):
    with pytest.raises(ValueError, match="certificate"):
        trust.pem_hash(text)


def test_join_strings_carry_the_hash_after_a_hash_sign():
    assert trust.split_join("m3j_abc-_9") == ("m3j_abc-_9", None)
    assert trust.split_join(f"m3j_abc#{HASH}") == ("m3j_abc", HASH)
    assert trust.split_join(f" m3j_abc#{HASH.upper().replace('SHA256', 'sha256')}\n") == ("m3j_abc", HASH)
    assert trust.join_string("m3j_abc", HASH) == f"m3j_abc#{HASH}"
    assert trust.join_string("m3j_abc", None) == "m3j_abc"
    assert trust.split_join("") == ("", None)


@pytest.mark.parametrize("bad", ["m3j_abc#", "m3j_abc#sha256:12", f"m3j_abc#md5:{'ab' * 32}", f"m3j_abc#{HASH}#x"])
def test_a_join_string_with_a_broken_hash_says_what_a_hash_looks_like(bad):
    with pytest.raises(ValueError, match="sha256: and 64 hex digits"):
        trust.split_join(bad)


def test_a_node_key_is_shown_as_ssh_shows_keys():
    key = bytes(range(32))
    expected = "SHA256:" + base64.b64encode(hashlib.sha256(key).digest()).decode().rstrip("=")
    assert trust.key_fingerprint(key.hex()) == expected and len(expected) == 50


@pytest.mark.parametrize("failure, ca_file, says", [
    ("certificate verify failed: self-signed certificate in certificate chain (_ssl.c:1006)", "/x/ca.pem",
     "not from the CA pinned in /x/ca.pem: refusing it"),
    ("certificate verify failed: unable to get local issuer certificate (_ssl.c:1006)", None,
     "pin the Commander's CA with `m3shd login URL`"),
    ("certificate verify failed: Hostname mismatch, certificate is not valid for 'nas'. (_ssl.c:1006)", "/x/ca.pem",
     "[commander] tls_names"),
    ("certificate verify failed: certificate has expired (_ssl.c:1006)", "/x/ca.pem", "this machine's clock"),
])
def test_a_failed_certificate_check_says_what_it_means_and_what_to_do(failure, ca_file, says):
    message = trust.explain("https://c:8470", ca_file, Exception(f"[SSL: CERTIFICATE_VERIFY_FAILED] {failure}"))
    assert message.startswith("the Commander at https://c:8470 did not prove who it is (") and says in message


def test_a_mismatch_names_both_hashes():
    other = "sha256:" + "cd" * 32
    message = str(trust.mismatch("https://c:8470", HASH, other))
    assert f"presents a CA whose key hash is {other}, not the {HASH}" in message
