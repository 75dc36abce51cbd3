"""Operator passwords: PBKDF2-HMAC-SHA256, salt and iteration count stored with the hash.

Format: `pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>`. A hash made with fewer iterations
than today's count verifies, and tells the caller to re-hash (done at the next login).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

ALGORITHM = "pbkdf2_sha256"
ITERATIONS = 600_000  # OWASP's 2023 floor for PBKDF2-HMAC-SHA256
MIN_LENGTH = 10
MAX_LENGTH = 1024     # PBKDF2 hashes long inputs first, but a megabyte password is a DoS, not a password


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _derive(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)


def hash_password(password: str, iterations: int = ITERATIONS) -> str:
    salt = secrets.token_bytes(16)
    return f"{ALGORITHM}${iterations}${_b64(salt)}${_b64(_derive(password, salt, iterations))}"


def verify(password: str, stored: str, iterations: int = ITERATIONS) -> tuple[bool, bool]:
    """(matches, needs_rehash). Unknown formats never match."""
    try:
        algorithm, rounds, salt, expected = stored.split("$")
        rounds = int(rounds)
        salt, expected = _unb64(salt), _unb64(expected)
    except ValueError:
        return False, False
    if algorithm != ALGORITHM or rounds < 1:
        return False, False
    matches = hmac.compare_digest(_derive(password[:MAX_LENGTH], salt, rounds), expected)
    return matches, matches and rounds < iterations


@functools.cache
def dummy_hash() -> str:
    """Verified against when the account does not exist, so a login for an unknown name costs
    the same time as one with a wrong password (no user enumeration by timing)."""
    return hash_password(secrets.token_urlsafe(16))


def problem(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_LENGTH:
        return f"a password needs at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"a password may have at most {MAX_LENGTH} characters"
    return None
