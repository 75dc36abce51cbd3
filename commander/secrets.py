"""Tokens: how they are made and kept. Keys at rest: commander/keyring.py."""

from __future__ import annotations

import hashlib
import secrets


def new_token(kind: str) -> str:
    """`m3a_…` (API), `m3j_…` (join) or `m3n_…` (node): the prefix says what a leaked token opens."""
    return f"m3{kind[0]}_{secrets.token_urlsafe(32)}"


def token_hash(token: str) -> str:
    # Tokens carry 256 random bits, so a plain SHA-256 is enough to make the stored form useless.
    return hashlib.sha256(token.encode()).hexdigest()
