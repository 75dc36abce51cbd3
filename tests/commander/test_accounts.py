"""Accounts in process: password hashing (commander/passwords.py), logging in through the app,
and the accounts service (commander/accounts.py): throttling, sessions, CSRF, user changes."""

from __future__ import annotations

import functools

import pytest

from commander import accounts, passwords
from commander.exceptions import CommanderError, Conflict, Invalid, NotFound, TooManyRequests, Unauthenticated
from commander.models import AuditEntry, LoginFailure, Session, User, now
from commander.secrets import token_hash
from mesh import configure

PASSWORD = "correct horse battery"


def test_a_hash_carries_its_algorithm_count_and_salt_and_verifies_only_its_password():
    stored = passwords.hash_password(PASSWORD, iterations=1000)
    algorithm, rounds, salt, digest = stored.split("$")
    assert (algorithm, rounds) == ("pbkdf2_sha256", "1000") and salt and digest and PASSWORD not in stored
    assert passwords.hash_password(PASSWORD, iterations=1000) != stored  # salted
    assert passwords.verify(PASSWORD, stored, iterations=1000) == (True, False)
    assert passwords.verify("wrong horse battery", stored, iterations=1000) == (False, False)
    assert passwords.verify(PASSWORD, stored, iterations=2000) == (True, True)  # weaker than today's: rehash


@pytest.mark.parametrize("stored", ["", "plain", "md5$1000$c2FsdA$ZGlnZXN0", "pbkdf2_sha256$0$c2FsdA$ZGlnZXN0",
                                    "pbkdf2_sha256$x$c2FsdA$ZGlnZXN0", "pbkdf2_sha256$1000$c2FsdA"])
def test_a_hash_in_an_unknown_format_never_matches(stored):
    assert passwords.verify(PASSWORD, stored) == (False, False)


def test_new_passwords_need_a_sensible_length():
    assert passwords.problem("x" * (passwords.MIN_LENGTH - 1)) == f"a password needs at least {passwords.MIN_LENGTH} characters"
    assert passwords.problem("x" * (passwords.MAX_LENGTH + 1)) is not None
    assert passwords.problem(PASSWORD) is None


def test_logging_in_gives_a_session_and_upgrades_a_weaker_hash(app, client, bearer):
    created = client.post("/api/users", json={"username": "alice", "password": PASSWORD, "role": "mobile"},
                          headers=bearer("admin"))
    assert created.status_code == 201, created.get_json()
    with app.extensions["m3shd"].db.connection_context():
        User.update(password_hash=passwords.hash_password(PASSWORD, 1000)).where(User.username == "alice").execute()
    assert client.post("/api/session", json={"username": "alice", "password": "wrong password"}).status_code == 401
    reply = client.post("/api/session", json={"username": "alice", "password": PASSWORD})
    assert reply.status_code == 200 and reply.get_json()["csrf_token"]
    assert "HttpOnly" in reply.headers["Set-Cookie"]
    assert client.get("/api/session").get_json()["username"] == "alice"  # the test client keeps the cookie
    with app.extensions["m3shd"].db.connection_context():
        upgraded = User.get(User.username == "alice").password_hash
    assert upgraded.startswith(f"pbkdf2_sha256${passwords.ITERATIONS}$")


# --- the service: logins, throttling, sessions, users ------------------------------------------

@pytest.fixture
def fast_hashes(monkeypatch):
    """PBKDF2 at 1,000 rounds: the tests above check the real count; here it would only cost
    seconds. The dummy hash (made once per process) is made first, at the real count."""
    passwords.dummy_hash()
    monkeypatch.setattr(passwords, "hash_password", functools.partial(passwords.hash_password, iterations=1000))
    monkeypatch.setattr(passwords, "verify", functools.partial(passwords.verify, iterations=1000))


def make_user(name: str = "alice", role: str = "mobile") -> User:
    return User.create(username=name, password_hash=passwords.hash_password(PASSWORD), role=role)


