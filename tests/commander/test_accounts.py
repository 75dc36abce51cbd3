"""Accounts in process: password hashing (commander/passwords.py) and logging in through the app."""

from __future__ import annotations

import pytest

from commander import passwords
from commander.models import User

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
