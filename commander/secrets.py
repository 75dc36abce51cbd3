"""Secrets at rest: Fernet with MultiFernet, so keys rotate (DESIGN.md §4)."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


def load_keys(configured: str, data_dir: str) -> list[bytes]:
    """The configured keys (comma-separated, newest first), else the data directory's key
    file, created with one new key on first start (mode 0600)."""
    if configured:
        return [key.strip().encode() for key in configured.split(",") if key.strip()]
    path = _created(Path(data_dir) / "secret.keys", lambda: Fernet.generate_key().decode() + "\n")
    return [line.strip().encode() for line in path.read_text().splitlines() if line.strip()]


def load_index_key(data_dir: str) -> bytes:
    """The key of blind indexes (HMAC over words), apart from the Fernet keys: rotating those
    must not change what an index token means."""
    path = _created(Path(data_dir) / "index.key", lambda: secrets.token_hex(32) + "\n")
    return bytes.fromhex(path.read_text().strip())


def _created(path: Path, make) -> Path:
    """`path`, written once with `make()` (mode 0600) if it does not exist yet."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(make())
    return path


class SecretBox:
    def __init__(self, keys: list[bytes], index_key: bytes = b""):
        self._fernet = MultiFernet([Fernet(key) for key in keys])
        self.index_key = index_key  # for blind indexes (HMAC); never used to encrypt

    def encrypt(self, plain: bytes) -> str:
        return self._fernet.encrypt(plain).decode()

    def decrypt(self, sealed: str) -> bytes:
        try:
            return self._fernet.decrypt(sealed.encode())
        except InvalidToken:
            raise ValueError("a stored secret cannot be decrypted with the configured keys") from None


def new_token(kind: str) -> str:
    """`m3a_…` (API), `m3j_…` (join) or `m3n_…` (node): the prefix says what a leaked token opens."""
    return f"m3{kind[0]}_{secrets.token_urlsafe(32)}"


def token_hash(token: str) -> str:
    # Tokens carry 256 random bits, so a plain SHA-256 is enough to make the stored form useless.
    return hashlib.sha256(token.encode()).hexdigest()