def refused_login(cmdr, name: str, password: str, address: str | None = "192.0.2.1") -> CommanderError:
    with pytest.raises(CommanderError) as refused:
        accounts.login(cmdr, name, password, address)
    return refused.value


def test_a_login_opens_a_session_for_session_ttl_keeping_only_its_keys_hash(cmdr, fast_hashes):
    configure(cmdr, session_ttl=100.0)
    make_user()
    t = now()
    key, session, user = accounts.login(cmdr, "alice", PASSWORD, "192.0.2.1")
    assert (user.username, session.address, session.key_hash) == ("alice", "192.0.2.1", token_hash(key))
    assert t + 100 <= session.expires_at <= now() + 100 and user.last_login_at >= t
    assert session.csrf_token and session.csrf_token != key
    assert accounts.session_for(key)[1].id == user.id
    assert accounts.session_for("not-a-session-key") is None


def test_an_expired_session_is_refused_and_purged(cmdr, fast_hashes):
    make_user()
    key, session, _ = accounts.login(cmdr, "alice", PASSWORD, None)
    Session.update(expires_at=now() - 1).where(Session.id == session.id).execute()
    assert accounts.session_for(key) is None
    accounts.purge_expired()
    assert Session.select().count() == 0


def test_a_disabled_users_session_is_refused(cmdr, fast_hashes):
    user = make_user()
    key, _, _ = accounts.login(cmdr, "alice", PASSWORD, None)
    User.update(disabled_at=now()).where(User.id == user.id).execute()  # its sessions not yet deleted
    assert accounts.session_for(key) is None


def test_logging_out_ends_that_session_only(cmdr, fast_hashes):
    make_user()
    first, _, _ = accounts.login(cmdr, "alice", PASSWORD, None)
    second, _, _ = accounts.login(cmdr, "alice", PASSWORD, None)
    accounts.logout(cmdr, first)
    assert accounts.session_for(first) is None and accounts.session_for(second) is not None
    assert AuditEntry.select().where(AuditEntry.action == "logout").count() == 1


@pytest.mark.parametrize("expected, presented, ok", [
    ("right", "right", True), ("right", "wrong", False), ("right", "", False), ("right", None, False),
    ("", "", False),  # nothing never matches nothing
])
def test_a_state_changing_request_needs_the_sessions_csrf_token(expected, presented, ok):
    assert accounts.csrf_ok(Session(csrf_token=expected), presented) is ok


def test_a_wrong_password_an_unknown_user_and_a_disabled_one_get_the_same_answer(cmdr, fast_hashes):
    make_user()
    User.update(disabled_at=now()).where(User.username == make_user("bob").username).execute()
    for name, password in (("alice", "wrong password"), ("nobody", PASSWORD), ("bob", PASSWORD)):
        refusal = refused_login(cmdr, name, password)
        assert (type(refusal), refusal.message) == (Unauthenticated, "wrong user name or password")


def test_failed_logins_throttle_the_account_until_they_age_out_of_the_window(cmdr, fast_hashes):
    make_user(), make_user("bob")
    for _ in range(accounts.ACCOUNT_FAILURES - 1):
        refused_login(cmdr, "alice", "wrong password")
    refused_login(cmdr, "ALICE", "wrong password")  # the same account: its name is counted case-insensitively
    throttled = refused_login(cmdr, "alice", PASSWORD)  # even the right password now
    assert isinstance(throttled, TooManyRequests) and throttled.code == "too_many_attempts"
    assert "for this account" in throttled.message and 0 < throttled.retry_after <= accounts.THROTTLE_WINDOW_S + 1
    assert accounts.login(cmdr, "bob", PASSWORD, "192.0.2.1")  # another account from the same address may
    LoginFailure.update(ts=now() - accounts.THROTTLE_WINDOW_S - 1).execute()
    assert accounts.login(cmdr, "alice", PASSWORD, "192.0.2.1")


