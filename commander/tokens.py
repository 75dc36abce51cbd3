"""API and join tokens: created with a subset of the creator's permissions, shown once."""

from __future__ import annotations

from commander import audit
from commander.agents import service as agents
from commander.exceptions import Forbidden, Invalid, NotFound
from commander.models import Token, now
from commander.permissions import JOIN_PERMISSIONS, ROLES
from commander.secrets import new_token, token_hash


JOIN_TOKEN_TTL_S = 86_400
AGENT_PERMISSIONS = ("tasks:read", "tasks:submit")  # an agent's token unless told otherwise


def create(name: str, actor: str, kind: str = "api", permissions=None, role: str | None = None,
           expires_in: float | None = None, granter: frozenset[str] | None = None,
           agent: str | None = None) -> tuple[Token, str]:
    """Create a token (inside a write transaction); `granter`, the creator's permissions, bounds
    what it may hold. With `agent`, an API token that may only submit tasks as that agent and
    read its own tasks."""
    if agent is not None:
        if kind != "api":
            raise Invalid("invalid_request", "only an API token can be scoped to an agent")
        agents.get(agent)
        if permissions is None and role is None:
            permissions = AGENT_PERMISSIONS
    if kind == "join":
        wanted = set(JOIN_PERMISSIONS)
        # A join token sits in a new machine's config; unless told otherwise it stops working
        # after a day, so a lost or stolen machine cannot enrol again with it later.
        expires_in = expires_in or JOIN_TOKEN_TTL_S
    elif permissions is not None:
        wanted = set(permissions)
    else:
        wanted = set(ROLES[role or "commander"])
    if not wanted:
        raise Invalid("invalid_request", "a token needs at least one permission")
    if granter is not None and not wanted <= granter:
        missing = ", ".join(sorted(wanted - granter))
        raise Forbidden("forbidden", f"you cannot grant permissions you do not hold: {missing}")
    secret = new_token(kind)
    token = Token.create(
        kind=kind, name=name, token_hash=token_hash(secret), prefix=secret[:8], permissions=sorted(wanted),
        expires_at=now() + expires_in if expires_in else None, agent=agent,
    )
    audit.record(actor, "token.created", f"{kind} token {token.id} {name}", permissions=token.permissions,
                 expires_at=token.expires_at, agent=agent)
    return token, secret


def revoke(token_id: int, actor: str) -> Token:
    """Revoke an API or join token (inside a write transaction); node tokens go with their node."""
    token = Token.get_or_none((Token.id == token_id) & (Token.kind != "node"))
    if token is None:
        raise NotFound("not_found", f"token {token_id} does not exist")
    if token.revoked_at is None:
        Token.update(revoked_at=now()).where(Token.id == token_id).execute()
        audit.record(actor, "token.revoked", f"{token.kind} token {token.id} {token.name}")
    return Token.get_by_id(token_id)


def refusal(token: Token | None, at: float) -> str | None:
    """Why this token may not be used now, or None when it may."""
    if token is None or token.revoked_at is not None:
        return "unknown or revoked token"
    if token.expires_at is not None and token.expires_at <= at:
        return "the token has expired"
    if not token.permissions:
        return "the token has no permissions"
    return None


def listing() -> list[Token]:
    """API and join tokens (node tokens go with their nodes), oldest first."""
    return list(Token.select().where(Token.kind != "node").order_by(Token.id))


def as_created(token: Token, secret: str) -> dict:
    """A token just created, with its secret: shown this once (the API's TokenCreated)."""
    return dict(id=token.id, kind=token.kind, name=token.name, token=secret, agent=token.agent,
                permissions=token.permissions, expires_at=token.expires_at)
