"""API and join tokens: created with a subset of the creator's permissions, shown once."""

from __future__ import annotations

import peewee as pw

from commander import audit
from commander.agents import service as agents
from commander.db import Compiled, Param
from commander.exceptions import Invalid, NotFound
from commander.models import Token, now
from commander.permissions import JOIN_PERMISSIONS, ROLES, check_held
from commander.secrets import new_token, token_hash
from m3shd.wire import Role


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
    elif permissions is not None:
        wanted = set(permissions)
    else:
        wanted = set(ROLES[role or "commander"])
    if not expires_in and for_machines(wanted):
        # It sits in a new machine's config; unless told otherwise it stops working after a day,
        # so a lost or stolen machine cannot enrol again with it later.
        expires_in = JOIN_TOKEN_TTL_S
    if not wanted:
        raise Invalid("invalid_request", "a token needs at least one permission")
    check_held(granter, wanted, "grant a token these permissions")
    secret = new_token(kind)
    token = Token.create(
        kind=kind, name=name, token_hash=token_hash(secret), prefix=secret[:8], permissions=sorted(wanted),
        expires_at=now() + expires_in if expires_in else None, agent=agent,
    )
    audit.record(actor, "token.created", f"{kind} token {token.id} {name}", permissions=token.permissions,
                 expires_at=token.expires_at, agent=agent)
    return token, secret


def for_machines(permissions: set[str]) -> bool:
    """A token that enrols machines and holds nothing a person would use (a join token, or an
    API token of the `worker` preset or less): it expires after a day unless told otherwise."""
    return set(JOIN_PERMISSIONS) <= permissions <= set(ROLES[Role.WORKER])


def revoke(token_id: int, actor: str, revoker: frozenset[str] | None = None) -> Token:
    """Revoke an API or join token (inside a write transaction); node tokens go with their node.
    `revoker`, the caller's permissions, must hold all the token's: nobody acts on a credential
    stronger than their own."""
    token = Token.get_or_none((Token.id == token_id) & (Token.kind != "node"))
    if token is None:
        raise NotFound("not_found", f"token {token_id} does not exist")
    check_held(revoker, token.permissions, f"revoke {token.kind} token {token.id}")
    if token.revoked_at is None:
        Token.update(revoked_at=now()).where(Token.id == token_id).execute()
        audit.record(actor, "token.revoked", f"{token.kind} token {token.id} {token.name}")
    return Token.get_by_id(token_id)


def refusal(token: Token | None, at: float) -> str | None:
    """Why this token may not be used now, or None when it may. ACTING below asks the same in SQL
    (tests/commander/test_tokens.py checks that they agree)."""
    if token is None or token.revoked_at is not None:
        return "unknown or revoked token"
    if token.expires_at is not None and token.expires_at <= at:
        return "the token has expired"
    if not token.permissions:
        return "the token has no permissions"
    return None


VALIDITY = (Token.id, Token.node, Token.permissions, Token.expires_at, Token.revoked_at)  # what `refusal` reads
# A claim checks its token again as it takes a lease: compiled once (db.Compiled).
TOKEN_BY_ID = Compiled(Token, lambda: Token.select(*VALIDITY).where(Token.id == Param("token_id")))


def acts_for(token_id: int, node_id: int, at: float) -> bool:
    """Does node token `token_id` still act for node `node_id` at `at`: there, usable, and that node's?"""
    found = TOKEN_BY_ID.rows(token_id=token_id)
    return bool(found) and found[0].node_id == node_id and refusal(found[0], at) is None


# The dispatcher's once-a-second sweep asks about the token of every node waiting in its worker
# (leases.waiting_in_vain): `refusal`'s rules in SQL, so only usable tokens' two ids come back.
ACTING = Compiled(Token, lambda ids: Token.select(Token.id, Token.node).where(
    Token.id.in_(ids) & Token.node.is_null(False) & Token.revoked_at.is_null()
    & (Token.expires_at.is_null() | (Token.expires_at > Param("at")))
    & (Token.permissions != pw.Value(Token.permissions.db_value([]), converter=False))))


def acting(token_ids: list[int], at: float) -> set[tuple[int, int]]:
    """(token id, node id) for each of `token_ids` that is a usable node token at `at` (see `refusal`)."""
    return set(ACTING.tuples_among("ids", token_ids, at=at))


def listing() -> list[Token]:
    """API and join tokens (node tokens go with their nodes), oldest first."""
    return list(Token.select().where(Token.kind != "node").order_by(Token.id))


def as_created(token: Token, secret: str) -> dict:
    """A token just created, with its secret: shown this once (the API's TokenCreated)."""
    return dict(id=token.id, kind=token.kind, name=token.name, token=secret, agent=token.agent,
                permissions=token.permissions, expires_at=token.expires_at)
