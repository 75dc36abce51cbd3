"""API and join tokens in process (commander/tokens.py): what a new token may hold, when it
expires, why one is refused, and revoking."""

from __future__ import annotations

import pytest

from commander import tokens
from commander.db import Compiled
from commander.exceptions import Forbidden, Invalid, NotFound
from commander.models import AuditEntry, Token, now
from commander.permissions import PERMISSIONS, ROLES
from commander.secrets import token_hash
from mesh import join


def create(cmdr, name: str = "ci", **options) -> tuple[Token, str]:
    """As the route creates one: inside a write transaction, by user:ops."""
    with cmdr.writing():
        return tokens.create(name, actor="user:ops", **options)


def stored_tokens() -> int:
    return Token.select().where(Token.kind != "node").count()


@pytest.mark.parametrize("role", ["mobile", "commander", "admin"])  # a worker token expires (test_access.py)
def test_a_token_with_a_role_holds_that_roles_permissions_and_only_its_hash_is_kept(cmdr, role):
    token, secret = create(cmdr, role=role)
    assert secret.startswith("m3a_") and token.kind == "api"
    stored = Token.get_by_id(token.id)
    assert stored.permissions == sorted(ROLES[role]) and stored.expires_at is None
    assert (stored.token_hash, stored.prefix) == (token_hash(secret), secret[:8]) and secret not in stored.token_hash
    [entry] = AuditEntry.select().where(AuditEntry.action == "token.created")
    assert (entry.actor, entry.target) == ("user:ops", f"api token {token.id} ci")
    assert entry.details == dict(permissions=sorted(ROLES[role]), expires_at=None, agent=None)


def test_a_token_with_neither_role_nor_permissions_is_a_commander_token(cmdr):
    assert create(cmdr)[0].permissions == sorted(ROLES["commander"])


def test_explicit_permissions_are_exactly_what_the_token_holds(cmdr):
    token, _ = create(cmdr, permissions=["tasks:read", "tasks:submit", "tasks:read"], role="admin")
    assert Token.get_by_id(token.id).permissions == ["tasks:read", "tasks:submit"]


def test_a_token_needs_at_least_one_permission_and_a_refusal_stores_nothing(cmdr):
    with pytest.raises(Invalid) as refused:
        create(cmdr, permissions=[])
    assert refused.value.message == "a token needs at least one permission"
    assert stored_tokens() == 0 and not AuditEntry.select().where(AuditEntry.action.startswith("token.")).exists()


def test_a_token_may_be_made_to_expire(cmdr):
    t = now()
    token, _ = create(cmdr, role="mobile", expires_in=600)
    assert t + 600 <= token.expires_at <= now() + 600


def test_a_join_token_only_joins_and_expires_after_a_day_unless_told(cmdr):
    t = now()
    token, secret = create(cmdr, "pi", kind="join", permissions=["admin"])
    assert secret.startswith("m3j_") and token.permissions == ["nodes:join"]
    assert t + tokens.JOIN_TOKEN_TTL_S <= token.expires_at <= now() + tokens.JOIN_TOKEN_TTL_S
    short, _ = create(cmdr, "pi-2", kind="join", expires_in=600)
    assert short.expires_at <= now() + 600


@pytest.mark.parametrize("asked, granter, missing", [
    (dict(permissions=["tasks:read", "admin"]), ROLES["mobile"], "admin"),
    (dict(role="commander"), ROLES["mobile"], "agents:manage, federation:relay, nodes:manage, "
                                               "spend:manage, webhooks:ingest, webhooks:manage"),
    (dict(kind="join"), ROLES["mobile"], "nodes:join"),
])
def test_nobody_grants_a_permission_they_do_not_hold(cmdr, asked, granter, missing):
    with pytest.raises(Forbidden) as refused:
        create(cmdr, granter=frozenset(granter), **asked)
    assert refused.value.message == f"you cannot grant a token these permissions: you do not hold {missing}"
    assert stored_tokens() == 0 and not AuditEntry.select().where(AuditEntry.action.startswith("token.")).exists()


def test_what_a_creator_holds_it_may_grant(cmdr):
    mobile = frozenset(ROLES["mobile"])
    assert create(cmdr, role="mobile", granter=mobile)[0].permissions == sorted(mobile)
    assert create(cmdr, permissions=["tasks:read"], granter=mobile)[0].permissions == ["tasks:read"]
    assert create(cmdr, role="admin", granter=frozenset(PERMISSIONS))[0].permissions == sorted(PERMISSIONS)
    assert create(cmdr, role="admin")[0].permissions == sorted(PERMISSIONS)  # no granter: the local CLI, unbounded


