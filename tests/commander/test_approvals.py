"""Approver other than the submitter (audit 2, item 12), in process: the approver_not_submitter
setting, who counts as the same principal, and the approval record a task shows."""

from __future__ import annotations

import functools

import pytest

from commander import passwords, tokens
from commander.models import User
from m3shd.config import ConfigError

PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch):
    monkeypatch.setattr(passwords, "hash_password", functools.partial(passwords.hash_password, iterations=1000))


def submit(client, headers: dict) -> dict:
    reply = client.post("/api/tasks", json={"prompt": "deploy", "approval_required": True}, headers=headers)
    assert reply.status_code == 201, reply.get_json()
    return reply.get_json()


def session(app, role: str, name: str) -> tuple:
    """A logged-in user: its test client (holding the cookie) and its CSRF header."""
    with app.extensions["m3shd"].db.connection_context():
        User.create(username=name, password_hash=passwords.hash_password(PASSWORD), role=role)
    browser = app.test_client()
    reply = browser.post("/api/session", json={"username": name, "password": PASSWORD})
    assert reply.status_code == 200, reply.get_json()
    return browser, {"X-CSRF-Token": reply.get_json()["csrf_token"]}


def test_a_token_cannot_approve_its_own_task_and_another_can(app, client, bearer):
    phone = bearer("mobile")
    task = submit(client, phone)
    assert (task["approver_must_differ"], task["submitter"], task["decided_by"]) == (True, "api token:test", None)
    refused = client.post(f"/api/tasks/{task['id']}/approve", headers=phone)
    assert refused.status_code == 403
    error = refused.get_json()["error"]
    assert error["code"] == "approver_is_submitter"
    assert error["message"] == (f"task {task['id']} was submitted by api token:test, which may not approve it too: "
                                "another token or user must ([commander] approver_not_submitter)")
    assert client.get(f"/api/tasks/{task['id']}", headers=phone).get_json()["state"] == "awaiting_approval"
    # Another token, though of the same name (every bearer here is "test"): another principal.
    approved = client.post(f"/api/tasks/{task['id']}/approve", headers=bearer("mobile"))
    assert approved.status_code == 200, approved.get_json()
    assert (approved.get_json()["state"], approved.get_json()["decided_by"]) == ("queued", "api token:test")


def test_the_submitter_may_still_reject_its_own_task(client, bearer):
    phone = bearer("mobile")
    task = submit(client, phone)
    rejected = client.post(f"/api/tasks/{task['id']}/reject", json={"reason": "typo"}, headers=phone)
    assert rejected.status_code == 200 and rejected.get_json()["state"] == "cancelled"


def test_by_default_a_user_may_approve_a_task_of_their_own_session(app):
    browser, csrf = session(app, "mobile", "alice")
    task = submit(browser, csrf)
    assert (task["approver_must_differ"], task["submitter"]) == (False, "user:alice")
    approved = browser.post(f"/api/tasks/{task['id']}/approve", headers=csrf)
    assert approved.status_code == 200 and approved.get_json()["decided_by"] == "user:alice"


def test_all_makes_users_need_someone_else_too(make_app):
    app = make_app(approver_not_submitter="all")
    alice, alice_csrf = session(app, "mobile", "alice")
    bob, bob_csrf = session(app, "commander", "bob")
    task = submit(alice, alice_csrf)
    assert task["approver_must_differ"] is True
    refused = alice.post(f"/api/tasks/{task['id']}/approve", headers=alice_csrf)
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "approver_is_submitter"
    approved = bob.post(f"/api/tasks/{task['id']}/approve", headers=bob_csrf)
    assert approved.status_code == 200 and approved.get_json()["decided_by"] == "user:bob"


def test_off_lets_a_token_approve_its_own_task_as_before(make_app):
    app = make_app(approver_not_submitter="off")
    cmdr = app.extensions["m3shd"]
    with cmdr.db.connection_context(), cmdr.writing(wake=False):
        _, secret = tokens.create("phone", actor="test", role="mobile")
    client, phone = app.test_client(), {"Authorization": f"Bearer {secret}"}
    task = submit(client, phone)
    assert task["approver_must_differ"] is False
    approved = client.post(f"/api/tasks/{task['id']}/approve", headers=phone)
    assert approved.status_code == 200 and approved.get_json()["decided_by"] == "api token:phone"


def test_the_rule_goes_with_the_task_and_shows_on_its_page(app, client, bearer):
    phone = bearer("mobile")
    task = submit(client, phone)
    plain = client.post("/api/tasks", json={"prompt": "no approval"}, headers=phone).get_json()
    assert plain["approver_must_differ"] is False  # nothing to approve
    browser, csrf = session(app, "admin", "root")
    page = browser.get(f"/tasks/{task['id']}").get_data(as_text=True)
    assert "not decided yet" in page and 'id="approver-rule"' in page and "other than api token:test" in page
    assert "someone else approves" in browser.get("/pending").get_data(as_text=True)
    browser.post(f"/tasks/{task['id']}/approve", data={"csrf_token": csrf["X-CSRF-Token"]})
    assert "decided by user:root" in browser.get(f"/tasks/{task['id']}").get_data(as_text=True)


def test_an_unknown_rule_stops_the_start(make_app):
    with pytest.raises(ConfigError, match="approver_not_submitter: expected one of tokens, all, off, got 'token'"):
        make_app(approver_not_submitter="token")
