"""Sealing a runner credential to one N0D3: only the holder of that node's X25519 private key
opens it, and only for the lease it was sealed into.

The construction is ECIES as HPKE's base mode composes it (RFC 9180), from `cryptography`'s
primitives: a fresh ephemeral X25519 key per seal; HKDF-SHA256 over the shared secret, salted
with both public keys, yields a ChaCha20-Poly1305 key and nonce used once; the AEAD's associated
data is the lease's context (node, task, attempt, kind), so a sealed credential copied into
another lease, node or kind fails to open. Nothing the Commander keeps or sends opens it.

    sealed = seal(node_public_key, secret, context)   # base64: ephemeral key, then ciphertext
    secret = open_sealed(node_private_key, sealed, context)

Only the Commander and the N0D3 import this (both install `cryptography`); the N0D3 imports it
when a lease brings a credential, not at start: an idle Pi keeps `cryptography` out of memory.
"""

from __future__ import annotations

import base64

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

INFO = b"m3shd runner credential v1"
KEY_BYTES, NONCE_BYTES = 32, 12


class Unsealable(ValueError):
    """The sealed text does not open with this key and context, or the key is unusable."""


def new_private_key() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair: (private, public), 32 raw bytes each."""
    key = X25519PrivateKey.generate()
    return key.private_bytes_raw(), raw_public(key.public_key())


def raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def context(node_id: int, task_id: int, attempt: int, kind: str) -> bytes:
    """What a sealed credential is bound to: this node, this attempt of this task, this kind."""
    return f"node={node_id};task={task_id};attempt={attempt};kind={kind}".encode()


def _aead(shared: bytes, ephemeral: bytes, recipient: bytes) -> tuple[ChaCha20Poly1305, bytes]:
    derived = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES + NONCE_BYTES, salt=ephemeral + recipient,
                   info=INFO).derive(shared)
    return ChaCha20Poly1305(derived[:KEY_BYTES]), derived[KEY_BYTES:]


def seal(recipient_public: bytes, secret: bytes, bound_to: bytes) -> str:
    """`secret` sealed to the holder of `recipient_public` (32 raw bytes) for `bound_to`."""
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = raw_public(ephemeral.public_key())
    try:
        # A low-order point as the recipient's key gives an all-zero secret, which this refuses.
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    except ValueError as exc:
        raise Unsealable(f"unusable X25519 public key: {exc}") from None
    aead, nonce = _aead(shared, ephemeral_public, recipient_public)
    return base64.b64encode(ephemeral_public + aead.encrypt(nonce, secret, bound_to)).decode()


def open_sealed(private: bytes, sealed: str, bound_to: bytes) -> bytes:
    """The secret sealed to `private`'s public key for `bound_to`; Unsealable otherwise."""
    try:
        raw = base64.b64decode(sealed, validate=True)
        key = X25519PrivateKey.from_private_bytes(private)
        ephemeral_public, ciphertext = raw[:32], raw[32:]
        shared = key.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
        aead, nonce = _aead(shared, ephemeral_public, raw_public(key.public_key()))
        return aead.decrypt(nonce, ciphertext, bound_to)
    except (InvalidTag, ValueError, TypeError) as exc:
        raise Unsealable("the sealed credential does not open with this node's key for this lease") from exc