def test_why_a_token_is_refused(cmdr):
    token, _ = create(cmdr, role="mobile", expires_in=60)
    at = now()
    assert tokens.refusal(token, at) is None
    assert tokens.refusal(None, at) == "unknown or revoked token"
    assert tokens.refusal(token, token.expires_at) == "the token has expired"  # expired at its expiry, not after
    assert tokens.refusal(token, token.expires_at - 0.001) is None
    Token.update(permissions=[]).where(Token.id == token.id).execute()
    assert tokens.refusal(Token.get_by_id(token.id), at) == "the token has no permissions"
    with cmdr.writing():
        tokens.revoke(token.id, "user:ops")
    assert tokens.refusal(Token.get_by_id(token.id), at) == "unknown or revoked token"


def test_revoking_is_recorded_once_and_leaves_node_tokens_alone(cmdr):
    token, _ = create(cmdr, role="mobile")
    with cmdr.writing():
        revoked = tokens.revoke(token.id, "user:ops")
    with cmdr.writing():
        again = tokens.revoke(token.id, "user:other")
    assert revoked.revoked_at is not None and again.revoked_at == revoked.revoked_at
    assert [e.actor for e in AuditEntry.select().where(AuditEntry.action == "token.revoked")] == ["user:ops"]
    node_token = Token.get(Token.node == join(cmdr).id)
    for token_id in (node_token.id, 999):
        with pytest.raises(NotFound), cmdr.writing():
            tokens.revoke(token_id, "user:ops")
    assert Token.get_by_id(node_token.id).revoked_at is None


def test_the_listing_holds_api_and_join_tokens_oldest_first(cmdr):
    first, _ = create(cmdr, "first", role="mobile")
    join(cmdr)
    second, _ = create(cmdr, "second", kind="join")
    assert [t.id for t in tokens.listing()] == [first.id, second.id]


def test_a_new_token_is_shown_once_with_its_secret(cmdr):
    token, secret = create(cmdr, role="worker", expires_in=60)
    assert tokens.as_created(token, secret) == dict(id=token.id, kind="api", name="ci", token=secret,
                                                    permissions=sorted(ROLES["worker"]), expires_at=token.expires_at,
                                                    agent=None)


def test_an_expired_or_revoked_token_is_refused_at_the_door(cmdr, client):
    expiring, expiring_secret = create(cmdr, "expiring", role="mobile", expires_in=60)
    revoked, revoked_secret = create(cmdr, "revoked", role="mobile")
    Token.update(expires_at=now() - 1).where(Token.id == expiring.id).execute()
    with cmdr.writing():
        tokens.revoke(revoked.id, "user:ops")
    for secret, message in ((expiring_secret, "the token has expired"), (revoked_secret, "unknown or revoked token")):
        reply = client.get("/api/tasks", headers={"Authorization": f"Bearer {secret}"})
        assert reply.status_code == 401
        assert reply.get_json() == {"error": {"code": "unauthenticated", "message": message}}


def test_the_sweep_finds_usable_exactly_the_node_tokens_refusal_passes(cmdr):
    """tokens.acting puts `refusal`'s rules into SQL for the dispatcher's sweep over every waiting
    node; token by token it must agree with them, over more tokens than one of its queries asks."""
    joined = [join(cmdr, f"n{i}") for i in range(Compiled.CHUNK + 20)]
    node_tokens = {node.id: Token.get(Token.node == node.id) for node in joined}
    at = now()
    changed = list(node_tokens.values())
    Token.update(revoked_at=at - 1).where(Token.id.in_([t.id for t in changed[0::5]])).execute()
    Token.update(expires_at=at).where(Token.id.in_([t.id for t in changed[1::5]])).execute()  # expired at `at`
    Token.update(expires_at=at + 0.001).where(Token.id.in_([t.id for t in changed[2::5]])).execute()
    Token.update(permissions=[]).where(Token.id.in_([t.id for t in changed[3::5]])).execute()
    api_token, _ = create(cmdr, role="mobile")  # usable, but no node's
    asked = [t.id for t in changed] + [api_token.id, 10**6]
    expected = {(t.id, t.node_id) for t in Token.select().where(Token.id.in_(asked) & Token.node.is_null(False))
                if tokens.refusal(t, at) is None}
    assert len(expected) == len(joined) * 2 // 5  # the untouched fifth and the one expiring later
    assert tokens.acting(asked, at) == expected
    assert tokens.acting([], at) == set()