def test_a_successful_login_forgives_the_accounts_earlier_failures(cmdr, fast_hashes):
    make_user()
    for _ in range(accounts.ACCOUNT_FAILURES - 1):
        refused_login(cmdr, "alice", "wrong password")
    accounts.login(cmdr, "alice", PASSWORD, "192.0.2.1")
    refused_login(cmdr, "alice", "wrong password")
    assert accounts.login(cmdr, "alice", PASSWORD, "192.0.2.1")


def test_failed_logins_from_one_address_throttle_every_account_from_it(cmdr, fast_hashes):
    make_user()
    for _ in range(accounts.ADDRESS_FAILURES - 1):  # as if sprayed over many names
        LoginFailure.create(key="address:192.0.2.66", ts=now())
    refused_login(cmdr, "somebody", "guess", address="192.0.2.66")
    throttled = refused_login(cmdr, "alice", PASSWORD, address="192.0.2.66")
    assert isinstance(throttled, TooManyRequests) and "for this address" in throttled.message
    assert accounts.login(cmdr, "alice", PASSWORD, "192.0.2.67")


def test_changing_a_role_is_audited_and_a_change_to_the_same_is_not(cmdr, fast_hashes):
    user = make_user()
    assert accounts.update_user(cmdr, user.id, "user:root", role="admin").role == "admin"
    accounts.update_user(cmdr, user.id, "user:root", role="admin")
    assert [(e.actor, e.details) for e in AuditEntry.select().where(AuditEntry.action == "user.role")] == [
        ("user:root", dict(previous="mobile", role="admin"))]


def test_disabling_a_user_signs_it_out_everywhere_and_enabling_lets_it_back(cmdr, fast_hashes):
    user = make_user()
    key, _, _ = accounts.login(cmdr, "alice", PASSWORD, None)
    assert accounts.update_user(cmdr, user.id, "user:root", disabled=True).disabled_at is not None
    assert accounts.session_for(key) is None and Session.select().count() == 0
    refused_login(cmdr, "alice", PASSWORD)
    assert accounts.update_user(cmdr, user.id, "user:root", disabled=False).disabled_at is None
    assert accounts.login(cmdr, "alice", PASSWORD, None)
    assert [e.action for e in AuditEntry.select().where(AuditEntry.action.startswith("user."))] == [
        "user.disabled", "user.enabled"]


def test_a_password_reset_signs_the_user_out_and_only_the_new_password_works(cmdr, fast_hashes):
    user = make_user()
    key, _, _ = accounts.login(cmdr, "alice", PASSWORD, None)
    accounts.update_user(cmdr, user.id, "user:root", password="a brand new passphrase")
    assert accounts.session_for(key) is None
    refused_login(cmdr, "alice", PASSWORD)
    assert accounts.login(cmdr, "alice", "a brand new passphrase", None)


@pytest.mark.parametrize("change, error", [
    (dict(role="overlord"), Invalid), (dict(password="short"), Invalid), (dict(user_id=999, role="admin"), NotFound),
])
def test_a_bad_user_change_is_refused_and_changes_nothing(cmdr, fast_hashes, change, error):
    user = make_user()
    audited = AuditEntry.select().count()  # the agents loaded at start are audited
    with pytest.raises(error):
        accounts.update_user(cmdr, change.pop("user_id", user.id), "user:root", **change)
    assert User.get_by_id(user.id).role == "mobile" and AuditEntry.select().count() == audited


def test_a_user_name_is_taken_once_and_must_be_plain(cmdr, fast_hashes):
    make_user()
    with pytest.raises(Conflict):
        accounts.create_user(cmdr, "alice", PASSWORD, "mobile", "user:root")
    with pytest.raises(Invalid):
        accounts.create_user(cmdr, "alice smith", PASSWORD, "mobile", "user:root")
    assert User.select().count() == 1
