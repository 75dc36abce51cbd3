"""API and join tokens: created with a subset of the creator's permissions, shown once."""

from __future__ import annotations

from commander.errors import ApiError
from commander.models import Token, now
from commander.permissions import JOIN_PERMISSIONS, ROLES
from commander.secrets import new_token, token_hash


def create(name: str, kind: str = "api", permissions=None, role: str | None = None,
           expires_in: float | None = None, granter: frozenset[str] | None = None) -> tuple[Token, str]:
    """Create a token; `granter` (the creator's permissions) bounds what it may hold."""
    if kind == "join":
        wanted = set(JOIN_PERMISSIONS)
    elif permissions is not None:
        wanted = set(permissions)
    else:
        wanted = set(ROLES[role or "commander"])
    if not wanted:
        raise ApiError(400, "invalid_request", "a token needs at least one permission")
    if granter is not None and not wanted <= granter:
        missing = ", ".join(sorted(wanted - granter))
        raise ApiError(403, "forbidden", f"you cannot grant permissions you do not hold: {missing}")
    secret = new_token(kind)
    token = Token.create(
        kind=kind, name=name, token_hash=token_hash(secret), prefix=secret[:8], permissions=sorted(wanted),
        expires_at=now() + expires_in if expires_in else None,
    )
    return token, secret


def as_created(token: Token, secret: str) -> dict:
    return dict(id=token.id, kind=token.kind, name=token.name, token=secret,
                permissions=token.permissions, expires_at=token.expires_at)
