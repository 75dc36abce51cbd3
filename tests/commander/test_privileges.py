"""Nobody grants, obtains or overrides permissions they do not hold (audit 2, item 3), in process:
creating users, changing their role, disabling them, resetting their password, revoking tokens;
and the last enabled admin stays."""

from __future__ import annotations

import functools

import pytest

from commander import passwords
from commander.models import AuditEntry, Session, Token, User
from commander.permissions import PERMISSIONS, ROLES

PASSWORD = "correct horse battery"
ADMIN_ONLY = ["admin"]
ADMIN_AND_MOBILE = ["admin", *ROLES["mobile"]]


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch):
    """PBKDF2 at a thousand rounds: these tests are about who may act, not about hashing."""
    monkeypatch.setattr(passwords, "hash_password", functools.partial(passwords.hash_password, iterations=1000))


@pytest.fixture
def db(app):
    cmdr = app.extensions["m3shd"]
    with cmdr.db.connection_context():
        yield cmdr


def user(db, role: str, name: str | None = None, disabled: bool = False) -> User:
    return User.create(username=name or f"{role}-user", password_hash=passwords.hash_password(PASSWORD), role=role,
                       disabled_at=1.0 if disabled else None)


def refusal(reply, status: int, code: str) -> str:
    assert reply.status_code == status, reply.get_json()
    error = reply.get_json()["error"]
    assert error["code"] == code, error
    return error["message"]


def audited(action: str, target: str) -> list[AuditEntry]:
    return list(AuditEntry.select().where((AuditEntry.action == action) & (AuditEntry.target == target)))


def test_creating_a_user_needs_every_permission_of_its_role(db, client, bearer):
    admin_only = bearer(None, ADMIN_ONLY)
    for role in ROLES:
        message = refusal(client.post("/api/users", headers=admin_only,
                                      json={"username": f"new-{role}", "password": PASSWORD, "role": role}),
                          403, "forbidden")
        assert f"create a user with the {role} role" in message
        assert set(message.rpartition("you do not hold ")[2].split(", ")) == set(ROLES[role]) - {"admin"}
    assert User.select().count() == 0
    some = bearer(None, ADMIN_AND_MOBILE)
    assert client.post("/api/users", headers=some,
                       json={"username": "phone-owner", "password": PASSWORD, "role": "mobile"}).status_code == 201
    refusal(client.post("/api/users", headers=some, json={"username": "boss", "password": PASSWORD,
                                                           "role": "commander"}), 403, "forbidden")


def test_changing_a_role_needs_the_old_and_the_new_roles_permissions(db, client, bearer):
    mobile, boss = user(db, "mobile"), user(db, "commander")
    some = bearer(None, ADMIN_AND_MOBILE)
    message = refusal(client.patch(f"/api/users/{mobile.id}", headers=some, json={"role": "admin"}), 403, "forbidden")
    assert "give the admin role" in message
    message = refusal(client.patch(f"/api/users/{boss.id}", headers=some, json={"role": "mobile"}), 403, "forbidden")
    assert f"change user {boss.username} (commander)" in message  # demoting someone above you
    assert (User.get_by_id(mobile.id).role, User.get_by_id(boss.id).role) == ("mobile", "commander")
    assert not audited("user.role", mobile.username) and not audited("user.role", boss.username)
    full = bearer("admin")
    assert client.patch(f"/api/users/{boss.id}", headers=full, json={"role": "mobile"}).get_json()["role"] == "mobile"


def test_disabling_or_enabling_a_user_needs_all_its_permissions(db, client, bearer):
    boss, idle = user(db, "commander"), user(db, "commander", "idle", disabled=True)
    some = bearer(None, ADMIN_AND_MOBILE)
    refusal(client.patch(f"/api/users/{boss.id}", headers=some, json={"disabled": True}), 403, "forbidden")
    refusal(client.patch(f"/api/users/{idle.id}", headers=some, json={"disabled": False}), 403, "forbidden")
    assert User.get_by_id(boss.id).disabled_at is None and User.get_by_id(idle.id).disabled_at is not None


def test_resetting_a_password_needs_all_the_users_permissions_and_is_audited(db, client, bearer):
    admin, phone = user(db, "admin"), user(db, "mobile")
    before = User.get_by_id(admin.id).password_hash
    Session.create(key_hash="k" * 64, user=admin.id, csrf_token="c", expires_at=2e9)
    message = refusal(client.patch(f"/api/users/{admin.id}", headers=bearer(None, ADMIN_ONLY),
                                   json={"password": "attacker-chosen-password"}), 403, "forbidden")
    assert f"change user {admin.username} (admin)" in message
    assert User.get_by_id(admin.id).password_hash == before and Session.select().count() == 1
    assert not audited("user.password_reset", admin.username)

    reply = client.patch(f"/api/users/{phone.id}", headers=bearer(None, ADMIN_AND_MOBILE),
                         json={"password": "a-new-long-password"})
    assert reply.status_code == 200, reply.get_json()
    assert passwords.verify("a-new-long-password", User.get_by_id(phone.id).password_hash)[0]
    [entry] = audited("user.password_reset", phone.username)
    assert entry.actor == "api token:test" and entry.address == "127.0.0.1"


def test_the_last_enabled_admin_is_neither_disabled_nor_demoted(db, client, bearer):
    admin = user(db, "admin")
    user(db, "admin", "retired-admin", disabled=True)  # a disabled admin does not count
    full = bearer("admin")
    for change in ({"disabled": True}, {"role": "commander"}, {"role": "mobile", "disabled": True}):
        message = refusal(client.patch(f"/api/users/{admin.id}", headers=full, json=change), 409, "last_admin")
        assert message.startswith(f"{admin.username} is the last enabled admin")
    assert (User.get_by_id(admin.id).role, User.get_by_id(admin.id).disabled_at) == ("admin", None)
    assert not audited("user.role", admin.username) and not audited("user.disabled", admin.username)
    # Its password may still change, and with another admin enabled it may go.
    assert client.patch(f"/api/users/{admin.id}", headers=full, json={"password": "another-long-one"}).status_code == 200
    second = user(db, "admin", "second-admin")
    assert client.patch(f"/api/users/{admin.id}", headers=full, json={"role": "commander"}).status_code == 200
    refusal(client.patch(f"/api/users/{second.id}", headers=full, json={"disabled": True}), 409, "last_admin")


def test_a_token_is_revoked_only_by_someone_holding_all_its_permissions(db, client, bearer):
    manager = bearer(None, ["tokens:manage", "tasks:read"])
    strong = client.post("/api/tokens", headers=bearer("admin"), json={"name": "strong", "role": "commander"}).get_json()
    weak = client.post("/api/tokens", headers=manager, json={"name": "weak", "permissions": ["tasks:read"]}).get_json()
    message = refusal(client.delete(f"/api/tokens/{strong['id']}", headers=manager), 403, "forbidden")
    assert f"revoke api token {strong['id']}" in message and "nodes:manage" in message
    assert Token.get_by_id(strong["id"]).revoked_at is None
    assert client.delete(f"/api/tokens/{weak['id']}", headers=manager).get_json()["revoked_at"] is not None


def test_a_token_cannot_mint_more_than_it_holds(db, client, bearer):
    for body in ({"name": "root", "role": "admin"}, {"name": "root", "permissions": list(PERMISSIONS)},
                 {"name": "joiner", "kind": "join"}):
        message = refusal(client.post("/api/tokens", headers=bearer(None, ["tokens:manage"]), json=body),
                          403, "forbidden")
        assert "cannot grant a token these permissions" in message
    assert Token.select().where(Token.name.in_(["root", "joiner"])).count() == 0
